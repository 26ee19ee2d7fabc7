"""Shared by the serving tests: models trained by short real runs, a real ``serve`` process on
127.0.0.1, the protobuf classes compiled from the project's own ``record.proto``, and test images.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from harness.ports import free_port
from harness.trainjob import TINY, WITH_EXPORT, require_training_marker
from semseg import classes
from semseg.sample_data import make_pair, write_opt_ml_tree

BIN = Path(sys.executable).parent
PROTO = Path(__file__).resolve().parents[2] / "src" / "semseg" / "inference" / "record.proto"
TINY_TRAINING = {**TINY, "mini_batch_size": "4", "validation_mini_batch_size": "2", **WITH_EXPORT}  # served by ONNX


TRAIN_LOG = "train.log"  # beside the /opt/ml tree of a trained_model run: what train printed


def trained_model(cache: Path, algorithm: str) -> Path:
    """The /opt/ml root of a one-iteration training run of ``algorithm`` (run once per session, shared
    by every test file that needs a trained network of that algorithm)."""
    root = cache / algorithm
    if not (root / "model" / "model_best.params").exists():
        require_training_marker()
        write_opt_ml_tree(root, train=4, validation=2, hyperparameters=dict(TINY_TRAINING, algorithm=algorithm))
        (root / "checkpoints").rmdir()  # a served model needs none
        env = dict(os.environ, SAGEMAKER_BASE_DIR=str(root))
        done = subprocess.run([str(BIN / "train")], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (root / TRAIN_LOG).write_text(done.stdout)
    return root


@contextmanager
def named_model_server(tmp_path_factory, table) -> Iterator[Server]:
    """``semseg serve --model ROOT`` on the session's test fcn model, linked into a job root with
    ``table`` as its classes.json; stopped when the block ends."""
    trained = trained_model(tmp_path_factory.getbasetemp() / "serving-models", "fcn") / "model"
    root = tmp_path_factory.mktemp("named-model")
    (root / "model").mkdir()
    for file in trained.iterdir():
        os.link(file, root / "model" / file.name)  # the weights are not copied
    classes.save(table, root / "model")
    server = Server(
        tmp_path_factory.mktemp("elsewhere"), root / "serve.log", [str(BIN / "semseg"), "serve", "--model", str(root)]
    )
    try:
        assert server.wait_until_up().status_code == 200, server.log()
        yield server
    finally:
        server.stop()


@contextmanager
def model_repository_server(tmp_path_factory, tables: dict[str, classes.ClassTable], **env: str) -> Iterator[Server]:
    """``semseg serve --model REPO`` where REPO holds one model directory per name of ``tables``: each
    the session's test fcn model (hard links, not copies) with that table as its classes.json, so the
    models answer the same masks under different class names; stopped when the block ends."""
    trained = trained_model(tmp_path_factory.getbasetemp() / "serving-models", "fcn") / "model"
    repository = tmp_path_factory.mktemp("repository")
    for name, table in tables.items():
        (repository / name).mkdir()
        for file in trained.iterdir():
            os.link(file, repository / name / file.name)
        classes.save(table, repository / name)
    server = Server(
        tmp_path_factory.mktemp("elsewhere"),
        repository.parent / f"{repository.name}.log",
        [str(BIN / "semseg"), "serve", "--model", str(repository)],
        **env,
    )
    try:
        assert server.wait_until_up().status_code == 200, server.log()
        yield server
    finally:
        server.stop()


class Server:
    """``serve`` as SageMaker runs it, on a free port, reached on 127.0.0.1 only."""

    def __init__(self, base_dir: Path, log_path: Path, command: list[str] | None = None, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environment = {
            **os.environ,
            "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
            **env,
            "SAGEMAKER_BASE_DIR": str(base_dir),
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
        }
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            command or [str(BIN / "serve")], env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_until_up(self, timeout: float = 120) -> requests.Response:
        """The first answer of /ping (any status), once the server listens and a worker is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early: {self.log()}"
            try:
                return requests.get(self.url + "/ping", timeout=5)
            except requests.ConnectionError:
                time.sleep(0.3)
            except requests.Timeout:
                pass
        raise AssertionError(f"serve did not answer /ping within {timeout} s: {self.log()}")

    def wait_until_warm(self, workers: int, timeout: float = 300) -> None:
        """Until /ping answers 200 and ``workers`` workers have loaded and warmed up their model."""
        assert self.wait_until_up().status_code == 200, self.log()
        deadline = time.monotonic() + timeout
        while len(re.findall(r"Loaded (?:fcn|psp|deeplab)/", self.log())) < workers:
            assert time.monotonic() < deadline, f"{workers} workers did not load within {timeout} s: {self.log()}"
            time.sleep(0.5)

    def invoke(
        self,
        body: bytes,
        content_type: str | None = "image/jpeg",
        accept: str | None = "image/png",
        timeout: float = 60,
        model: str | None = None,
    ) -> requests.Response:
        """POST /invocations; ``model`` goes in SageMaker's multi-model header."""
        headers = {"X-Amzn-SageMaker-Target-Model": model} if model is not None else {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if accept is not None:
            headers["Accept"] = accept
        return requests.post(self.url + "/invocations", data=body, headers=headers, timeout=timeout)

    def worker_pids(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return {int(pid) for pid in children}

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM, as SageMaker sends it; (exit code, seconds taken)."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code, time.monotonic() - started


def record_pb2(directory: Path):
    """The Python classes protoc generates from the project's record.proto."""
    from grpc_tools import protoc

    code = protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={directory}", str(PROTO)])
    assert code == 0, "protoc failed on record.proto"
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module("record_pb2")
    finally:
        sys.path.remove(str(directory))


def decode_probabilities(body: bytes, record_module) -> np.ndarray:
    """(C, H, W) from a RecordIO-protobuf body, read exactly as AWS's example notebook reads it."""
    import mxnet as mx

    record = record_module.Record()
    with tempfile.NamedTemporaryFile(mode="w+b") as handle:
        handle.write(body)
        handle.flush()
        reader = mx.recordio.MXRecordIO(handle.name, "r")
        record.ParseFromString(reader.read())
        assert reader.read() is None, "the body holds more than one record"
        reader.close()
    values = np.array(record.features["target"].float32_tensor.values, dtype=np.float32)
    shape = list(record.features["shape"].int32_tensor.values)
    return np.squeeze(values.reshape(shape), axis=0)


def mask_of(body: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(body)))


def encoded(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sample_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A sample-data picture (shapes on texture) of exactly ``width`` x ``height``."""
    picture = make_pair(np.random.RandomState(seed), max(width, 32), max(height, 32))[0]
    return picture if picture.size == (width, height) else picture.resize((width, height), Image.BILINEAR)


def png_declaring(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG whose header declares ``width`` x ``height`` (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


class SlowClient(threading.Thread):
    """A client that sends its request one byte a second: ``part`` is "headers" (it never finishes
    them), "body" (whole headers, then a 1000-byte body) or "idle" (connects and sends nothing).
    ``cut_after`` is how long the server took to close the connection (None: still open at the end)
    and ``answer`` what it sent back."""

    def __init__(self, port: int, part: str, seconds: float):
        super().__init__(daemon=True)
        self.port, self.part, self.seconds = port, part, seconds
        self.cut_after: float | None = None
        self.answer = b""

    def run(self) -> None:
        started = time.monotonic()
        head = b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        if self.part == "body":
            head, trickle = head + b"Content-Length: 1000\r\n\r\n", b"\0" * 1000
        else:
            trickle = b"X-Slow: " + b"a" * 1000
        with socket.create_connection(("127.0.0.1", self.port), timeout=self.seconds + 10) as sock:
            sock.settimeout(1.0)
            try:
                sock.sendall(head if self.part != "idle" else b"")
                for index in range(len(trickle)):
                    if time.monotonic() - started > self.seconds:
                        return
                    if self.part != "idle":
                        sock.sendall(trickle[index : index + 1])
                    try:
                        received = sock.recv(4096)
                    except TimeoutError:
                        continue
                    self.answer += received
                    if not received or b"\r\n\r\n" in self.answer:
                        break
            except OSError:
                pass
            self.cut_after = time.monotonic() - started


def ping_times(url: str, seconds: float, interval: float = 0.2) -> list[float]:
    """Seconds each GET /ping took, one every ``interval`` for ``seconds``, each on a new connection.

    A ping that fails or takes over 30 s counts as 30 s."""
    times, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            ok = requests.get(url + "/ping", timeout=30).status_code == 200
        except requests.RequestException:
            ok = False
        times.append(time.monotonic() - started if ok else 30.0)
        time.sleep(interval)
    return times


@contextmanager
def two_warm_workers(tmp_path_factory, name: str, **env: str) -> Iterator[Server]:
    """The test fcn model served by two loaded, warmed-up workers, stopped afterwards."""
    root = trained_model(tmp_path_factory.getbasetemp() / "serving-models", "fcn")
    server = Server(root, tmp_path_factory.mktemp(name) / "serve.log", SAGEMAKER_MODEL_SERVER_WORKERS="2", **env)
    try:
        server.wait_until_warm(2)
        yield server
    finally:
        server.stop()
