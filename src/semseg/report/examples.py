"""A few validation samples (image, truth, prediction) kept while validating, for the report's grid.

Only the first ``limit`` samples of an epoch are kept, as uint8 pictures at the validation crop
size, so the memory they take does not grow with the dataset: 8 samples at crop 480 are 7 MB.
"""

from __future__ import annotations

import numpy as np

from ..data.transforms import MEAN, STD

DEFAULT_LIMIT = 8


class ValidationExamples:
    def __init__(self, limit: int = DEFAULT_LIMIT):
        self.limit = limit
        self.images: list[np.ndarray] = []  # uint8 (H, W, 3)
        self.truths: list[np.ndarray] = []  # int (H, W) class ids, -1 where ignored
        self.predictions: list[np.ndarray] = []  # int (H, W) class ids

    @property
    def room(self) -> int:
        """How many more samples are wanted (0 once full, so callers can skip copying them)."""
        return self.limit - len(self.images)

    def keep(self, images: np.ndarray, truths: np.ndarray, predictions: np.ndarray) -> None:
        """Keep the first samples of a batch: normalised float (N, 3, H, W) images, (N, H, W) ids."""
        for image, truth, prediction in zip(images[: self.room], truths, predictions):
            rgb = (image.transpose(1, 2, 0) * STD + MEAN) * 255.0
            self.images.append(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
            self.truths.append(truth.astype(np.int16))
            self.predictions.append(prediction.astype(np.int16))

    def __len__(self) -> int:
        return len(self.images)
