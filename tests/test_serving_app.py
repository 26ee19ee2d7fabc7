"""The Flask app alone, through Flask's test client: a real ``Predictor`` over a small stand-in
engine (no model files, no gunicorn), for what does not need a network: the 500 path, the body
reader, and the gunicorn configuration's worker slots."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from semseg.inference.predictor import Predictor
from semseg.inference.settings import ServingSettings
from serve.app import create_app
from serve.gunicorn_conf import free_slot, post_fork, pre_fork


class UniformEngine:
    """Satisfies ``Engine``: equal probabilities for every class; ``failures`` calls raise first."""

    name, num_classes, input_size = "uniform", 3, 16

    def __init__(self, failures: int = 0):
        self.failures = failures

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a bug inside the engine, with a secret path /srv/internal/state")
        return np.full((batch.shape[0], self.num_classes, self.input_size, self.input_size), 1 / 3, np.float32)


def png(width: int = 20, height: int = 10) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def client_for(engine, **settings):
    predictor = Predictor(engine, max_image_pixels=10**6)
    return create_app(ServingSettings(**settings), predictor).test_client()


def test_an_internal_error_is_a_json_500_without_a_traceback_and_the_next_request_succeeds():
    engine = UniformEngine()
    client = client_for(engine)
    engine.failures = 1  # after the warm-up-free construction: the first prediction fails
    failed = client.post("/invocations", data=png(), content_type="image/png")
    assert failed.status_code == 500
    assert failed.get_json() == {"error": "The server failed to answer this request; its log has the details"}
    assert "Traceback" not in failed.text and "/srv/internal" not in failed.text and "RuntimeError" not in failed.text
    answer = client.post("/invocations", data=png(), content_type="image/png")
    assert answer.status_code == 200
    assert np.array(Image.open(io.BytesIO(answer.data))).shape == (10, 20)
    assert client.get("/ping").status_code == 200


def test_a_body_over_the_limit_is_413_however_it_is_framed():
    client = client_for(UniformEngine(), max_payload_mb=1)
    body = png() + b"\0" * (1 << 20)
    declared = client.post("/invocations", data=body, content_type="image/png")
    assert declared.status_code == 413 and "limit of 1 MB" in declared.get_json()["error"]
    # No Content-Length, the stream ended by the server (as gunicorn does for a chunked body).
    streamed = client.post(
        "/invocations",
        input_stream=io.BytesIO(body),
        content_type="image/png",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert streamed.status_code == 413 and "limit of 1 MB" in streamed.get_json()["error"]
    at_the_limit = png() + b"\0" * ((1 << 20) - len(png()))
    assert client.post("/invocations", data=at_the_limit, content_type="image/png").status_code == 200


class BrokenStream(io.BytesIO):
    """What gunicorn's chunked reader does on a chunk size of ``zz``: raise from ``read``."""

    def read(self, size=-1):
        raise ValueError("Invalid chunk size: 'zz'")


def test_a_body_that_cannot_be_read_is_a_400_sentence():
    client = client_for(UniformEngine())
    answer = client.post(
        "/invocations",
        input_stream=BrokenStream(),
        content_type="image/png",
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert answer.status_code == 400
    assert answer.get_json() == {
        "error": "The request body could not be read: its chunked encoding is malformed or the connection ended early"
    }


class Arbiter:
    def __init__(self, num_workers):
        self.num_workers, self.WORKERS = num_workers, {}


class Worker:
    pass


def test_a_replacement_worker_takes_the_slot_its_predecessor_left(monkeypatch):
    assert free_slot(set(), 2) == 0 and free_slot({0}, 2) == 1 and free_slot({1}, 2) == 0
    arbiter = Arbiter(3)
    for pid in (101, 102, 103):
        worker = Worker()
        pre_fork(arbiter, worker)
        arbiter.WORKERS[pid] = worker
    assert [w.semseg_slot for w in arbiter.WORKERS.values()] == [0, 1, 2]
    del arbiter.WORKERS[102]  # died
    replacement = Worker()
    pre_fork(arbiter, replacement)
    assert replacement.semseg_slot == 1
    monkeypatch.delenv("SEMSEG_WORKER_SLOT", raising=False)
    post_fork(arbiter, replacement)
    from semseg.inference.settings import from_environment

    assert from_environment().worker_slot == 1
