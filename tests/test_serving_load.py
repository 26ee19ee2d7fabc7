"""The short form of ``bench/serving_load.py``: the real server (two workers) under eight clients
posting back to back for 12 s, with four slow clients trickling alongside and ``/ping`` probed
on new connections throughout. Every answer must be a correct mask, and ``/ping`` must answer
within 1 s every time (SageMaker's own limit is 2 s; an idle server answers in milliseconds)."""

from __future__ import annotations

import pytest
from harness.serving_helpers import SlowClient, encoded, mask_of, sample_image, two_warm_workers
from harness.serving_traffic import run_load

pytestmark = pytest.mark.slow

CLIENT_TIMEOUT_S = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with two_warm_workers(tmp_path_factory, "load", SEMSEG_CLIENT_TIMEOUT=str(CLIENT_TIMEOUT_S)) as running:
        yield running


def test_eight_clients_for_twelve_seconds_with_slow_clients_alongside(server):
    workers = server.worker_pids()
    body = encoded(sample_image(640, 480))
    slow = [SlowClient(server.port, part, 12) for part in ("headers", "body", "headers", "body")]
    result = run_load(
        server.url,
        body,
        seconds=12,
        concurrency=8,
        correct=lambda answer: answer.status_code == 200 and mask_of(answer.content).shape == (480, 640),
        slow_clients=slow,
    )
    assert result.errors == [], result.errors[:5]
    assert len(result.latencies) >= 8, result.summary()  # each client got answers, not only a first one
    assert result.pings and max(result.pings) < 1.0, result.summary()
    for client in slow:
        assert client.cut_after is not None and client.answer.startswith(b"HTTP/1.1 408"), client.answer[:80]
    assert server.worker_pids() == workers, "a worker died or was replaced under load"
