"""End to end through HTTP against torchvision's equivalent network, at 480x480 on the CPU.

Method: for FCN and DeepLabV3 (ResNet-50), the real ``train`` command runs one iteration with
``base_size`` 480, so training exports ``model.onnx`` at 480, and its int8 copy is added (without
the accuracy gate: only speed is measured here); the real ``serve`` (one worker, all cores) then
answers POSTs of a 480x480 JPEG on 127.0.0.1 with the int8 copy, and a second server with
``SEMSEG_FORCE_FP32`` with the float32 export, timed by the client (decode, preprocess, forward,
PNG encode and HTTP included). torchvision's
``fcn_resnet50`` / ``deeplabv3_resnet50`` run forward + softmax only, in their own Python (see
``bench/onnx_engine.py`` for that environment), interleaved with the requests. Medians of
``--repeats`` rounds after one warm-up each.

    .venv/bin/python bench/http_vs_torchvision.py [--repeats 5] [--torch-python PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from harness.serving_helpers import Server, encoded, sample_image  # noqa: E402
from onnx_engine import Torchvision  # noqa: E402
from serving import engine_of, int8_model  # noqa: E402

SIZE = 480


def post(url: str, body: bytes) -> float:
    request = urllib.request.Request(
        url + "/invocations", data=body, headers={"Content-Type": "image/jpeg", "Accept": "image/png"}
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        answer.read()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-python", default="/work/bench-venv-torch/bin/python")
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    body = encoded(sample_image(SIZE, SIZE), "JPEG")
    print(
        f"# {threads} cores, load average {os.getloadavg()[0]:.1f}; {SIZE}x{SIZE} JPEG; medians of "
        f"{args.repeats} rounds after a warm-up; seconds"
    )
    have_torch = Path(args.torch_python).exists()
    print("| model | HTTP int8 | HTTP float32 | torchvision forward | int8 HTTP / torchvision | int8 / float32 HTTP |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for algorithm in ("fcn", "deeplab"):
            root = int8_model(Path(scratch), SIZE, algorithm)
            servers = {
                "int8": Server(root, Path(scratch) / f"{algorithm}-int8.log"),
                "fp32": Server(root, Path(scratch) / f"{algorithm}-fp32.log", SEMSEG_FORCE_FP32="true"),
            }
            torchvision = Torchvision(args.torch_python, algorithm, SIZE, SIZE, 4, threads) if have_torch else None
            try:
                for server in servers.values():
                    server.wait_until_warm(1)
                    post(server.url, body)
                engines = {name: engine_of(server.log()) for name, server in servers.items()}
                times = {name: [] for name in (*servers, "torch")}
                for _ in range(args.repeats):  # interleaved, so load falls on all alike
                    for name, server in servers.items():
                        times[name].append(post(server.url, body))
                    if torchvision:
                        times["torch"].append(torchvision())
            finally:
                if torchvision:
                    torchvision.close()
                for server in servers.values():
                    server.stop()
            assert "int8" in engines["int8"] and "float32" in engines["fp32"], engines
            med = {name: statistics.median(values) for name, values in times.items() if values}
            torch_cells = (f"{med['torch']:.3f}", f"{med['int8'] / med['torch']:.2f}") if "torch" in med else ("-", "-")
            print(
                f"| {algorithm} | {med['int8']:.3f} | {med['fp32']:.3f} | {torch_cells[0]} | {torch_cells[1]} | "
                f"{med['int8'] / med['fp32']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
