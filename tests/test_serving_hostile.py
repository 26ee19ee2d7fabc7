"""The real ``serve`` (gunicorn + Flask, two workers) against clients that misbehave: broken and
oversized bodies however they are framed, images whose memory cost is out of proportion to
their bytes, clients that send a byte a second, and a worker that dies. Each case is followed by
a request that must still succeed."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
import requests
from harness.memory import peak_rss_mb
from harness.serving_helpers import (
    Server,
    SlowClient,
    encoded,
    mask_of,
    ping_times,
    sample_image,
    two_warm_workers,
)
from PIL import Image

pytestmark = pytest.mark.slow

CLIENT_TIMEOUT_S = 6  # SEMSEG_CLIENT_TIMEOUT for this server: short, so the cut-off is seen quickly
LIMIT = 10 * 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with two_warm_workers(tmp_path_factory, "hostile", SEMSEG_CLIENT_TIMEOUT=str(CLIENT_TIMEOUT_S)) as running:
        yield running


def assert_still_serving(server: Server) -> None:
    answer = server.invoke(encoded(sample_image(33, 21)))
    assert answer.status_code == 200, answer.text
    assert mask_of(answer.content).shape == (21, 33)


def raw_exchange(server: Server, request: bytes) -> tuple[int, dict]:
    """Send ``request`` as is; the status and JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_malformed_chunked_body_is_a_400_sentence(server):
    status, error = raw_exchange(
        server,
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n",
    )
    assert status == 400
    assert error == {
        "error": "The request body could not be read: its chunked encoding is malformed or the connection ended early"
    }
    assert "Traceback" not in server.log()
    assert_still_serving(server)


def chunks(body: bytes, size: int = 2**20):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def padded_jpeg(length: int) -> bytes:
    """A 512x512 JPEG padded after its end marker to ``length`` bytes: Pillow reads it whole."""
    image = encoded(sample_image(512, 512))
    return image + b"\0" * (length - len(image))


def noise_png(megabytes: int) -> bytes:
    side = int((megabytes * 2**20 / 3) ** 0.5) + 8
    return encoded(Image.fromarray(np.random.RandomState(0).randint(0, 256, (side, side, 3), np.uint8)), "PNG")


def test_a_chunked_body_over_the_limit_is_a_413_not_a_truncated_image(server):
    for body in (padded_jpeg(LIMIT + 1), noise_png(12)):
        assert len(body) > LIMIT
        # requests sends a generator with Transfer-Encoding: chunked
        answer = requests.post(server.url + "/invocations", data=chunks(body), headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 413, answer.text[:200]
        assert answer.json() == {"error": "The request body is larger than the limit of 10 MB"}
    just_under = requests.post(
        server.url + "/invocations", data=chunks(padded_jpeg(LIMIT)), headers={"Content-Type": "image/jpeg"}
    )
    assert just_under.status_code == 200 and mask_of(just_under.content).shape == (512, 512)
    assert_still_serving(server)


@pytest.mark.parametrize("megabytes", [11, 30])
def test_a_body_declared_over_the_limit_gets_a_413_the_client_can_read(server, megabytes):
    body = np.random.RandomState(1).bytes(megabytes * 2**20)
    request = urllib.request.Request(server.url + "/invocations", data=body, headers={"Content-Type": "image/jpeg"})
    with pytest.raises(urllib.error.HTTPError) as refused:  # a broken pipe would be a URLError
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert b"larger than the limit of 10 MB" in refused.value.read()
    answer = requests.post(server.url + "/invocations", data=body, headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert answer.status_code == 413 and "10 MB" in answer.json()["error"]
    assert_still_serving(server)


def png_of_gray_rows(width: int, height: int) -> bytes:
    """A real (decodable) grayscale PNG of ``width`` x ``height``, built without holding the pixels twice."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + bytes(range(256)) * (width // 256) + bytes(width % 256)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(row * height, 6)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_a_one_row_image_of_64_million_pixels_costs_its_worker_little_memory(server):
    """Its probability rows were a gigabyte each; bilinear weights for the whole row two more."""
    body = png_of_gray_rows(64_000_000, 1)
    assert len(body) < 2**20
    before = {pid: peak_rss_mb(pid) for pid in server.worker_pids()}
    answer = server.invoke(body, content_type="image/png", timeout=300)
    assert answer.status_code == 200, answer.text
    assert mask_of(answer.content).shape == (1, 64_000_000)
    growth = max(peak_rss_mb(pid) - before[pid] for pid in before)
    # The decoded image alone is 64 MB (gray) and its mask 64 MB; before tiling, the growth was 4 GB.
    assert growth < 800, f"a worker's peak memory grew by {growth:.0f} MB"
    assert_still_serving(server)


def test_slow_clients_do_not_delay_ping_and_are_cut_off_after_the_stated_timeout(server):
    clients = [SlowClient(server.port, part, CLIENT_TIMEOUT_S + 8) for part in ["headers"] * 4 + ["body"] * 4]
    for client in clients:
        client.start()
    times = ping_times(server.url, CLIENT_TIMEOUT_S + 4)
    for client in clients:
        client.join(60)
    # 1 s is SageMaker's budget halved; an unloaded ping takes milliseconds, a blocked one seconds.
    assert max(times) < 1.0, f"/ping took up to {max(times):.2f} s"
    for client in clients:
        assert client.cut_after is not None, f"a slow {client.part} client was never cut off"
        # The timeout runs from the connection; the event loop checks deadlines once a second.
        assert CLIENT_TIMEOUT_S - 0.5 <= client.cut_after <= CLIENT_TIMEOUT_S + 4, client.cut_after
        assert client.answer.startswith(b"HTTP/1.1 408"), client.answer[:100]
        assert b"not received in full within 6 s" in client.answer
    assert_still_serving(server)


def test_a_replacement_worker_takes_the_slot_of_the_worker_it_replaces(server):
    """So that with one worker per GPU, a restart never leaves two workers on one GPU."""
    slots = {}
    for line in server.log().splitlines():
        if "takes slot" in line:
            words = line.split()
            slots[int(words[words.index("process") + 1])] = int(words[-1])
    workers = server.worker_pids()
    assert sorted(slots[pid] for pid in workers) == [0, 1]
    victim = next(pid for pid in workers if slots[pid] == 0)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while len(server.worker_pids() - {victim}) < 2 or server.log().count("Loaded fcn") < 3:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.5)
    (replacement,) = server.worker_pids() - workers
    assert f"Worker process {replacement} takes slot 0" in server.log()
    assert_still_serving(server)
