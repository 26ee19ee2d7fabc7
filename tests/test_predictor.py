"""The predictor in-process, with a model from a short real training run: any size in, exactly that
size out, for every kind of image a user may send, and one clear error for what is not an image."""

from __future__ import annotations

import time

import numpy as np
import pytest
from harness.serving_helpers import encoded, png_declaring, sample_image, trained_model
from PIL import Image

from semseg import classes
from semseg.errors import PayloadTooLarge, UserError
from semseg.inference.predictor import Predictor
from semseg.inference.settings import ServingSettings
from semseg.sample_data import CLASSES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    root = trained_model(tmp_path_factory.getbasetemp() / "serving-models", "fcn")
    return Predictor.from_model_dir(root / "model", ServingSettings())


def check_prediction(predictor: Predictor, body: bytes, height: int, width: int) -> np.ndarray:
    prediction = predictor.predict(body)
    ids = prediction.class_ids()
    assert ids.shape == (height, width) and ids.dtype == np.uint8
    assert ids.max() < predictor.engine.num_classes
    for _, _, tile in prediction.tiles():
        assert tile.shape[0] == predictor.engine.num_classes
        np.testing.assert_allclose(tile.sum(axis=0), 1.0, atol=1e-5)
    return ids


def test_the_inference_size_is_the_model_base_size(predictor):
    assert predictor.engine.input_size == 48  # base_size of the tiny training run


@pytest.mark.parametrize("width, height", [(1, 1), (31, 17), (17, 31), (240, 240), (641, 480), (3000, 7)])
def test_any_size_gives_a_mask_of_that_size(predictor, width, height):
    check_prediction(predictor, encoded(sample_image(width, height)), height, width)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16", "CMYK"])
def test_every_image_mode_is_accepted(predictor, mode):
    image = sample_image(64, 40)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 200)
    else:
        image = image.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    check_prediction(predictor, encoded(image, fmt), 40, 64)


def test_exif_orientation_is_respected(predictor):
    image = sample_image(60, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60x20, shown rotated: 20 wide, 60 high
    check_prediction(predictor, encoded(image, "JPEG", exif=exif.tobytes()), 60, 20)


def test_large_jpegs_are_decoded_at_reduced_scale_and_answered_at_full_size(predictor):
    body = encoded(sample_image(4000, 3000), "JPEG", quality=70)
    check_prediction(predictor, body, 3000, 4000)


def test_a_decompression_bomb_is_refused_before_decoding(predictor):
    with pytest.raises(PayloadTooLarge, match="50000x50000") as caught:
        predictor.predict(png_declaring(50000, 50000))
    assert caught.value.http_status == 413


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty"),
        (b"this is not an image", "not an image"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 40, "not an image"),
    ],
)
def test_what_is_not_an_image_is_a_400(predictor, body, message):
    with pytest.raises(UserError, match=message) as caught:
        predictor.predict(body)
    assert caught.value.http_status == 400


def test_a_truncated_image_is_a_400(predictor):
    body = encoded(sample_image(200, 100), "PNG")
    with pytest.raises(UserError, match="not an image") as caught:
        predictor.predict(body[: len(body) // 2])
    assert caught.value.http_status == 400


def test_the_pixel_limit_is_a_setting(tmp_path_factory):
    root = trained_model(tmp_path_factory.getbasetemp() / "serving-models", "fcn")
    small = Predictor.from_model_dir(root / "model", ServingSettings(max_image_pixels=1000, inference_size=16))
    assert small.engine.input_size == 16
    with pytest.raises(PayloadTooLarge, match="more than the limit of 1000 pixels"):
        small.predict(encoded(sample_image(40, 30)))
    assert small.predict(encoded(sample_image(40, 20))).class_ids().shape == (20, 40)


def test_a_model_tarball_is_extracted_and_missing_files_are_explained(tmp_path, tmp_path_factory):
    import tarfile

    root = trained_model(tmp_path_factory.getbasetemp() / "serving-models", "fcn")
    packed = tmp_path / "packed"
    packed.mkdir()
    named = classes.save(CLASSES, tmp_path / "names")
    with tarfile.open(packed / "model.tar.gz", "w:gz") as archive:
        for name in ("hyperparams.json", "model_algo-1"):  # no model_best.params: the fallback is used
            archive.add(root / "model" / name, arcname=name)
        archive.add(named, arcname=named.name)
    from_archive = Predictor.from_model_dir(packed, ServingSettings())
    assert from_archive.predict(encoded(sample_image(9, 5))).class_ids().shape == (5, 9)
    assert from_archive.classes == CLASSES  # the names travel inside model.tar.gz
    assert Predictor.from_model_dir(packed / "model.tar.gz", ServingSettings()).classes == CLASSES  # the file itself
    with pytest.raises(UserError, match="has no hyperparams.json"):
        Predictor.from_model_dir(tmp_path, ServingSettings())
    with pytest.raises(UserError, match="does not exist"):
        Predictor.from_model_dir(tmp_path / "nowhere", ServingSettings())


def test_unreadable_or_mismatched_weights_are_explained(tmp_path, tmp_path_factory):
    import json

    root = trained_model(tmp_path_factory.getbasetemp() / "serving-models", "fcn")
    hyperparameters = json.loads((root / "model" / "hyperparams.json").read_text())
    (tmp_path / "hyperparams.json").write_text(json.dumps(hyperparameters))
    (tmp_path / "model_best.params").write_bytes(b"not a parameter file")
    with pytest.raises(UserError, match="do not fit a fcn/resnet-50 network with 4 classes"):
        Predictor.from_model_dir(tmp_path, ServingSettings())
    (tmp_path / "model_best.params").write_bytes((root / "model" / "model_best.params").read_bytes())
    (tmp_path / "hyperparams.json").write_text(json.dumps(dict(hyperparameters, num_classes="7")))
    with pytest.raises(UserError, match="with 7 classes"):
        Predictor.from_model_dir(tmp_path, ServingSettings())


def test_the_pixel_budget_lets_one_large_decode_in_at_a_time():
    import threading

    from semseg.inference.predictor import PixelBudget

    budget, inside, release = PixelBudget(100), [], threading.Event()

    def decode(name: str, pixels: int):
        with budget.hold(pixels):
            inside.append(name)
            release.wait(30)

    def wait_for(count: int):
        deadline = time.monotonic() + 30
        while len(inside) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    first = threading.Thread(target=decode, args=("first", 60))
    first.start()
    wait_for(1)
    second = threading.Thread(target=decode, args=("second", 60))
    second.start()
    small = threading.Thread(target=decode, args=("small", 40))
    small.start()
    wait_for(2)
    assert inside == ["first", "small"]  # 60 + 60 is over the budget, 60 + 40 is not
    release.set()
    for thread in (first, second, small):
        thread.join(30)
    assert sorted(inside) == ["first", "second", "small"]
