"""CVAT's automatic annotation: the detector answer, the nuclio function and the server's route.

The request is the one CVAT's lambda manager sends for a frame (``{"image": base64 of the frame's
file, "threshold": t}``), and the answer is read back as CVAT reads it: each mask crop placed into
the frame at its box. The model tests use the session's demo training run (``learnt_model``), given
the demo's class names; the others a stand-in engine whose probabilities are laid out by hand.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from semseg import classes
from semseg.classes import background_id
from semseg.cli import main as semseg
from semseg.cvat_function import write_function
from semseg.errors import UserError
from semseg.inference import codecs
from semseg.inference.cvat_detector import detector_answer
from semseg.inference.predictor import Predictor
from semseg.inference.settings import ServingSettings
from semseg.sample_data import CLASSES, make_pair
from serve.app import create_app

ROUTE = "/cvat/detector"  # the route the server answers CVAT's detector requests on


def request_body(image: bytes, threshold: float | None = None) -> bytes:
    """What CVAT's lambda manager posts for one frame (it leaves a threshold of 0 or none out)."""
    payload = {"image": base64.b64encode(image).decode("utf-8")}
    if threshold:
        payload["threshold"] = threshold
    return json.dumps(payload).encode()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def masks_as_cvat_reads_them(answer: list[dict], height: int, width: int) -> dict[str, np.ndarray]:
    """Each label's union of its shapes' masks, every crop put back into the frame at its box."""
    frames: dict[str, np.ndarray] = {}
    for shape in answer:
        assert shape["type"] == "mask"
        xtl, ytl, xbr, ybr = shape["mask"][-4:]
        assert 0 <= xtl <= xbr < width and 0 <= ytl <= ybr < height
        crop = np.array(shape["mask"][:-4], dtype=np.int64).reshape(ybr - ytl + 1, xbr - xtl + 1)
        assert set(np.unique(crop)) <= {0, 255}
        frame = frames.setdefault(shape["label"], np.zeros((height, width), dtype=bool))
        assert not (frame[ytl : ybr + 1, xtl : xbr + 1] & (crop > 0)).any(), "two shapes of a label overlap"
        frame[ytl : ybr + 1, xtl : xbr + 1] |= crop > 0
    return frames


def one_sentence(error: UserError) -> str:
    text = str(error)
    assert text and "\n" not in text and text[0].isupper() and "Traceback" not in text, text
    return text


# The stand-in engine: input size 32, so a 32 x 32 frame is its own input and each pixel's
# probabilities are the ones laid out here.
class LaidOutEngine:
    """Satisfies ``Engine``: fixed probabilities of three classes over a 32 x 32 frame."""

    name, num_classes, input_size = "laid-out", 3, 32

    def __init__(self):
        p = np.zeros((3, 32, 32), dtype=np.float32)
        p[0] = 0.9  # background
        p[1, 2:12, 2:12], p[0, 2:12, 2:12] = 0.8, 0.1  # a square of class 1 with a hole of background
        p[1, 5:8, 5:8], p[0, 5:8, 5:8] = 0.0, 0.9
        p[1, 20, 25], p[0, 20, 25] = 0.6, 0.3  # one pixel of class 1, less sure
        p[2, 20:30, 2:4], p[0, 20:30, 2:4] = 0.7, 0.2  # a thin bar of class 2
        p[2, 15, 15:17], p[0, 15, 15:17] = 0.95, 0.0  # two pixels of class 2, one row: no polygon of three corners
        self.probabilities_map = p

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return np.repeat(self.probabilities_map[None], batch.shape[0], axis=0)


def laid_out_predictor(table: classes.ClassTable | None = None) -> Predictor:
    return Predictor(LaidOutEngine(), max_image_pixels=10**6, class_table=table)


FRAME = png(np.zeros((32, 32, 3), dtype=np.uint8))


def test_each_region_is_one_shape_in_cvats_layout_with_its_mean_confidence():
    answer = detector_answer(laid_out_predictor(), request_body(FRAME))
    by_box = {tuple(shape["mask"][-4:]): shape for shape in answer}
    assert {(shape["label"], box) for box, shape in by_box.items()} == {
        ("class_1", (2, 2, 11, 11)),
        ("class_1", (25, 20, 25, 20)),
        ("class_2", (2, 20, 3, 29)),
        ("class_2", (15, 15, 16, 15)),
    }
    square = by_box[(2, 2, 11, 11)]
    crop = np.array(square["mask"][:-4]).reshape(10, 10)
    assert (crop[3:6, 3:6] == 0).all() and crop.sum() == 255 * (100 - 9)  # the hole is in the mask
    assert square["confidence"] == pytest.approx(0.8) and by_box[(25, 20, 25, 20)]["confidence"] == pytest.approx(0.6)
    assert len(square["points"]) >= 8 and len(square["points"]) % 2 == 0
    xs, ys = square["points"][0::2], square["points"][1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == (2, 2, 11, 11)  # the outer boundary, in frame pixels
    assert by_box[(15, 15, 16, 15)]["points"] == [15, 15, 17, 15, 17, 16, 15, 16]  # too thin: its box's outline
    json.dumps(answer)  # plain JSON types only


def test_the_background_is_the_class_named_so_wherever_it_is_else_class_0():
    assert background_id(classes.default(3)) == 0
    assert background_id(CLASSES) == 0
    table = classes.ClassTable(("airplane", "car", "Background"), ((1, 1, 1), (2, 2, 2), (0, 0, 0)))
    assert background_id(table) == 2
    answer = detector_answer(laid_out_predictor(table), request_body(FRAME))
    assert {shape["label"] for shape in answer} == {"airplane", "car"}  # CVAT's label map sorts by name
    # class 0 around the square, and in its hole: two regions
    assert [shape["mask"][-4:] for shape in answer if shape["label"] == "airplane"] == [[0, 0, 31, 31], [5, 5, 7, 7]]


def test_a_threshold_leaves_out_the_regions_below_it():
    predictor = laid_out_predictor()
    everything = detector_answer(predictor, request_body(FRAME))
    assert detector_answer(predictor, json.dumps({"image": base64.b64encode(FRAME).decode(), "threshold": 0})) == (
        everything
    )
    assert detector_answer(predictor, {"image": base64.b64encode(FRAME).decode(), "threshold": None}) == everything
    kept = detector_answer(predictor, request_body(FRAME, 0.7))
    assert kept == [shape for shape in everything if shape["confidence"] >= 0.7]
    assert {shape["confidence"] for shape in kept} == {0.8, 0.7, 0.95}
    assert detector_answer(predictor, request_body(FRAME, 1)) == []


IMAGE = base64.b64encode(FRAME).decode()
MALFORMED = {
    "not JSON": (b"image=abc", "not JSON"),
    "not UTF-8": (b"\xff\xfe\xfa", "not JSON"),
    "a list": (b'["image"]', "JSON object"),
    "no image": (b'{"threshold": 0.5}', 'no "image"'),
    "an empty image": (b'{"image": ""}', 'no "image"'),
    "a number for the image": (b'{"image": 12}', 'no "image"'),
    "bad base64": (b'{"image": "abc$"}', "not valid base64"),
    "base64 of nothing": (b'{"image": "===="}', "not valid base64"),
    "not an image": (json.dumps({"image": base64.b64encode(b"GIF but not").decode()}).encode(), "not an image"),
    "a text threshold": (json.dumps({"image": IMAGE, "threshold": "0.5"}).encode(), 'not "0.5"'),
    "a threshold above 1": (json.dumps({"image": IMAGE, "threshold": 1.5}).encode(), "not 1.5"),
    "a negative threshold": (json.dumps({"image": IMAGE, "threshold": -0.1}).encode(), "not -0.1"),
    "a true threshold": (json.dumps({"image": IMAGE, "threshold": True}).encode(), "not true"),
    "a NaN threshold": (json.dumps({"image": IMAGE, "threshold": float("nan")}).encode(), "not NaN"),
    "a list threshold": (json.dumps({"image": IMAGE, "threshold": [0.5]}).encode(), "not [0.5]"),
}


@pytest.mark.parametrize("body, says", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_request_is_one_sentence(body, says):
    with pytest.raises(UserError) as raised:
        detector_answer(laid_out_predictor(), body)
    assert raised.value.http_status == 400
    assert says in one_sentence(raised.value)


def test_an_image_over_the_pixel_limit_is_too_large():
    predictor = Predictor(LaidOutEngine(), max_image_pixels=100)
    with pytest.raises(UserError) as raised:
        detector_answer(predictor, request_body(FRAME))
    assert raised.value.http_status == 413
    one_sentence(raised.value)


def test_the_server_answers_cvat_on_its_route():
    """The route the server adds for CVAT answers with ``detector_answer``, and a bad request with JSON + 400."""
    predictor = laid_out_predictor()
    client = create_app(ServingSettings(), predictor).test_client()
    answered = client.post(ROUTE, data=request_body(FRAME, 0.5), content_type="application/json")
    assert answered.status_code == 200, answered.text
    assert answered.content_type == "application/json"
    assert answered.get_json() == detector_answer(predictor, request_body(FRAME, 0.5))
    refused = client.post(ROUTE, data=b'{"image": "abc$"}', content_type="application/json")
    assert refused.status_code == 400
    assert "not valid base64" in refused.get_json()["error"]


# With the demo's trained model.


@pytest.fixture(scope="module")
def named_model(learnt_model, tmp_path_factory) -> Path:
    """The demo's model with the demo's class names (classes.json), its weights linked, not copied."""
    model = tmp_path_factory.mktemp("cvat") / "model"
    model.mkdir()
    for file in learnt_model.model_dir.iterdir():
        if file.is_file():
            os.link(file, model / file.name)
    classes.save(CLASSES, model)
    return model


@pytest.fixture(scope="module")
def predictor(named_model) -> Predictor:
    return Predictor.from_model_dir(named_model, ServingSettings())


FRAMES = {"a frame": (160, 112, 5), "a wide frame, resized for the network": (420, 150, 6)}


@pytest.mark.slow  # the model comes from a training run
@pytest.mark.parametrize("width, height, seed", FRAMES.values(), ids=FRAMES.keys())
def test_the_shapes_cvat_reads_cover_the_pixels_invocations_gives_each_class(predictor, width, height, seed):
    image, _ = make_pair(np.random.RandomState(seed), width, height)
    frame = jpeg(image)
    answer = detector_answer(predictor, request_body(frame))
    encoded = codecs.invoke(predictor, frame, "image/jpeg", "image/png", "image/png")
    ids = np.array(Image.open(io.BytesIO(b"".join(encoded.chunks))))
    assert ids.shape == (height, width)
    masks = masks_as_cvat_reads_them(answer, height, width)
    assert set(masks) <= {"disc", "rectangle", "triangle"} and masks, "the model found no shapes"
    for class_id, name in enumerate(CLASSES.names[1:], start=1):
        assert np.array_equal(masks.get(name, np.zeros_like(ids, dtype=bool)), ids == class_id), name
    for shape in answer:
        assert 0 <= shape["confidence"] <= 1 and len(shape["points"]) >= 6 and len(shape["points"]) % 2 == 0


def mosaic(seed: int) -> Image.Image:
    """Four sample frames side by side: a frame with several shapes, some the model is less sure of."""
    rng = np.random.RandomState(seed)
    frame = Image.new("RGB", (320, 224))
    for index in range(4):
        frame.paste(make_pair(rng, 160, 112)[0], ((index % 2) * 160, (index // 2) * 112))
    return frame


@pytest.mark.slow  # the model comes from a training run
def test_a_higher_threshold_drops_the_less_confident_regions_only(predictor):
    frame = jpeg(mosaic(1))
    everything = detector_answer(predictor, request_body(frame))
    confidences = sorted(shape["confidence"] for shape in everything)
    assert len(set(confidences)) >= 2, confidences
    threshold = confidences[len(confidences) // 2]
    kept = detector_answer(predictor, request_body(frame, threshold))
    assert kept == [shape for shape in everything if shape["confidence"] >= threshold]
    assert 0 < len(kept) < len(everything)


@pytest.fixture(scope="module")
def function_folder(named_model, tmp_path_factory) -> Path:
    """What ``semseg cvat-function --model MODEL --output FOLDER --name semseg-demo`` writes."""
    return write_function(named_model, tmp_path_factory.mktemp("function") / "semseg-demo", "semseg-demo")


@pytest.fixture
def command_logging():
    """``semseg``'s commands log to the stdout of the test that runs them: the root logger is put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.slow  # the model comes from a training run
def test_cvat_function_writes_a_function_yaml_that_registers_the_models_labels(function_folder, named_model):
    config = yaml.safe_load((function_folder / "function.yaml").read_text())
    metadata, spec = config["metadata"], config["spec"]
    assert metadata["name"] == "semseg-demo" and metadata["namespace"] == "cvat"
    annotations = metadata["annotations"]
    assert annotations["type"] == "detector" and annotations["framework"] and annotations["name"]
    assert json.loads(annotations["spec"]) == [
        {"id": 1, "name": "disc", "type": "mask"},
        {"id": 2, "name": "rectangle", "type": "mask"},
        {"id": 3, "name": "triangle", "type": "mask"},
    ]
    assert spec["handler"] == "main:handler" and spec["runtime"].startswith("python")
    assert spec["build"]["baseImage"] == "semseg:cpu"
    (trigger,) = spec["triggers"].values()
    assert trigger["kind"] == "http" and trigger["attributes"]["maxRequestBodySize"] == 32 * 1024 * 1024
    assert spec["eventTimeout"] and spec["platform"]["attributes"]["restartPolicy"]["name"] == "always"
    copied = {file.name for file in (function_folder / "model").iterdir()}
    assert {"hyperparams.json", "classes.json", "model_best.params"} <= copied and "model_algo-1" not in copied
    assert (function_folder / "model" / "classes.json").read_bytes() == (named_model / "classes.json").read_bytes()


def test_cvat_function_refuses_a_folder_in_use_and_a_name_nuclio_would_not_take(tmp_path, capsys, command_logging):
    model = tmp_path / "model"
    model.mkdir()
    (model / "hyperparams.json").write_text(json.dumps({"num_classes": "3", "num_training_samples": "8"}))
    (model / "model_best.params").write_bytes(b"weights")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert semseg(["cvat-function", "--model", str(model), "--output", str(taken)]) == 1
    assert semseg(["cvat-function", "--model", str(model), "--output", str(tmp_path / "f"), "--name", "A_b"]) == 1
    assert (taken / "notes.txt").read_text() == "mine" and os.listdir(taken) == ["notes.txt"]
    assert not (tmp_path / "f").exists() and sorted(os.listdir(tmp_path)) == ["model", "taken"]
    said = capsys.readouterr().out
    assert "already exists" in said and "'A_b' is not one nuclio takes" in said


class NuclioResponse:
    """nuclio's ``context.Response``, as its Python SDK builds it."""

    def __init__(self, headers=None, body=None, content_type=None, status_code=200):
        self.headers, self.body, self.content_type, self.status_code = headers or {}, body, content_type, status_code


def nuclio_context() -> SimpleNamespace:
    return SimpleNamespace(logger=logging.getLogger("nuclio"), user_data=SimpleNamespace(), Response=NuclioResponse)


@pytest.mark.slow  # the model comes from a training run
def test_the_functions_handler_answers_as_the_detector_does(function_folder, predictor):
    spec = importlib.util.spec_from_file_location("cvat_function_main", function_folder / "main.py")
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    context = nuclio_context()
    handler.init_context(context)
    body = request_body(jpeg(make_pair(np.random.RandomState(5), 160, 112)[0]), 0.3)
    expected = detector_answer(predictor, body)
    # As the body comes: bytes, or for a JSON request (CVAT's), the object nuclio decoded it to.
    for event_body in (body, json.loads(body)):
        response = handler.handler(context, SimpleNamespace(body=event_body, content_type="application/json"))
        assert response.status_code == 200 and response.content_type == "application/json"
        assert json.loads(response.body) == expected
    refused = handler.handler(context, SimpleNamespace(body={**json.loads(body), "threshold": 2}))
    assert refused.status_code == 400 and refused.content_type == "application/json"
    assert 'The "threshold" must be a number from 0 to 1' in one_sentence(UserError(json.loads(refused.body)["error"]))
