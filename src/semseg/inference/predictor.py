"""The predictor: one image in, the class probabilities at the image's exact size out.

decode -> preprocess -> forward -> postprocess, each a plain step:
- decode: any image Pillow reads (sniffed, whatever the Content-Type said), upright per EXIF,
  grayscale, RGBA and palette images made RGB (``semseg.data.images``, shared with training); a
  declared pixel count above the limit is refused before any pixel is decoded, and the pixels
  being decoded at once are bounded (``PixelBudget``);
- preprocess, for most images: resize so the longer side is the engine's input size ``S`` (JPEGs
  are decoded straight at a reduced scale when they are much larger), normalise as in training,
  pad to S x S;
- or, for an image whose longer side exceeds ``sliding_window_factor`` x S: sliding windows of
  S x S over the image at its own size (``geometry.windows``: overlap of a third), the class
  probabilities averaged where windows overlap. Small objects keep the scale the network learnt.
  An image that would need more than ``max_windows`` forward passes (a flipped window counts
  twice), or a probability canvas of more than ``geometry.CANVAS_ELEMENTS`` floats, is first
  scaled down just enough: that bounds both the time (a 24-megapixel photo takes 24 passes) and
  the memory (one canvas is built at a time per worker);
- forward: the engine, one window at a time (engines are not thread-safe, hence the lock); with
  ``flip`` each window also runs mirrored left-right and the two answers are averaged;
- postprocess: a ``Prediction`` that keeps only the (C, h, w) probabilities of the valid region and
  resizes them to the input's height and width tile by tile when an encoder asks for them.

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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import classes
from ..data.images import ImageTooLarge, open_image, to_rgb_array, upright_size
from ..data.transforms import MEAN, STD, normalize
from ..errors import PayloadTooLarge, UserError
from ..model.artifacts import read_class_shares, read_hyperparameters, unpack_model_dir
from ..model.size import inference_size
from .engine import Engine, load_engine
from .geometry import fit_within, sliding_size, upsampled_tiles, windows
from .settings import DEFAULT_MAX_WINDOWS, DEFAULT_SLIDING_WINDOW_FACTOR, ServingSettings

log = logging.getLogger(__name__)

_PAD_VALUE = (-MEAN / STD).astype(np.float32)  # a black pixel after normalisation, as training pads
_UNDECODABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass
class Prediction:
    """Class probabilities for one image, held at inference resolution until asked for."""

    height: int
    width: int
    probabilities: np.ndarray  # float32 (C, h, w): the valid (unpadded) region of the engine's output
    class_table: classes.ClassTable | None = None  # None: the model has no names (class_0 .., VOC colours)

    @property
    def classes(self) -> classes.ClassTable:
        """The names and colours the answer shows: the model's ``classes.json`` or the defaults."""
        return self.class_table or classes.default(self.num_classes)

    @property
    def num_classes(self) -> int:
        return self.probabilities.shape[0]

    def tiles(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(top, left, float32 (C, rows, columns))`` tiles of the probabilities at full size."""
        return upsampled_tiles(self.probabilities, self.height, self.width)

    def class_ids(self) -> np.ndarray:
        """uint8 (height, width): the most probable class of each pixel."""
        return self._most_probable(with_probability=False)[0]

    def top_classes(self) -> tuple[np.ndarray, np.ndarray]:
        """``class_ids()`` and, float32 (height, width), each pixel's probability of that class."""
        return self._most_probable(with_probability=True)

    def _most_probable(self, with_probability: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """One pass over the full-size tiles; the probabilities only when asked for (4 bytes a pixel)."""
        ids = np.empty((self.height, self.width), dtype=np.uint8)
        top = np.empty((self.height, self.width), dtype=np.float32) if with_probability else None
        for row, column, tile in self.tiles():
            place = np.s_[row : row + tile.shape[1], column : column + tile.shape[2]]
            ids[place] = tile.argmax(axis=0)
            if top is not None:
                top[place] = tile.max(axis=0)
        return ids, top


def _shrunk(image: Image.Image, fit: tuple[int, int]) -> Image.Image:
    """``image`` box-averaged, in its own mode, to no less than twice ``fit`` on each axis.

    A bilinear resize straight from a very large image holds weights for every source pixel
    (a gigabyte for a 1 x 64 000 000 row), and the conversion to RGB copies the image several
    times (an RGBA image is composited on black first): both are far cheaper on the reduced image.
    Palette and 1-bit images keep their size, since a box average of palette indices means nothing.
    """
    factors = (max(1, image.width // (2 * fit[0])), max(1, image.height // (2 * fit[1])))
    if factors == (1, 1) or image.mode in ("P", "PA", "1"):
        return image
    try:
        return image.reduce(factors)
    except (ValueError, NotImplementedError):  # a mode Pillow cannot reduce: the caller converts it whole
        return image


class PixelBudget:
    """At most ``pixels`` image pixels being decoded at once in this process; others wait their turn.

    A decoded image takes up to about 16 bytes a pixel on its way to RGB (an RGBA PNG composited on
    black), so four threads each decoding an 8000x8000 image would take 4 GB; with the budget set to
    the pixel limit, one worker holds at most one limit's worth of decoded pixels.
    """

    def __init__(self, pixels: int):
        self.pixels = pixels
        self._in_flight = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = min(pixels, self.pixels)
        with self._changed:
            self._changed.wait_for(lambda: self._in_flight + pixels <= self.pixels)
            self._in_flight += pixels
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= pixels
                self._changed.notify_all()


class Predictor:
    def __init__(
        self,
        engine: Engine,
        max_image_pixels: int,
        class_table: classes.ClassTable | None = None,
        sliding_window_factor: float = DEFAULT_SLIDING_WINDOW_FACTOR,
        max_windows: int = DEFAULT_MAX_WINDOWS,
        flip: bool = False,
        info: dict[str, str] | None = None,
        training_shares: list[float] | None = None,
    ):
        self.engine = engine
        self.info = info or {}  # what the model is: algorithm and backbone, for the server's figures
        self.training_shares = training_shares  # each class's share of the training masks' pixels, if known
        self.classes = class_table or classes.default(engine.num_classes)
        self.max_image_pixels = max_image_pixels
        self.sliding_window_factor = sliding_window_factor  # 0: never slide
        self.max_windows = max_windows
        self.flip = flip
        self._forward_lock = threading.Lock()
        self._canvas_lock = threading.Lock()  # one sliding-window canvas being built at a time
        self.decoding = PixelBudget(max_image_pixels)

    @classmethod
    def from_model_dir(cls, model_dir: Path, settings: ServingSettings) -> Predictor:
        """Load the model in ``model_dir`` (its files, or a model.tar.gz there) and warm it up."""
        started = time.monotonic()
        if not model_dir.exists():
            raise UserError(f"The model directory {model_dir} does not exist")
        with tempfile.TemporaryDirectory(prefix="semseg-model-") as scratch:
            files = unpack_model_dir(model_dir, Path(scratch))
            hp = read_hyperparameters(files)
            size = inference_size(hp, settings.inference_size)
            class_table = classes.load(files, hp["num_classes"])
            training_shares = read_class_shares(files, hp["num_classes"])
            engine = load_engine(files, hp, size, settings)
        predictor = cls(
            engine,
            settings.max_image_pixels,
            class_table,
            settings.sliding_window_factor,
            settings.max_windows,
            settings.flip,
            {"algorithm": hp["algorithm"], "backbone": hp["backbone"]},
            training_shares,
        )
        predictor.warm_up()
        log.info(
            "Loaded %s/%s (%d classes) from %s on %s, inference size %d, %s, in %.1f s",
            hp["algorithm"],
            hp["backbone"],
            hp["num_classes"],
            model_dir,
            engine.name,
            size,
            predictor.describe(),
            time.monotonic() - started,
        )
        return predictor

    def warm_up(self) -> None:
        """One forward pass, so the first request does not pay for graph building and allocation."""
        size = self.engine.input_size
        self.forward(np.zeros((3, size, size), dtype=np.float32), size, size)

    def describe(self) -> str:
        """How images of each size are served, for the log."""
        side = self.engine.input_size
        flip = ", flipped too" if self.flip else ""
        if not self.sliding_window_factor:
            return f"resize-and-pad to {side}{flip}"
        return (
            f"sliding windows of {side} above {self.sliding_window_factor:g}x that side "
            f"(at most {self.window_budget}), resize-and-pad below{flip}"
        )

    @property
    def window_budget(self) -> int:
        """Windows per image: ``max_windows`` forward passes, a flipped window counting twice."""
        return max(1, self.max_windows // (2 if self.flip else 1))

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the image is brought to: fit within S, or the sliding-window size."""
        side = self.engine.input_size
        if self.sliding_window_factor and max(width, height) > self.sliding_window_factor * side:
            return sliding_size(width, height, side, self.window_budget, self.engine.num_classes)
        return fit_within(width, height, side)

    def predict(self, body: bytes, timings: dict[str, float] | None = None) -> Prediction:
        """The prediction for one encoded image; ``timings`` gets the seconds of "decode" and "forward"."""
        started = time.perf_counter()
        rgb, height, width = self.decode(body)
        decoded = time.perf_counter()
        side = self.engine.input_size
        if rgb.width > side or rgb.height > side:
            probabilities = self.slide(rgb)
        else:
            batch, valid_height, valid_width = self.preprocess(rgb)
            probabilities = self.forward(batch, valid_height, valid_width)
        if timings is not None:
            timings["decode"], timings["forward"] = decoded - started, time.perf_counter() - decoded
        return Prediction(height, width, probabilities, self.classes)

    def decode(self, body: bytes) -> tuple[Image.Image, int, int]:
        """The image, reduced early where the format allows, and its upright (height, width)."""
        if not body:
            raise UserError("The request body is empty; send one image, such as a JPEG or PNG file")
        try:
            image = open_image(body, self.max_image_pixels)
            width, height = upright_size(image)
            fit_width, fit_height = self.working_size(width, height)
            stored_fit = (fit_height, fit_width) if (width, height) != image.size else (fit_width, fit_height)
            if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that still covers the fit
                image.draft(image.mode, stored_fit)
            with self.decoding.hold(image.width * image.height):
                image.load()
                rgb = to_rgb_array(_shrunk(image, stored_fit))
                rgb = Image.fromarray(rgb).resize((fit_width, fit_height), Image.BILINEAR)
        except ImageTooLarge as exc:
            raise PayloadTooLarge(str(exc)) from None
        except _UNDECODABLE:
            raise UserError("The request body is not an image that could be decoded; send a JPEG or PNG file") from None
        return rgb, height, width

    def preprocess(self, image: Image.Image) -> tuple[np.ndarray, int, int]:
        """float32 (3, S, S): the normalised image at top left, padded with black."""
        size = self.engine.input_size
        batch = np.empty((3, size, size), dtype=np.float32)
        batch[:] = _PAD_VALUE[:, None, None]
        width, height = image.size
        batch[:, :height, :width] = normalize(np.asarray(image, dtype=np.uint8))
        return batch, height, width

    def forward(self, image: np.ndarray, valid_height: int, valid_width: int) -> np.ndarray:
        return np.ascontiguousarray(self.window_probabilities(image)[:, :valid_height, :valid_width])

    def window_probabilities(self, window: np.ndarray) -> np.ndarray:
        """float32 (3, S, S) -> (C, S, S); with ``flip``, averaged with the mirrored window's, mirrored back."""
        batch = np.stack([window, window[:, :, ::-1]]) if self.flip else window[None]
        with self._forward_lock:
            probabilities = self.engine.probabilities(batch)
        if self.flip:
            return (probabilities[0] + probabilities[1][:, :, ::-1]) * np.float32(0.5)
        return probabilities[0]

    def slide(self, image: Image.Image) -> np.ndarray:
        """float32 (C, h, w) for an h x w image: its windows' probabilities, averaged where they overlap."""
        side = self.engine.input_size
        with self._canvas_lock:
            pixels = normalize(np.asarray(image, dtype=np.uint8))
            height, width = pixels.shape[1:]
            canvas = np.zeros((self.engine.num_classes, height, width), dtype=np.float32)
            covered = np.zeros((height, width), dtype=np.float32)
            window = np.empty((3, side, side), dtype=np.float32)
            for top, left in windows(width, height, side):
                part = pixels[:, top : top + side, left : left + side]
                rows, columns = part.shape[1:]
                window[:] = _PAD_VALUE[:, None, None]  # an axis shorter than S is padded, as in resize-and-pad
                window[:, :rows, :columns] = part
                canvas[:, top : top + rows, left : left + columns] += self.window_probabilities(window)[
                    :, :rows, :columns
                ]
                covered[top : top + rows, left : left + columns] += 1
            canvas /= covered
        return canvas
