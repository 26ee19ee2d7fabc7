"""The real ``serve`` command (gunicorn + Flask) on 127.0.0.1, with models from short real
training runs of all three algorithms: every content type, every Accept type, every size, every
error, each error followed by a request that still succeeds, and a graceful SIGTERM."""

from __future__ import annotations

import json
import tarfile
import threading
import time

import numpy as np
import pytest
import requests
from harness.serving_helpers import (
    Server,
    decode_probabilities,
    encoded,
    mask_of,
    png_declaring,
    record_pb2,
    sample_image,
    trained_model,
)
from PIL import Image

pytestmark = pytest.mark.slow

SIZES = [(1, 1), (31, 17), (240, 240), (500, 375), (641, 480)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "serving-models"
    return {algorithm: trained_model(cache, algorithm) for algorithm in ("fcn", "psp", "deeplab")}


@pytest.fixture(scope="module")
def record_module(tmp_path_factory):
    return record_pb2(tmp_path_factory.mktemp("proto"))


def started(server: Server) -> Server:
    answer = server.wait_until_up()
    assert answer.status_code == 200, server.log()
    return server


@pytest.fixture(scope="module")
def servers(models, tmp_path_factory):
    """fcn served from its model directory, psp from a model.tar.gz, deeplab as trained."""
    logs = tmp_path_factory.mktemp("serve-logs")
    packed = tmp_path_factory.mktemp("packed-psp")
    (packed / "model").mkdir()
    with tarfile.open(packed / "model" / "model.tar.gz", "w:gz") as archive:
        for path in (models["psp"] / "model").iterdir():
            archive.add(path, arcname=path.name)
    running = {
        "fcn": Server(models["fcn"], logs / "fcn.log"),
        "psp": Server(packed, logs / "psp.log"),
        "deeplab": Server(models["deeplab"], logs / "deeplab.log"),
    }
    try:
        yield {name: started(server) for name, server in running.items()}
    finally:
        for server in running.values():
            server.stop()


@pytest.fixture(scope="module")
def fcn(servers) -> Server:
    return servers["fcn"]


def assert_good_answer(server: Server, width: int = 33, height: int = 21) -> np.ndarray:
    answer = server.invoke(encoded(sample_image(width, height)))
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    assert float(answer.headers["Server-Timing"].split("invoke;dur=")[1]) > 0
    mask = mask_of(answer.content)
    assert mask.shape == (height, width) and mask.dtype == np.uint8
    return mask


def test_ping_and_execution_parameters(fcn):
    ping = requests.get(fcn.url + "/ping", timeout=2)
    assert ping.status_code == 200
    parameters = requests.get(fcn.url + "/execution-parameters", timeout=2).json()
    assert parameters == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 10}
    assert f"Listening at: http://0.0.0.0:{fcn.port}" in fcn.log()


@pytest.mark.parametrize("algorithm", ["fcn", "psp", "deeplab"])
@pytest.mark.parametrize("width, height", SIZES)
def test_every_algorithm_answers_at_the_exact_input_size(servers, record_module, algorithm, width, height):
    server = servers[algorithm]
    body = encoded(sample_image(width, height, seed=width))
    png = server.invoke(body, accept="image/png")
    assert png.status_code == 200, png.text
    mask = mask_of(png.content)
    assert mask.shape == (height, width) and mask.dtype == np.uint8 and mask.max() < 4
    record = server.invoke(body, accept="application/x-recordio-protobuf")
    assert record.status_code == 200, record.text
    probabilities = decode_probabilities(record.content, record_module)
    assert probabilities.shape == (4, height, width)
    assert probabilities.min() >= 0 and probabilities.max() <= 1
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=0), mask)


def exif_rotated() -> tuple[bytes, tuple[int, int]]:
    exif = Image.Exif()
    exif[0x0112] = 8
    return encoded(sample_image(50, 30), "JPEG", exif=exif.tobytes()), (50, 30)  # shown 30 wide, 50 high


REQUESTS = {
    "jpeg": ("image/jpeg", lambda: (encoded(sample_image(45, 27)), (27, 45))),
    "png": ("image/png", lambda: (encoded(sample_image(45, 27), "PNG"), (27, 45))),
    "x-image": ("application/x-image", lambda: (encoded(sample_image(45, 27)), (27, 45))),
    "octet-stream png": ("application/octet-stream", lambda: (encoded(sample_image(45, 27), "PNG"), (27, 45))),
    "no content type": (None, lambda: (encoded(sample_image(45, 27)), (27, 45))),
    "png sent as jpeg": ("image/jpeg", lambda: (encoded(sample_image(45, 27), "PNG"), (27, 45))),
    "grayscale": ("image/png", lambda: (encoded(sample_image(45, 27).convert("L"), "PNG"), (27, 45))),
    "rgba": ("image/png", lambda: (encoded(sample_image(45, 27).convert("RGBA"), "PNG"), (27, 45))),
    "palette": ("image/png", lambda: (encoded(sample_image(45, 27).convert("P"), "PNG"), (27, 45))),
    "exif rotated": ("image/jpeg", exif_rotated),
}


@pytest.mark.parametrize("name", list(REQUESTS))
def test_every_request_content_type(fcn, name):
    content_type, make = REQUESTS[name]
    body, shape = make()
    answer = fcn.invoke(body, content_type=content_type)
    assert answer.status_code == 200, answer.text
    assert mask_of(answer.content).shape == shape


def test_every_accept_type_tells_the_same_story(fcn, record_module):
    body = encoded(sample_image(70, 52, seed=3))
    answers = {
        accept: fcn.invoke(body, accept=accept)
        for accept in (
            "image/png",
            "*/*",
            None,
            "application/x-protobuf",
            "application/x-recordio-protobuf",
            "application/json",
        )
    }
    assert all(answer.status_code == 200 for answer in answers.values())
    mask = mask_of(answers["image/png"].content)
    for accept in ("*/*", None):
        assert answers[accept].headers["Content-Type"] == "image/png"
        np.testing.assert_array_equal(mask_of(answers[accept].content), mask)
    assert answers["application/x-protobuf"].content == answers["application/x-recordio-protobuf"].content
    assert answers["application/x-protobuf"].headers["Content-Type"] == "application/x-protobuf"
    probabilities = decode_probabilities(answers["application/x-protobuf"].content, record_module)
    np.testing.assert_array_equal(probabilities.argmax(axis=0), mask)
    as_json = answers["application/json"].json()
    assert as_json["shape"] == [52, 70]
    np.testing.assert_array_equal(np.array(as_json["mask"]), mask)


def truncated_jpeg() -> bytes:
    body = encoded(sample_image(300, 200))
    return body[: len(body) // 3]


ERRORS = {
    "empty body": (lambda: b"", "image/jpeg", "image/png", 400, "empty"),
    "not an image": (lambda: b"GIF89a? no, just text", "image/jpeg", "image/png", 400, "not an image"),
    "truncated jpeg": (truncated_jpeg, "image/jpeg", "image/png", 400, "not an image"),
    "unsupported content type": (lambda: b"a,b\n1,2\n", "text/csv", "image/png", 415, "Content-Type"),
    "unsupported accept": (lambda: encoded(sample_image(8, 8)), "image/jpeg", "text/csv", 406, "Accept"),
    "body over the limit": (
        lambda: np.random.RandomState(0).bytes(11 * 2**20),
        "image/jpeg",
        "image/png",
        413,
        "10 MB",
    ),
    "decompression bomb": (lambda: png_declaring(50000, 50000), "image/png", "image/png", 413, "50000x50000"),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_are_one_sentence_and_the_server_keeps_serving(fcn, name):
    make, content_type, accept, status, words = ERRORS[name]
    workers = fcn.worker_pids()
    answer = fcn.invoke(make(), content_type=content_type, accept=accept)
    assert answer.status_code == status
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()
    assert list(error) == ["error"] and words in error["error"]
    assert "Traceback" not in answer.text and 'File "' not in answer.text
    assert_good_answer(fcn)
    assert fcn.worker_pids() == workers


@pytest.mark.parametrize(
    "method, path, status", [("GET", "/invocations", 405), ("GET", "/nothing", 404), ("POST", "/ping", 405)]
)
def test_wrong_routes_are_json_errors(fcn, method, path, status):
    answer = requests.request(method, fcn.url + path, timeout=5)
    assert answer.status_code == status and set(answer.json()) == {"error"}
    assert_good_answer(fcn)


def twenty_four_megapixel_jpeg() -> bytes:
    rows, cols = np.ogrid[0:4000, 0:6000]
    noise = np.random.RandomState(0).randint(0, 12, size=(4000, 6000, 3), dtype=np.uint8)
    image = np.stack([(cols // 7 + 0 * rows) % 256, (rows // 5 + 0 * cols) % 256, (rows + cols) // 11 % 256], -1)
    return encoded(Image.fromarray(image.astype(np.uint8) + noise), "JPEG", quality=93)


def test_a_six_megabyte_24_megapixel_jpeg_is_answered_inside_60_seconds_while_ping_stays_fast(fcn):
    body, results = twenty_four_megapixel_jpeg(), {}
    assert 5 * 2**20 < len(body) < 10 * 2**20

    def big_request():
        started_at = time.monotonic()
        results["answer"] = fcn.invoke(body, timeout=60)
        results["seconds"] = time.monotonic() - started_at

    request = threading.Thread(target=big_request)
    request.start()
    pings = []
    while request.is_alive():
        ping = requests.get(fcn.url + "/ping", timeout=2)  # SageMaker's health check gives up after 2 s
        pings.append(ping.status_code)
        time.sleep(0.2)
    request.join()
    assert results["answer"].status_code == 200, results["answer"].text
    assert mask_of(results["answer"].content).shape == (4000, 6000)
    assert results["seconds"] < 60
    assert pings and set(pings) == {200}
    assert_good_answer(fcn)


def test_a_missing_model_fails_ping_and_the_log_says_why(tmp_path):
    (tmp_path / "model").mkdir()
    server = Server(tmp_path, tmp_path / "serve.log")
    try:
        ping = server.wait_until_up()
        assert ping.status_code == 503
        assert "has no hyperparams.json" in ping.json()["error"]
        invoke = server.invoke(encoded(sample_image(8, 8)))
        assert invoke.status_code == 503 and "could not be loaded" in invoke.json()["error"]
        assert "The model could not be loaded" in server.log() and "hyperparams.json" in server.log()
    finally:
        server.stop()


def test_sigterm_finishes_the_request_in_flight_and_exits_inside_30_seconds(models, tmp_path):
    server = started(Server(models["fcn"], tmp_path / "serve.log"))
    body, results = encoded(sample_image(3000, 2000)), {}

    def slow_request():  # about two seconds: most of it writing six million class ids as JSON
        results["answer"] = server.invoke(body, accept="application/json", timeout=60)

    worker = threading.Thread(target=slow_request)
    worker.start()
    time.sleep(1.0)  # the request is in the worker by now
    code, seconds = server.stop(timeout=40)
    worker.join(60)
    assert code == 0 and seconds < 30, server.log()
    assert results["answer"].status_code == 200
    assert json.loads(results["answer"].content)["shape"] == [2000, 3000]
