"""Traffic for the serving load and fuzz tests and their benchmarks.

Load: ``concurrency`` clients posting images back to back on kept-alive connections, with
``/ping`` probed throughout on new connections (as SageMaker's health check does), and
optionally slow clients trickling alongside. Fuzz: the hostile request classes of
``serving_fuzz_cases``, each answer checked, and a valid request after each class."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from harness.serving_helpers import SlowClient, encoded, mask_of, ping_times, sample_image


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


SLOW_ANSWER_S = 20  # every fuzz case is a small image or an error: far more means a stuck thread


@dataclass
class FuzzResult:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    by_class: dict[str, Counter] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # wrong answers, and valid requests failing after a class


def fuzz(server, rng, per_class: int, classes: dict | None = None, after_class=None) -> FuzzResult:
    """``per_class`` cases of each class, each on its own connection, each answer checked; after each
    class a valid request must be answered correctly. ``after_class(name, counter)`` is told of each."""
    from harness.serving_fuzz_cases import CLASSES, check, exchange

    result = FuzzResult()
    for name, make in (classes or CLASSES).items():
        counter = result.by_class.setdefault(name, Counter())
        for _ in range(per_class):
            case = make(rng)
            started = time.monotonic()
            status, headers, body = exchange(server.port, case.request)
            if time.monotonic() - started > SLOW_ANSWER_S:
                result.problems.append(f"{case.kind}: answered after {time.monotonic() - started:.0f} s")
            result.requests += 1
            counter[status] += 1
            result.statuses[status] += 1
            problem = check(case, status, headers, body)
            if problem:
                result.problems.append(problem)
        answer = server.invoke(encoded(sample_image(45, 27)))
        if answer.status_code != 200 or mask_of(answer.content).shape != (27, 45):
            result.problems.append(f"after {name}: a valid request got {answer.status_code}: {answer.text[:200]}")
        if after_class:
            after_class(name, counter)
    return result


def restarts(log: str, workers: int) -> int:
    """Workers gunicorn booted beyond the first ``workers``: each one replaced a worker that died."""
    return log.count("Booting worker") - workers
