"""Model server benchmark: what HTTP adds to a prediction, throughput by worker count, memory.

Method: train a tiny FCN/ResNet-50 with ``base_size`` at the inference size (one iteration:
weights do not change the cost), so training exports ``model.onnx`` at that size (default 520,
the base_size of a default model), and add its int8 copy, which the server then runs. For 512x512
and 1024x768 JPEGs it times the in-process path (``codecs.invoke``: decode, resize, forward,
upsample, PNG) against a POST to ``serve`` on 127.0.0.1 with one worker (medians of
``--repeats`` alternated runs). Other load on a shared machine moves both by more than HTTP
costs, so it also reports the overhead measured on the same requests: client time minus the
server's own ``Server-Timing`` (predict and encode). Then it measures requests/s at concurrency
4 and 8 with 1, 2 and 4 workers (ONNX Runtime threads: the cores shared among the workers), and
each worker's peak RSS (VmHWM). Ratios, not absolute times, carry over between machines.

    .venv/bin/python bench/serving.py [--model-root DIR] [--inference-size 520] [--repeats 5]
        [--concurrency 4,8] [--workers 1,2,4] [--requests 12] [--skip-latency]
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

from harness.memory import peak_rss_mb
from harness.serving_helpers import Server, encoded, sample_image  # noqa: E402
from harness.trainjob import run_train  # noqa: E402

from semseg.cpu_threads import usable_cpu_count  # noqa: E402
from semseg.inference import codecs  # noqa: E402
from semseg.inference.onnx_engine import intra_op_threads  # noqa: E402
from semseg.inference.predictor import Predictor  # noqa: E402
from semseg.inference.settings import ServingSettings  # noqa: E402
from semseg.model import artifacts, quantize  # noqa: E402
from semseg.model.export import ONNX_FILE  # noqa: E402
from semseg.sample_data import write_opt_ml_tree  # noqa: E402
from semseg.train import int8_gate  # noqa: E402

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


def large_image_rows(root: Path, size: int, logs: Path) -> list[str]:
    """A 24-megapixel JPEG (6000x4000) through HTTP: sliding windows (capped at 24), without and with flip."""
    body = encoded(sample_image(6000, 4000), quality=90)
    rows = []
    for flip in ("false", "true"):
        server = Server(root, logs / f"large-{flip}.log", SEMSEG_INFERENCE_SIZE=str(size), SEMSEG_FLIP=flip)
        try:
            server.wait_until_warm(1)
            started = time.perf_counter()
            answer = server.invoke(body, timeout=600)
            elapsed = time.perf_counter() - started
            assert answer.status_code == 200, answer.text
            megabytes, inside = len(body) / 1e6, server_ms(answer) / 1000
            rows.append(f"| 6000x4000, {megabytes:.1f} MB JPEG | {flip} | {elapsed:.1f} | {inside:.1f} |")
        finally:
            server.stop()
    return rows


def int8_model(scratch: Path, size: int, algorithm: str = "fcn") -> Path:
    """An /opt/ml root whose model has model.onnx and model.int8.onnx at ``size`` (one training
    iteration: weights do not change the cost). The int8 copy is made without the accuracy gate,
    which an untrained model may fail: this bench measures speed only."""
    settings = {
        "crop_size": "32",
        "base_size": str(size),
        "epochs": "1",
        "mini_batch_size": "2",
        "validation_mini_batch_size": "2",
        "num_training_samples": "2",
        "_workers": "0",
        "_int8": "False",
        "algorithm": algorithm,
    }
    root = write_opt_ml_tree(scratch / f"{algorithm}-int8-{size}", train=2, validation=2, hyperparameters=settings)
    job = run_train(root, timeout=1200)
    assert job.returncode == 0, job.log[-2000:]
    hp = artifacts.read_hyperparameters(job.model_dir)
    calibration, table = int8_gate.file_mode_split(root / "input" / "data", "train", hp)
    images = (image for image, _ in quantize.prepared(calibration, size, table))
    quantize.quantize_file(job.model_dir / ONNX_FILE, job.model_dir / quantize.INT8_FILE, images)
    return root


def engine_of(log: str) -> str:
    return next((line.split("Engine: ", 1)[1] for line in log.splitlines() if "Engine: " in line), "?")


def throughput_row(
    root: Path, size: int, workers: int, concurrencies: list[int], requests_per_run: int, body: bytes, logs: Path
) -> str:
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

        rates = []
        for concurrency in concurrencies:
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(one, range(concurrency)))  # warm every worker
                started = time.perf_counter()
                list(pool.map(one, range(requests_per_run)))
                rates.append(requests_per_run / (time.perf_counter() - started))
        rss = [peak_rss_mb(pid) for pid in sorted(server.worker_pids())]
        threads = intra_op_threads(ServingSettings(workers=workers))
        cells = " | ".join(f"{rate:.2f}" for rate in rates)
        return f"| {workers} | {threads} | {cells} | {max(rss):.0f} | {sum(rss):.0f} | {engine_of(server.log())} |"
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-root", type=Path, help="an /opt/ml root with a trained model (else one is trained)")
    parser.add_argument("--inference-size", type=int, default=520)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=12, help="requests per throughput run")
    parser.add_argument("--concurrency", default="4,8", help="client concurrencies of the throughput runs")
    parser.add_argument("--workers", default="1,2,4", help="worker counts of the throughput runs")
    parser.add_argument("--skip-latency", action="store_true", help="throughput only")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        scratch = Path(scratch)
        root = args.model_root or int8_model(scratch / "models", args.inference_size)
        bodies = {(w, h): encoded(sample_image(w, h), quality=90) for w, h in SIZES}
        print(
            f"# Serving benchmark: FCN/ResNet-50, inference size {args.inference_size}, "
            f"{usable_cpu_count()} CPU cores, {platform.processor() or platform.machine()}, no GPU, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        if not args.skip_latency:
            print(
                "\n| image | in-process ms | HTTP ms | HTTP vs in-process | HTTP overhead ms | overhead share |\n"
                "|---|---|---|---|---|---|"
            )
            for row in latency_table(root, args.inference_size, args.repeats, bodies, scratch):
                print(row, flush=True)
            print("\n| image | flip | HTTP s | server s |\n|---|---|---|---|")
            for row in large_image_rows(root, args.inference_size, scratch):
                print(row, flush=True)
        print(f"\nThroughput ({args.requests} requests per run, 512x512 JPEG, PNG answers)\n")
        print(
            "| workers | threads/worker | "
            + " | ".join(f"requests/s at concurrency {c}" for c in concurrencies)
            + " | peak RSS per worker MB | all workers MB | engine |\n"
            + "|---|---|"
            + "---|" * len(concurrencies)
            + "---|---|---|"
        )
        for workers in (int(w) for w in args.workers.split(",")):
            print(
                throughput_row(
                    root, args.inference_size, workers, concurrencies, args.requests, bodies[(512, 512)], scratch
                ),
                flush=True,
            )
        print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
