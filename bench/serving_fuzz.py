"""Serving fuzz, long form: at least ``--requests`` seeded hostile requests against the real server.

Method: train a tiny FCN/ResNet-50 (or use ``--model-root``), serve it with ``--workers`` workers,
send the same number of cases of every class of ``tests/serving_fuzz_cases.py`` (random bytes under
every content type, truncated and corrupted JPEG/PNG, every PIL mode, GIF/TIFF/WebP/BMP/ICO, EXIF
orientations, decompression bombs, Accept and Content-Type variants, chunked bodies sound and
broken, bodies just under and over the payload limit, malformed HTTP), each on its own connection,
and check every answer (allowed status, one JSON sentence, the mask's shape), then a valid
request after each class. Worker restarts come from gunicorn's log ("Booting worker" beyond the
first workers), peak memory from each worker's VmHWM.

    .venv/bin/python bench/serving_fuzz.py [--requests 10000] [--seed 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from harness.memory import peak_rss_mb
from harness.serving_fuzz_cases import CLASSES  # noqa: E402
from harness.serving_helpers import Server, trained_model  # noqa: E402
from harness.serving_traffic import fuzz, restarts  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-root", type=Path, help="an /opt/ml root with a trained model (else one is trained)")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    per_class = math.ceil(args.requests / len(CLASSES))
    with tempfile.TemporaryDirectory(prefix="bench-serving-fuzz-") as scratch:
        scratch = Path(scratch)
        root = args.model_root or trained_model(scratch / "models", "fcn")
        server = Server(root, scratch / "serve.log", SAGEMAKER_MODEL_SERVER_WORKERS=str(args.workers))
        try:
            server.wait_until_warm(args.workers)
            workers = server.worker_pids()
            print(
                f"# Serving fuzz: {per_class} cases x {len(CLASSES)} classes, seed {args.seed}, "
                f"{args.workers} workers, {os.cpu_count()} CPU cores, "
                f"{platform.processor() or platform.machine()}, no GPU"
            )
            print("\n| class | requests | statuses | seconds |\n|---|---|---|---|")
            clock = [time.monotonic()]

            def report(name, counter):
                statuses = ", ".join(f"{status}: {count}" for status, count in sorted(counter.items()))
                print(
                    f"| {name} | {sum(counter.values())} | {statuses} | {time.monotonic() - clock[0]:.0f} |", flush=True
                )
                clock[0] = time.monotonic()

            result = fuzz(server, random.Random(args.seed), per_class, after_class=report)
            log = server.log()
            rss = [peak_rss_mb(pid) for pid in sorted(server.worker_pids())]
            five_xx = sum(count for status, count in result.statuses.items() if status >= 500)
            print(
                "\n| requests | 5xx | no answer | wrong answers | worker restarts | workers unchanged "
                "| tracebacks in log | peak RSS per worker MB |\n|---|---|---|---|---|---|---|---|"
            )
            print(
                f"| {result.requests} | {five_xx} | {result.statuses.get(0, 0)} | {len(result.problems)} | "
                f"{restarts(log, args.workers)} | {server.worker_pids() == workers} | {log.count('Traceback')} | "
                f"{', '.join(f'{mb:.0f}' for mb in rss)} |"
            )
            for problem in result.problems[:20]:
                print(f"#   {problem[:300]}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
