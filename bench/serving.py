"""Model server benchmark: what HTTP adds to a prediction, throughput by worker count, memory.

Method: train a tiny FCN/ResNet-50 (one iteration: weights do not change the cost), then serve it
with ``SEMSEG_INFERENCE_SIZE`` (default 520, the base_size of a default model) so the network
does the work of a default model. For 512x512 and 1024x768 JPEGs it times the in-process path
(``codecs.invoke``: decode, resize, forward, upsample, PNG) against a POST to ``serve`` on
127.0.0.1 with one worker (medians of ``--repeats`` alternated runs). Other load on a shared
machine moves both by more than HTTP costs, so it also reports the overhead measured on the same
requests: client time minus the server's own ``Server-Timing`` (predict and encode). Then it
measures requests/s at concurrency 4 with 1, 2 and 4 workers, and each worker's peak RSS (VmHWM).
Ratios, not absolute times, carry over between machines.

    .venv/bin/python bench/serving.py [--model-root DIR] [--inference-size 520] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from serving_helpers import Server, encoded, sample_image, trained_model  # noqa: E402

from semseg.inference import codecs  # noqa: E402
from semseg.inference.predictor import Predictor  # noqa: E402
from semseg.inference.settings import ServingSettings  # noqa: E402

SIZES = [(512, 512), (1024, 768)]


def paired_medians(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of each call, run alternately so drifts in machine load hit both alike."""
    first(), second()  # warm: first-request allocations are not what a user sees afterwards
    times = ([], [])
    for _ in range(repeats):
        for call, bucket in zip((first, second), times):
            started = time.perf_counter()
            call()
            bucket.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def server_ms(answer) -> float:
    """The server's own predict-and-encode time, from its ``Server-Timing: invoke;dur=<ms>`` header."""
    return float(answer.headers["Server-Timing"].split("dur=")[1])


def latency_table(root: Path, size: int, repeats: int, bodies: dict, logs: Path) -> list[str]:
    predictor = Predictor.from_model_dir(root / "model", ServingSettings(inference_size=size))
    server = Server(root, logs / "latency.log", SEMSEG_INFERENCE_SIZE=str(size))
    try:
        assert server.wait_until_up().status_code == 200, server.log()
        rows = []
        for (width, height), body in bodies.items():
            served = []

            def local(body=body):
                return b"".join(codecs.invoke(predictor, body, "image/jpeg", "image/png", "image/png").chunks)

            def remote(body=body, served=served):
                started = time.perf_counter()
                answer = server.invoke(body)
                assert answer.status_code == 200, answer.text
                served.append((time.perf_counter() - started, server_ms(answer) / 1000))

            in_process, http = paired_medians(local, remote, repeats)
            added = statistics.median(total - inside for total, inside in served[1:])
            rows.append(
                f"| {width}x{height} | {in_process * 1000:.0f} | {http * 1000:.0f} | "
                f"{(http / in_process - 1) * 100:+.1f}% | {added * 1000:.1f} | "
                f"{added / (http - added) * 100:.2f}% |"
            )
        return rows
    finally:
        server.stop()


def throughput_row(root: Path, size: int, workers: int, requests_per_run: int, body: bytes, logs: Path) -> str:
    server = Server(
        root,
        logs / f"workers{workers}.log",
        SEMSEG_INFERENCE_SIZE=str(size),
        SAGEMAKER_MODEL_SERVER_WORKERS=str(workers),
    )
    try:
        server.wait_until_warm(workers)

        def one(_):
            answer = server.invoke(body, timeout=600)
            assert answer.status_code == 200, answer.text

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, range(4)))  # warm every worker
            started = time.perf_counter()
            list(pool.map(one, range(requests_per_run)))
            elapsed = time.perf_counter() - started
        rss = [peak_rss_mb(pid) for pid in sorted(server.worker_pids())]
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // workers))
        return f"| {workers} | {threads} | {requests_per_run / elapsed:.2f} | {max(rss):.0f} | {sum(rss):.0f} |"
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-root", type=Path, help="an /opt/ml root with a trained model (else one is trained)")
    parser.add_argument("--inference-size", type=int, default=520)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=12, help="requests per throughput run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        scratch = Path(scratch)
        root = args.model_root or trained_model(scratch / "models", "fcn")
        bodies = {(w, h): encoded(sample_image(w, h), quality=90) for w, h in SIZES}
        print(
            f"# Serving benchmark: FCN/ResNet-50, inference size {args.inference_size}, "
            f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, no GPU"
        )
        print(
            "\n| image | in-process ms | HTTP ms | HTTP vs in-process | HTTP overhead ms | overhead share |\n"
            "|---|---|---|---|---|---|"
        )
        for row in latency_table(root, args.inference_size, args.repeats, bodies, scratch):
            print(row, flush=True)
        print("\nThroughput at concurrency 4 (512x512 JPEG, PNG answers)\n")
        print(
            "| workers | threads/worker | requests/s | peak RSS per worker MB | all workers MB |\n|---|---|---|---|---|"
        )
        for workers in (1, 2, 4):
            print(
                throughput_row(root, args.inference_size, workers, args.requests, bodies[(512, 512)], scratch),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
