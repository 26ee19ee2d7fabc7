"""Serving under load and under slow clients: latency percentiles, errors and /ping times.

Method: train a tiny FCN/ResNet-50 (or use ``--model-root``), serve it with ``--workers`` workers
(``--inference-size`` sets the network's input side; the model's own base size by default),
then two phases per worker class:

1. load: ``--concurrency`` clients post a 640x480 JPEG back to back on kept-alive connections for
   ``--seconds``; every answer must be a 480x640 PNG mask. ``/ping`` is probed every 0.2 s on a new
   connection (SageMaker's health check) throughout.
2. slow clients: ``--slow-clients`` connections send their request at 1 byte/s (half never finish
   their headers, half their body) for the client timeout plus 10 s, with ``/ping`` probed as above;
   reported: how many the server cut off, and after how long.

``--worker-class gthread`` runs gunicorn's stock threaded worker instead of serve's own, for the
comparison docs/performance.md quotes; ``both`` runs each, alternated ``--rounds`` times (machine load drifts).
A ping that fails or takes over 30 s counts as 30 s.

    .venv/bin/python bench/serving_load.py [--seconds 60] [--concurrency 8] [--worker-class both]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

from harness.serving_helpers import BIN, Server, SlowClient, encoded, mask_of, sample_image, trained_model  # noqa: E402
from harness.serving_traffic import run_load  # noqa: E402

from semseg.inference.settings import DEFAULT_CLIENT_TIMEOUT_S  # noqa: E402

STOCK = [str(BIN / "python"), "-m", "gunicorn", "--config", "python:serve.gunicorn_conf", "--worker-class", "gthread"]


def started(root: Path, log: Path, worker_class: str, workers: int, size: int | None) -> Server:
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)}
    if size:
        env["SEMSEG_INFERENCE_SIZE"] = str(size)
    server = Server(root, log, command=STOCK if worker_class == "gthread" else None, **env)
    server.wait_until_warm(workers)
    return server


def row(worker_class: str, phase: str, summary: dict) -> str:
    cut = (
        f"{summary['slow clients cut']}/{summary['slow clients']} (after {summary['slow cut after s']:.1f} s)"
        if summary["slow clients"]
        else "-"
    )
    return (
        f"| {worker_class} | {phase} | {summary['requests']} | {summary['errors']} | {summary['requests/s']:.2f} | "
        f"{summary['p50 s']:.2f} | {summary['p99 s']:.2f} | {summary['pings']} | {summary['max ping s']:.3f} | {cut} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-root", type=Path, help="an /opt/ml root with a trained model (else one is trained)")
    parser.add_argument("--inference-size", type=int, help="the network's input side (default: the model's)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slow-clients", type=int, default=8)
    parser.add_argument("--worker-class", choices=["serve", "gthread", "both"], default="serve")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each worker class, alternated")
    args = parser.parse_args()
    classes = ["serve", "gthread"] * args.rounds if args.worker_class == "both" else [args.worker_class] * args.rounds
    body = encoded(sample_image(640, 480))
    correct = lambda answer: answer.status_code == 200 and mask_of(answer.content).shape == (480, 640)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-serving-load-") as scratch:
        scratch = Path(scratch)
        root = args.model_root or trained_model(scratch / "models", "fcn")
        print(
            f"# Serving load: FCN/ResNet-50 (tiny training run), inference size {args.inference_size or 'base'}, "
            f"{args.workers} workers, {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
            f"no GPU; load {args.seconds:.0f} s at concurrency {args.concurrency} (640x480 JPEG -> PNG); "
            f"{args.slow_clients} slow clients at 1 byte/s, client timeout {DEFAULT_CLIENT_TIMEOUT_S} s"
        )
        print(
            "\n| worker | phase | requests | errors | requests/s | p50 s | p99 s | pings | max /ping s "
            "| slow clients cut |\n|---|---|---|---|---|---|---|---|---|---|"
        )
        for worker_class in classes:
            server = started(root, scratch / f"{worker_class}.log", worker_class, args.workers, args.inference_size)
            try:
                load = run_load(server.url, body, args.seconds, args.concurrency, correct)
                print(row(worker_class, "load", {**load.summary(), "slow clients": 0}), flush=True)
                if not args.slow_clients:
                    continue
                seconds = DEFAULT_CLIENT_TIMEOUT_S + 10
                slow = [
                    SlowClient(server.port, "headers" if index % 2 else "body", seconds)
                    for index in range(args.slow_clients)
                ]
                trickle = run_load(server.url, body, seconds, 0, correct, slow_clients=slow)
                print(row(worker_class, "slow clients", {**trickle.summary(), "slow clients": len(slow)}), flush=True)
                for error in load.errors[:3]:
                    print(f"#   {worker_class} error: {error}")
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
