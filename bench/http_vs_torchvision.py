"""End to end through HTTP against torchvision's equivalent network, at 480x480 on the CPU.

Method: for FCN and DeepLabV3 (ResNet-50), the real ``train`` command runs one iteration with
``base_size`` 480, so training exports ``model.onnx`` at 480 and the server picks ONNX Runtime;
the real ``serve`` (one worker, all cores) then answers POSTs of a 480x480 JPEG on 127.0.0.1,
timed by the client (decode, preprocess, forward, PNG encode and HTTP included). torchvision's
``fcn_resnet50`` / ``deeplabv3_resnet50`` run forward + softmax only, in their own Python (see
``bench/onnx_engine.py`` for that environment), interleaved with the requests. Medians of
``--repeats`` rounds after one warm-up each.

    .venv/bin/python bench/http_vs_torchvision.py [--repeats 5] [--torch-python PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from onnx_engine import Torchvision  # noqa: E402
from serving_helpers import Server, encoded, sample_image  # noqa: E402
from trainjob import run_train  # noqa: E402

from semseg.sample_data import write_opt_ml_tree  # noqa: E402

SIZE = 480
ONE_ITERATION = {
    "crop_size": "32",
    "base_size": str(SIZE),
    "epochs": "1",
    "mini_batch_size": "2",
    "validation_mini_batch_size": "2",
    "num_training_samples": "2",
    "_workers": "0",
}


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
    print("| model | engine chosen by serve | HTTP end to end | torchvision forward | ratio |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for algorithm, torch_model in (("fcn", "fcn"), ("deeplab", "deeplab")):
            root = write_opt_ml_tree(
                Path(scratch) / algorithm,
                train=2,
                validation=2,
                hyperparameters={**ONE_ITERATION, "algorithm": algorithm},
            )
            job = run_train(root)
            assert job.returncode == 0, job.log[-2000:]
            server = Server(root, Path(scratch) / f"{algorithm}.log")
            torchvision = Torchvision(args.torch_python, torch_model, SIZE, SIZE, 4, threads)
            try:
                server.wait_until_up()
                post(server.url, body), torchvision()
                ours, theirs = [], []
                for _ in range(args.repeats):
                    ours.append(post(server.url, body))
                    theirs.append(torchvision())
            finally:
                torchvision.close()
                server.stop()
            engine = next(
                (
                    line.split("Engine: ", 1)[1].split(" (")[0]
                    for line in (Path(scratch) / f"{algorithm}.log").read_text().splitlines()
                    if "Engine: " in line
                ),
                "?",
            )
            ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
            print(
                f"| {algorithm} | {engine} | {ours_median:.3f} | {theirs_median:.3f} | "
                f"{ours_median / theirs_median:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
