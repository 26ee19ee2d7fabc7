"""The short form of ``bench/serving_fuzz.py``: 25 seeded hostile requests of each class (about
300 in all) against the real server with two workers. Pass: no 5xx, every error one JSON
sentence with an allowed 4xx, every valid image answered with a mask of its upright size, a
valid request answered after each class, no worker restarted, no traceback in the log."""

from __future__ import annotations

import random

import pytest
from harness.memory import peak_rss_mb
from harness.serving_helpers import two_warm_workers
from harness.serving_traffic import fuzz, restarts

pytestmark = pytest.mark.slow

PER_CLASS = 25


def test_a_few_hundred_hostile_requests_get_4xx_sentences_and_no_worker_dies(tmp_path_factory):
    with two_warm_workers(tmp_path_factory, "fuzz") as server:
        workers = server.worker_pids()
        result = fuzz(server, random.Random(20261127), PER_CLASS)
        assert result.problems == [], "\n".join(result.problems[:20])
        assert not [status for status in result.statuses if status >= 500 or status < 200], result.statuses
        assert result.requests == PER_CLASS * len(result.by_class)
        log = server.log()
        assert restarts(log, 2) == 0 and server.worker_pids() == workers, log[-3000:]
        assert "Traceback" not in log and "WORKER TIMEOUT" not in log, log[-3000:]
        # Nothing in these cases needs more than a few megapixels decoded at once: 620 MB at rest.
        assert max(peak_rss_mb(pid) for pid in workers) < 1500
