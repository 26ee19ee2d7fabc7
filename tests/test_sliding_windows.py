"""Sliding windows: every pixel covered, overlaps averaged, the image's exact size at odd sizes, the
window count capped, flip test-time augmentation, and a 24-megapixel photo inside SageMaker's 60 s.

The engine is ONNX Runtime running a per-pixel model (a 1x1 convolution and a softmax, built here):
its answer at a pixel depends on that pixel only, so windows at the image's own size must give
exactly what the model gives on the whole image at once, wherever windows overlap.
"""

from __future__ import annotations

import io
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from semseg.data.transforms import normalize
from semseg.errors import UserError
from semseg.inference import geometry
from semseg.inference.onnx_engine import OnnxEngine
from semseg.inference.predictor import Predictor
from semseg.inference.settings import from_environment

SIDE = 64
CLASSES = 3
WEIGHTS = np.array([[2.0, -1.0, 0.5], [-1.0, 2.0, 0.0], [0.0, -0.5, 2.0]], dtype=np.float32)


def per_pixel_model(path, side: int = SIDE, kernel: int = 1):
    """ONNX: image (N, 3, side, side) -> probabilities (N, 3, side, side), softmax(WEIGHTS @ pixel).

    With ``kernel`` 3 the weights are spread over a 3x3 neighbourhood, zero-padded at the edges.
    """
    weights = np.repeat(np.repeat(WEIGHTS[:, :, None, None], kernel, axis=2), kernel, axis=3) / kernel**2
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "weights"], ["logits"], pads=[kernel // 2] * 4),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "per_pixel",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES, side, side])],
        [numpy_helper.from_array(weights.astype(np.float32), "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def expected_probabilities(rgb: np.ndarray) -> np.ndarray:
    """The model on the whole image at once, in numpy."""
    logits = np.einsum("ck,khw->chw", WEIGHTS, normalize(rgb))
    exp = np.exp(logits - logits.max(axis=0))
    return exp / exp.sum(axis=0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return OnnxEngine(per_pixel_model(tmp_path_factory.mktemp("model") / "model.onnx"), threads=1)


def png(rgb: np.ndarray) -> bytes:
    body = io.BytesIO()
    Image.fromarray(rgb).save(body, format="PNG")
    return body.getvalue()


def noise(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("length", [1, SIDE - 1, SIDE, SIDE + 1, 2 * SIDE + 7, 1001])
def test_windows_cover_an_axis_with_at_least_a_third_of_overlap(length):
    starts = geometry.window_starts(length, SIDE)
    assert starts[0] == 0 and (starts[-1] + SIDE >= length)
    assert all(0 < b - a <= geometry.window_stride(SIDE) for a, b in zip(starts, starts[1:]))
    assert len(starts) == 1 or starts[-1] + SIDE == length  # the last window ends at the edge


@pytest.mark.parametrize("width, height", [(6000, 4000), (4000, 6000), (24000, 1000), (1, 64000), (700, 700)])
def test_the_window_count_and_the_canvas_are_capped(width, height):
    sliding_width, sliding_height = geometry.sliding_size(width, height, 520, 24, 21)
    assert sliding_width <= width and sliding_height <= height
    assert len(geometry.windows(sliding_width, sliding_height, 520)) <= 24
    assert 21 * sliding_width * sliding_height <= geometry.CANVAS_ELEMENTS
    assert abs(sliding_width / width - sliding_height / height) < 0.01 or min(sliding_width, sliding_height) < 100


@pytest.mark.parametrize("width, height", [(97, 65), (201, 333), (1001, 67), (65, 1999), (250, 250)])
def test_sliding_windows_cover_every_pixel_at_the_exact_size(engine, width, height):
    rgb = noise(width, height)
    predictor = Predictor(engine, 10**8, sliding_window_factor=1.0, max_windows=1000)
    assert predictor.working_size(width, height) == (width, height)  # no window cap reached: own size
    prediction = predictor.predict(png(rgb))
    assert prediction.probabilities.shape == (CLASSES, height, width)
    np.testing.assert_allclose(prediction.probabilities, expected_probabilities(rgb), atol=1e-5)
    assert prediction.class_ids().shape == (height, width)


def test_overlapping_windows_are_averaged(tmp_path):
    """A window's edge changes a 3x3 model's answer there, so windows disagree where they overlap:
    the predictor's canvas must be their average, computed here by hand."""
    engine = OnnxEngine(per_pixel_model(tmp_path / "model.onnx", kernel=3), threads=1)
    rgb = noise(150, 100, seed=1)
    predictor = Predictor(engine, 10**8, sliding_window_factor=1.0, max_windows=1000)
    windows = geometry.windows(150, 100, SIDE)
    assert len(windows) == 4 * 2  # columns at 0, 29, 57, 86; rows at 0, 36
    pixels = normalize(rgb)
    total = np.zeros((CLASSES, 100, 150))
    count = np.zeros((100, 150))
    for top, left in windows:
        total[:, top : top + SIDE, left : left + SIDE] += engine.probabilities(
            pixels[None, :, top : top + SIDE, left : left + SIDE]
        )[0]
        count[top : top + SIDE, left : left + SIDE] += 1
    assert count.min() >= 1 and count.max() == 6
    canvas = predictor.slide(Image.fromarray(rgb))
    np.testing.assert_allclose(canvas, total / count, atol=1e-6)
    first = engine.probabilities(pixels[None, :, :SIDE, :SIDE])[0]
    assert np.abs(canvas[:, :SIDE, :SIDE] - first).max() > 1e-3  # the overlap average is not one window


def test_below_the_factor_images_are_resized_and_padded(engine):
    predictor = Predictor(engine, 10**8, sliding_window_factor=1.5)
    assert predictor.working_size(int(1.5 * SIDE), 40) == (SIDE, 27)  # fit within S: resize-and-pad
    assert predictor.working_size(int(1.5 * SIDE) + 1, 40) == (97, 40)  # own size: sliding windows
    off = Predictor(engine, 10**8, sliding_window_factor=0)
    assert off.working_size(5000, 40) == (SIDE, 1)


def test_flip_averages_the_mirrored_window(engine):
    rgb = noise(SIDE, SIDE, seed=2)
    flipped = Predictor(engine, 10**8, flip=True).predict(png(rgb)).probabilities
    # a per-pixel model gives the same answer mirrored: the average equals the plain answer
    np.testing.assert_allclose(flipped, expected_probabilities(rgb), atol=1e-5)
    window = normalize(rgb)
    mirrored = engine.probabilities(np.ascontiguousarray(window[None, :, :, ::-1]))[0][:, :, ::-1]
    np.testing.assert_allclose(flipped, (engine.probabilities(window[None])[0] + mirrored) / 2, atol=1e-6)


def test_the_sliding_window_settings_come_from_the_environment():
    settings = from_environment(
        {"SEMSEG_SLIDING_WINDOW_FACTOR": "2.5", "SEMSEG_MAX_WINDOWS": "8", "SEMSEG_FLIP": "true"}
    )
    assert (settings.sliding_window_factor, settings.max_windows, settings.flip) == (2.5, 8, True)
    defaults = from_environment({})
    assert (defaults.sliding_window_factor, defaults.max_windows, defaults.flip) == (1.75, 24, False)
    with pytest.raises(UserError, match="SEMSEG_FLIP is 'sometimes'; it must be true or false"):
        from_environment({"SEMSEG_FLIP": "sometimes"})
    with pytest.raises(UserError, match="SEMSEG_SLIDING_WINDOW_FACTOR is 'big'; it must be a number"):
        from_environment({"SEMSEG_SLIDING_WINDOW_FACTOR": "big"})


def test_a_24_megapixel_photo_is_answered_at_full_size_inside_60_seconds(tmp_path):
    """The cap at work: 24 forward passes, flipped windows counting twice, so 6000x4000 is scaled to
    the size 12 windows of 520 cover, then the mask is answered at 6000x4000. The per-pixel model is
    cheap, so this bounds everything but the network; bench/serving.py times the whole request
    with an int8 FCN at 520 (29 s on a loaded 2-core machine, flipped too)."""
    engine = OnnxEngine(per_pixel_model(tmp_path / "model.onnx", side=520), threads=1)
    predictor = Predictor(engine, 64_000_000, sliding_window_factor=1.5, max_windows=24, flip=True)
    photo = Image.fromarray(noise(600, 400)).resize((6000, 4000), Image.BILINEAR)
    body = io.BytesIO()
    photo.save(body, format="JPEG", quality=90)
    started = time.monotonic()
    prediction = predictor.predict(body.getvalue())
    ids = prediction.class_ids()
    elapsed = time.monotonic() - started
    assert ids.shape == (4000, 6000)
    canvas_height, canvas_width = prediction.probabilities.shape[1:]
    assert len(geometry.windows(canvas_width, canvas_height, 520)) == 12
    assert elapsed < 60, elapsed
