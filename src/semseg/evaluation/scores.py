"""Segmentation metrics from confusion matrices: per class IoU, Dice, precision and recall; mIoU,
mean Dice, pixel accuracy and frequency-weighted IoU; per-image scores; the bootstrap interval of a
difference in mIoU between two models scored on the same images.

Over a whole split the definitions are GluonCV's (and so the built-in's), so that every split-level
figure is comparable with training's validation mIoU: counts are summed over the split first, then
per class IoU = TP / (TP + FP + FN), Dice = 2 TP / (2 TP + FP + FN), precision = TP / (TP + FP),
recall = TP / (TP + FN), each 0 where its denominator is 0, and the means run over all
``num_classes`` classes (a class absent from both labels and predictions counts as 0, as in
GluonCV). Frequency-weighted IoU weighs each class's IoU by its share of labelled pixels, so an
absent class weighs nothing there. Ignored pixels (label < 0) count nowhere.

Per image, a class absent from both that image's labels and its prediction is no error and no
success: an image's mIoU and mean Dice are means over the classes present in either (NaN for an
image with no labelled pixel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_FIGURES = ("mIoU", "mean_dice", "pixel_accuracy", "frequency_weighted_iou")  # what a gate may name


class ConfusionMatrix:
    def __init__(self, num_classes: int, matrix: np.ndarray | None = None):
        self.num_classes = num_classes
        # rows: truth, columns: predicted
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64) if matrix is None else matrix

    @classmethod
    def of(cls, labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> ConfusionMatrix:
        matrix = cls(num_classes)
        matrix.update(labels, predictions)
        return matrix

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

    @property
    def true_positives(self) -> np.ndarray:
        return np.diag(self.matrix).astype(np.float64)

    @property
    def labelled(self) -> np.ndarray:
        """Per class: its labelled pixels (TP + FN)."""
        return self.matrix.sum(1).astype(np.float64)

    @property
    def predicted(self) -> np.ndarray:
        """Per class: the labelled pixels predicted as it (TP + FP)."""
        return self.matrix.sum(0).astype(np.float64)

    def pixel_accuracy(self) -> float:
        return float(np.trace(self.matrix) / max(1, self.matrix.sum()))

    def iou(self) -> np.ndarray:
        union = self.predicted + self.labelled - self.true_positives
        return _ratio(self.true_positives, union)

    def mean_iou(self) -> float:
        return float(self.iou().mean())

    def dice(self) -> np.ndarray:
        return _ratio(2 * self.true_positives, self.predicted + self.labelled)

    def mean_dice(self) -> float:
        return float(self.dice().mean())

    def precision(self) -> np.ndarray:
        return _ratio(self.true_positives, self.predicted)

    def recall(self) -> np.ndarray:
        return _ratio(self.true_positives, self.labelled)

    def class_accuracy(self) -> np.ndarray:
        """Per class: the share of its labelled pixels predicted as it (its recall; 0 for a class with none)."""
        return self.recall()

    def frequency_weighted_iou(self) -> float:
        return float((self.labelled * self.iou()).sum() / max(1.0, self.labelled.sum()))

    def present(self) -> np.ndarray:
        """Per class: whether it is labelled or predicted anywhere in these counts."""
        return (self.labelled + self.predicted) > 0

    def image_mean(self, per_class: np.ndarray) -> float:
        """The mean of ``per_class`` over the classes present here (the per-image convention)."""
        present = self.present()
        return float(per_class[present].mean()) if present.any() else float("nan")

    def summary(self) -> dict:
        """Every figure of these counts, as JSON-friendly values."""
        return {
            "mIoU": self.mean_iou(),
            "mean_dice": self.mean_dice(),
            "pixel_accuracy": self.pixel_accuracy(),
            "frequency_weighted_iou": self.frequency_weighted_iou(),
            "per_class_iou": self.iou().tolist(),
            "per_class_dice": self.dice().tolist(),
            "per_class_precision": self.precision().tolist(),
            "per_class_recall": self.recall().tolist(),
            "labelled_pixels": self.labelled.astype(np.int64).tolist(),
            "confusion_matrix": self.matrix.tolist(),
        }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator > 0)


def summed(matrices: np.ndarray, num_classes: int) -> ConfusionMatrix:
    """One confusion matrix from per-image ones, int64 (N, C, C)."""
    return ConfusionMatrix(num_classes, matrices.sum(axis=0, dtype=np.int64).reshape(num_classes, num_classes))


@dataclass(frozen=True)
class Difference:
    """Split-level mIoU of model A minus model B on the same images, with its bootstrap interval."""

    difference: float
    low: float  # the interval's bounds, percentiles of the resampled differences
    high: float
    mean_image_difference: float  # the mean over images of (image mIoU of A - image mIoU of B)
    resamples: int
    confidence: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def miou_of_stack(matrices: np.ndarray) -> np.ndarray:
    """Split-level mIoU of each of R confusion matrices, int (R, C, C) -> float (R,)."""
    matrices = matrices.astype(np.float64)
    true_positives = np.diagonal(matrices, axis1=1, axis2=2)
    union = matrices.sum(1) + matrices.sum(2) - true_positives
    iou = np.divide(true_positives, union, out=np.zeros_like(union), where=union > 0)
    return iou.mean(axis=1)


def bootstrap_difference(
    first: np.ndarray, second: np.ndarray, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Difference:
    """The paired bootstrap of the mIoU difference ``first - second`` over images.

    ``first`` and ``second``: int (N, C, C) per-image confusion matrices of two models on the same N
    images, in the same order. Each resample draws N images with replacement (the same draw for both
    models, hence paired), sums each model's matrices over the draw and takes the difference of the
    split-level mIoUs; the interval is the central ``confidence`` share of those differences.
    """
    if first.shape != second.shape or first.ndim != 3 or not len(first):
        raise ValueError(f"two stacks of per-image matrices of one shape are needed, not {first.shape}, {second.shape}")
    images, classes = first.shape[0], first.shape[1]
    rng = np.random.default_rng(seed)
    draws = [np.bincount(rng.integers(0, images, images), minlength=images) for _ in range(resamples)]
    counts = np.stack(draws).astype(np.float64)
    flat = [stack.reshape(images, -1).astype(np.float64) for stack in (first, second)]  # float: a BLAS product
    resampled = [(counts @ matrix).reshape(resamples, classes, classes) for matrix in flat]
    differences = miou_of_stack(resampled[0]) - miou_of_stack(resampled[1])
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(differences, [tail, 100 - tail])
    whole = miou_of_stack(np.stack([first.sum(0), second.sum(0)]))
    per_image = [
        ConfusionMatrix(classes, a).image_mean(ConfusionMatrix(classes, a).iou())
        - ConfusionMatrix(classes, b).image_mean(ConfusionMatrix(classes, b).iou())
        for a, b in zip(first, second, strict=True)
    ]
    return Difference(
        float(whole[0] - whole[1]), float(low), float(high), float(np.nanmean(per_image)), resamples, confidence
    )
