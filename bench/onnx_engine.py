"""CPU forward latency per image: MXNet, MXNet + MKLDNN graph backend, ONNX Runtime, torchvision.

All four run the same network (ResNet-50 dilated to output stride 8, FCN or DeepLabV3 head,
random weights, no aux head, softmax included) at batch 1 on exact input shapes, in one run, so
the ratios hold even on a noisy shared machine. Times are the median of ``--repeats`` runs after
one warm-up. torchvision runs in its own Python, because PyTorch must not enter the product's
environment; create it once with

    python3.11 -m venv /work/bench-venv-torch
    /work/bench-venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1

and pass ``--torch-python`` if it lives elsewhere (without it the torchvision column is left out).

    .venv/bin/python bench/onnx_engine.py [--models fcn,deeplab] [--sizes 480x480,1024x768]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np

from semseg.inference.onnx_engine import available_cores, cpu_session
from semseg.model.export import export_block

TORCHVISION_MODEL = {"fcn": "fcn_resnet50", "deeplab": "deeplabv3_resnet50"}
LABEL = {"fcn": "FCN-ResNet50", "deeplab": "DeepLabV3-ResNet50"}

TORCH_SCRIPT = r"""
import json, statistics, sys, time
import torch, torchvision
name, height, width, classes, repeats, threads = sys.argv[1], *map(int, sys.argv[2:7])
torch.set_num_threads(threads)
net = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None,
                                                     num_classes=classes, aux_loss=False).eval()
x = torch.from_numpy(__import__("numpy").random.RandomState(0).randn(1, 3, height, width).astype("float32"))
times = []
with torch.inference_mode():
    for i in range(repeats + 1):
        start = time.perf_counter()
        torch.softmax(net(x)["out"], dim=1)
        times.append(time.perf_counter() - start)
print(json.dumps({"median": statistics.median(times[1:]), "version": torch.__version__}))
"""


class Probabilities(mx.gluon.HybridBlock):
    def __init__(self, net):
        super().__init__()
        with self.name_scope():
            self.net = net

    def hybrid_forward(self, F, x):
        return F.softmax(self.net(x)[0], axis=1)


def gluoncv_network(model: str, height: int, width: int, classes: int, seed: int = 0) -> Probabilities:
    """The GluonCV network for an exact height x width input (``height=``/``width=`` as GluonCV allows)."""
    from gluoncv.model_zoo import FCN, DeepLabV3

    cls = {"fcn": FCN, "deeplab": DeepLabV3}[model]
    with contextlib.redirect_stdout(io.StringIO()):
        net = cls(classes, backbone="resnet50", aux=False, pretrained_base=False, height=height, width=width,
                  crop_size=max(height, width))
    mx.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.initialize(mx.init.Xavier(magnitude=2))
    return Probabilities(net)


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def bench_mxnet(block: Probabilities, x: np.ndarray, repeats: int, mkldnn: bool) -> float:
    data = mx.nd.array(x)
    if mkldnn:
        block.optimize_for(data, backend="MKLDNN", static_alloc=True, static_shape=True)
    else:
        block.hybridize(static_alloc=True, static_shape=True)
    return median_seconds(lambda: block(data).wait_to_read(), repeats)


def bench_onnx(block: Probabilities, x: np.ndarray, repeats: int, threads: int, scratch: Path) -> float:
    """The product's export and session settings, on an export of this exact shape."""
    path = scratch / "model.onnx"
    export_block(block, x.shape[2], x.shape[3], path, {})
    session = cpu_session(path, threads)
    feed = {session.get_inputs()[0].name: x}
    return median_seconds(lambda: session.run(None, feed), repeats)


def bench_torchvision(python: str, model: str, height: int, width: int, classes: int, repeats: int,
                      threads: int) -> float | None:
    command = [python, "-c", TORCH_SCRIPT, TORCHVISION_MODEL[model], str(height), str(width), str(classes),
               str(repeats), str(threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        print(f"torchvision failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])["median"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="fcn,deeplab")
    parser.add_argument("--sizes", default="480x480,1024x768", help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--torch-python", default="/work/bench-venv-torch/bin/python")
    args = parser.parse_args()
    have_torch = Path(args.torch_python).exists()

    print(f"# machine: {platform.processor() or platform.machine()}, {available_cores()} cores available, "
          f"{args.threads} threads per engine; batch 1, fp32, random weights, {args.classes} classes, "
          f"median of {args.repeats} after 1 warm-up")
    print(f"# mxnet {mx.__version__} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
          f"onnxruntime {__import__('onnxruntime').__version__}, torchvision python: "
          f"{args.torch_python if have_torch else 'not found, column skipped'}")
    header = ("model", "size", "mxnet hybridized s", "mxnet+MKLDNN s", "onnxruntime s", "torchvision s",
              "ort/torchvision", "best mxnet/torchvision", "ort/mxnet")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    x_cache = {}
    for model in args.models.split(","):
        for size in args.sizes.split(","):
            width, height = map(int, size.lower().split("x"))
            x = x_cache.setdefault((height, width),
                                   np.random.RandomState(0).randn(1, 3, height, width).astype(np.float32))
            hybrid = bench_mxnet(gluoncv_network(model, height, width, args.classes), x, args.repeats, False)
            mkldnn = bench_mxnet(gluoncv_network(model, height, width, args.classes), x, args.repeats, True)
            with tempfile.TemporaryDirectory() as scratch:
                ort_s = bench_onnx(gluoncv_network(model, height, width, args.classes), x, args.repeats,
                                   args.threads, Path(scratch))
            torch_s = (bench_torchvision(args.torch_python, model, height, width, args.classes, args.repeats,
                                         args.threads) if have_torch else None)

            def ratio(a, b):
                return f"{a / b:.2f}" if a and b else "-"

            cells = (LABEL[model], f"{width}x{height}", f"{hybrid:.3f}", f"{mkldnn:.3f}", f"{ort_s:.3f}",
                     f"{torch_s:.3f}" if torch_s else "-", ratio(ort_s, torch_s),
                     ratio(min(hybrid, mkldnn), torch_s), ratio(ort_s, min(hybrid, mkldnn)))
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
