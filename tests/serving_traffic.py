"""Traffic for the serving load test and its benchmark: ``concurrency`` clients posting images
back to back on kept-alive connections, with ``/ping`` probed throughout on new connections (as
SageMaker's health check does), and optionally slow clients trickling alongside."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import requests
from serving_helpers import SlowClient, ping_times


@dataclass
class LoadResult:
    seconds: float
    latencies: list[float] = field(default_factory=list)  # of the requests answered correctly
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # wrong answers and failed connections
    pings: list[float] = field(default_factory=list)
    slow_clients: list[SlowClient] = field(default_factory=list)

    def percentile(self, share: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    def summary(self) -> dict:
        cut = [client.cut_after for client in self.slow_clients]
        return {
            "requests": len(self.latencies) + len(self.errors),
            "errors": len(self.errors),
            "requests/s": len(self.latencies) / self.seconds,
            "p50 s": statistics.median(self.latencies) if self.latencies else float("nan"),
            "p99 s": self.percentile(0.99),
            "pings": len(self.pings),
            "max ping s": max(self.pings, default=float("nan")),
            "slow clients cut": sum(c is not None for c in cut),
            "slow cut after s": max((c for c in cut if c is not None), default=float("nan")),
        }


def run_load(
    url: str,
    body: bytes,
    seconds: float,
    concurrency: int,
    correct: Callable[[requests.Response], bool],
    slow_clients: list[SlowClient] = (),
) -> LoadResult:
    """``concurrency`` clients for ``seconds``; each answer must satisfy ``correct``."""
    result = LoadResult(seconds)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client():
        with requests.Session() as session:
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    answer = session.post(
                        url + "/invocations", data=body, headers={"Content-Type": "image/jpeg"}, timeout=120
                    )
                except requests.RequestException as exc:
                    with lock:
                        result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                took = time.monotonic() - started
                with lock:
                    result.statuses[answer.status_code] += 1
                    if correct(answer):
                        result.latencies.append(took)
                    else:
                        result.errors.append(f"{answer.status_code}: {answer.content[:200]!r}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in [*threads, *slow_clients]:
        thread.start()
    result.pings = ping_times(url, seconds)
    for thread in [*threads, *slow_clients]:
        thread.join(180)
    result.slow_clients = list(slow_clients)
    return result
