"""The predictor: one image in, the class probabilities at the image's exact size out.

decode -> preprocess -> forward -> postprocess, each a plain step:
- decode: any image Pillow reads (sniffed, whatever the Content-Type said), upright per EXIF,
  grayscale, RGBA and palette images made RGB (``semseg.data.images``, shared with training); a
  declared pixel count above the limit is refused before any pixel is decoded;
- preprocess: resize so the longer side is the engine's input size ``S`` (JPEGs are decoded
  straight at a reduced scale when they are much larger), normalise as in training, pad to S x S;
- forward: the engine, one image at a time (engines are not thread-safe, hence the lock);
- postprocess: a ``Prediction`` that keeps only the (C, h, w) probabilities of the valid region and
  resizes them to the input's height and width strip by strip when an encoder asks for them.

The size ``S`` defaults to the model's ``base_size``: training rescales images around that size
(GluonCV's recipe draws the longer side from [0.5, 2] x base_size), so objects appear at the scale
the network learnt.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import ImageTooLarge, open_image, to_rgb_array, upright_size
from ..data.transforms import MEAN, STD, normalize
from ..errors import PayloadTooLarge, UserError
from ..model.artifacts import read_hyperparameters, unpack_model_dir
from ..model.size import inference_size
from .engine import Engine, load_engine
from .geometry import fit_within, upsampled_strips
from .settings import ServingSettings

log = logging.getLogger(__name__)

_PAD_VALUE = (-MEAN / STD).astype(np.float32)  # a black pixel after normalisation, as training pads
_UNDECODABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass
class Prediction:
    """Class probabilities for one image, held at inference resolution until asked for."""

    height: int
    width: int
    probabilities: np.ndarray  # float32 (C, h, w): the valid (unpadded) region of the engine's output

    @property
    def num_classes(self) -> int:
        return self.probabilities.shape[0]

    def strips(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(top_row, float32 (C, rows, width))`` strips of the probabilities at full size."""
        return upsampled_strips(self.probabilities, self.height, self.width)

    def class_ids(self) -> np.ndarray:
        """uint8 (height, width): the most probable class of each pixel."""
        ids = np.empty((self.height, self.width), dtype=np.uint8)
        for top, strip in self.strips():
            ids[top : top + strip.shape[1]] = strip.argmax(axis=0)
        return ids


class Predictor:
    def __init__(self, engine: Engine, max_image_pixels: int):
        self.engine = engine
        self.max_image_pixels = max_image_pixels
        self._forward_lock = threading.Lock()

    @classmethod
    def from_model_dir(cls, model_dir: Path, settings: ServingSettings, worker_index: int = 0) -> Predictor:
        """Load the model in ``model_dir`` (its files, or a model.tar.gz there) and warm it up."""
        started = time.monotonic()
        if not model_dir.is_dir():
            raise UserError(f"The model directory {model_dir} does not exist")
        with tempfile.TemporaryDirectory(prefix="semseg-model-") as scratch:
            files = unpack_model_dir(model_dir, Path(scratch))
            hp = read_hyperparameters(files)
            size = inference_size(hp, settings.inference_size)
            engine = load_engine(files, hp, size, worker_index)
        predictor = cls(engine, settings.max_image_pixels)
        predictor.warm_up()
        log.info(
            "Loaded %s/%s (%d classes) from %s on %s, inference size %d, in %.1f s",
            hp["algorithm"],
            hp["backbone"],
            hp["num_classes"],
            model_dir,
            engine.name,
            size,
            time.monotonic() - started,
        )
        return predictor

    def warm_up(self) -> None:
        """One forward pass, so the first request does not pay for graph building and allocation."""
        size = self.engine.input_size
        self.forward(np.zeros((3, size, size), dtype=np.float32), size, size)

    def predict(self, body: bytes) -> Prediction:
        rgb, height, width = self.decode(body)
        batch, valid_height, valid_width = self.preprocess(rgb)
        return Prediction(height, width, self.forward(batch, valid_height, valid_width))

    def decode(self, body: bytes) -> tuple[Image.Image, int, int]:
        """The image, reduced early where the format allows, and its upright (height, width)."""
        if not body:
            raise UserError("The request body is empty; send one image, such as a JPEG or PNG file")
        try:
            image = open_image(body, self.max_image_pixels)
            width, height = upright_size(image)
            fit_width, fit_height = fit_within(width, height, self.engine.input_size)
            if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that still covers the fit
                swapped = (width, height) != image.size
                image.draft(image.mode, (fit_height, fit_width) if swapped else (fit_width, fit_height))
            rgb = Image.fromarray(to_rgb_array(image))
        except ImageTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except _UNDECODABLE:
            raise UserError("The request body is not an image that could be decoded; send a JPEG or PNG file") from None
        return rgb.resize((fit_width, fit_height), Image.BILINEAR), height, width

    def preprocess(self, image: Image.Image) -> tuple[np.ndarray, int, int]:
        """float32 (3, S, S): the normalised image at top left, padded with black."""
        size = self.engine.input_size
        batch = np.empty((3, size, size), dtype=np.float32)
        batch[:] = _PAD_VALUE[:, None, None]
        width, height = image.size
        batch[:, :height, :width] = normalize(np.asarray(image, dtype=np.uint8))
        return batch, height, width

    def forward(self, image: np.ndarray, valid_height: int, valid_width: int) -> np.ndarray:
        with self._forward_lock:
            probabilities = self.engine.probabilities(image[None])
        return np.ascontiguousarray(probabilities[0, :, :valid_height, :valid_width])
