"""A model scored as its endpoint serves it: each image through the serving ``Predictor`` at its own
size (resize-and-pad or sliding windows, the settings of ``$SEMSEG_*`` as the server reads them),
the class ids it returns (exactly the pixels of the ``/invocations`` PNG) against the image's mask.

Training's validation figure is made on centre crops resized to ``crop_size``; this one is what a
user of the endpoint gets, which can differ by several points of mIoU (``bench/onnx_size_mapping.py``).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.file_mode import Sample
from ..data.images import read_mask
from ..errors import UserError
from ..inference.predictor import Predictor
from ..inference.settings import ServingSettings
from ..model.quantize import INT8_FILE
from ..names import shown
from .scores import ConfusionMatrix, summed

log = logging.getLogger("semseg")

ENGINES = ("float32", "int8")  # what --engine picks; None: the engine the server would pick
GALLERY_IMAGES = 8  # the worst images whose masks are kept for the report


@dataclass
class ImageScore:
    name: str  # the image's base name, as the data names it
    matrix: np.ndarray  # int64 (C, C): this image's confusion matrix

    def figures(self) -> dict:
        counts = ConfusionMatrix(len(self.matrix), self.matrix)
        return {
            "image": self.name,
            "mIoU": counts.image_mean(counts.iou()),
            "mean_dice": counts.image_mean(counts.dice()),
            "pixel_accuracy": counts.pixel_accuracy(),
            "labelled_pixels": int(self.matrix.sum()),
        }


@dataclass
class Kept:
    """One of the worst images: what the report's gallery shows."""

    name: str
    image: Path
    truth: np.ndarray  # int (H, W) class ids, -1 ignored
    prediction: np.ndarray  # uint8 (H, W) class ids


@dataclass
class Evaluation:
    num_classes: int
    images: list[ImageScore]
    engine: str  # the engine's name, as the server logs it
    seconds: float
    worst: list[Kept] = field(default_factory=list)  # worst first

    @property
    def matrices(self) -> np.ndarray:
        return np.stack([score.matrix for score in self.images])

    @property
    def split(self) -> ConfusionMatrix:
        return summed(self.matrices, self.num_classes)


def settings_for(engine: str | None, model_dir: Path, environ: dict | None = None) -> ServingSettings:
    """The serving settings of this environment, with ``engine`` (float32 or int8) forced when given."""
    from dataclasses import replace

    from ..inference.settings import from_environment

    settings = from_environment(environ)
    if engine is None:
        return settings
    if engine not in ENGINES:
        raise UserError(f"The engine '{shown(engine)}' is not one of {', '.join(ENGINES)}")
    if engine == "int8" and not (model_dir / INT8_FILE).is_file():
        raise UserError(
            f"The model {model_dir} has no {INT8_FILE} (its accuracy gate failed or _int8 was False); "
            "evaluate it with --engine float32, or write one with 'semseg quantize'"
        )
    return replace(settings, force_fp32=engine == "float32")


def evaluate(
    predictor: Predictor, samples: Sequence[Sample], table: np.ndarray, keep_worst: int = GALLERY_IMAGES
) -> Evaluation:
    """Every sample through ``predictor``; ``table`` maps mask values to class ids (``data.label_map``).

    The ``keep_worst`` images of lowest mIoU keep their masks, for the report's gallery; the rest
    keep only their confusion matrices, so memory does not grow with the images' sizes.
    """
    num_classes = predictor.engine.num_classes
    scores: list[ImageScore] = []
    worst: list[tuple[float, int, Kept]] = []  # a heap of the worst kept: (-mIoU, -position, Kept)
    started = time.monotonic()
    for position, sample in enumerate(samples):
        name = sample.image.stem
        truth = table[read_mask(sample.mask)]
        try:
            prediction = predictor.predict(sample.image.read_bytes()).class_ids()
        except UserError as exc:
            raise UserError(f"The image {shown(str(sample.image))} could not be segmented: {exc}") from None
        if prediction.shape != truth.shape:
            raise UserError(
                f"The mask {shown(str(sample.mask))} is {truth.shape[1]}x{truth.shape[0]} but its image is "
                f"{prediction.shape[1]}x{prediction.shape[0]}; a mask has its image's size"
            )
        score = ImageScore(name, ConfusionMatrix.of(truth, prediction, num_classes).matrix)
        scores.append(score)
        if keep_worst:
            miou = score.figures()["mIoU"]
            entry = (-(miou if miou == miou else 1.0), -position, Kept(name, sample.image, truth, prediction))
            (heapq.heappush if len(worst) < keep_worst else heapq.heappushpop)(worst, entry)
    if not scores:
        raise UserError("There are no image/mask pairs to evaluate")
    kept = [entry[2] for entry in sorted(worst, key=lambda entry: (entry[0], entry[1]), reverse=True)]
    return Evaluation(num_classes, scores, predictor.engine.name, time.monotonic() - started, kept)
