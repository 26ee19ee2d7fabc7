"""Pixel accuracy, mIoU, per-class IoU and the confusion matrix, accumulated over a whole split.

The definitions are GluonCV's (and so the built-in's): pixel accuracy = correct / labelled pixels;
IoU per class = intersection / union over the whole split; mIoU = the plain mean over all
``num_classes`` classes (a class absent from both labels and predictions counts as 0, as in
GluonCV). Ignored pixels (label < 0) count nowhere.
"""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: truth, cols: predicted

    def update(self, labels: np.ndarray, predictions: np.ndarray) -> None:
        labels = labels.astype(np.int64).ravel()
        predictions = predictions.astype(np.int64).ravel()
        keep = labels >= 0
        index = labels[keep] * self.num_classes + predictions[keep]
        self.matrix += np.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, -1)

    @staticmethod
    def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
        """Labelled pixels per class (ignored and out-of-range labels count nowhere)."""
        labels = labels.astype(np.int64).ravel()
        return np.bincount(labels[(labels >= 0) & (labels < num_classes)], minlength=num_classes)

    def pixel_accuracy(self) -> float:
        return float(np.trace(self.matrix) / max(1, self.matrix.sum()))

    def iou(self) -> np.ndarray:
        intersection = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - intersection
        return intersection / (np.spacing(1) + union)

    def mean_iou(self) -> float:
        return float(self.iou().mean())

    def class_accuracy(self) -> np.ndarray:
        """Per class: the share of its labelled pixels predicted as it (0 for a class with none)."""
        return np.diag(self.matrix) / np.maximum(1, self.matrix.sum(1))
