"""CPU forward latency per image: MXNet, MXNet + MKLDNN graph backend, ONNX Runtime (float32 and
the int8 copy serving prefers), torchvision.

All five run the same network (ResNet-50 dilated to output stride 8, FCN or DeepLabV3 head,
random weights, no aux head, softmax included) at batch 1 on exact input shapes, in one run, so
the ratios hold even on a noisy shared machine. Times are the median (and minimum) of
``--repeats`` rounds after one warm-up, the engines taking turns within each round, so that load
from other processes falls on all of them alike. torchvision runs in its own Python, because
PyTorch must not enter the product's environment; create it once with

    python3.11 -m venv /work/bench-venv-torch
    /work/bench-venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1

and pass ``--torch-python`` if it lives elsewhere (without it the torchvision column is left out).

    .venv/bin/python bench/onnx_engine.py [--models fcn,deeplab] [--sizes 480x480,1024x768] [--threads N]

MXNet takes its thread count from ``OMP_NUM_THREADS`` when it is imported; this script sets it to
``--threads`` first, so all engines run with the same number of threads.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from semseg.cpu_threads import usable_cpu_count


def _threads_argument(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
    return None


os.environ["OMP_NUM_THREADS"] = _threads_argument(sys.argv) or str(usable_cpu_count())

import mxnet as mx  # noqa: E402 - after OMP_NUM_THREADS
import numpy as np  # noqa: E402

from semseg import sample_data  # noqa: E402
from semseg.data.transforms import normalize  # noqa: E402
from semseg.inference.onnx_engine import cpu_session  # noqa: E402 (imports mxnet)
from semseg.model.export import Probabilities, export_block  # noqa: E402
from semseg.model.quantize import quantize_file  # noqa: E402

TORCHVISION_MODEL = {"fcn": "fcn_resnet50", "deeplab": "deeplabv3_resnet50"}
LABEL = {"fcn": "FCN-ResNet50", "deeplab": "DeepLabV3-ResNet50"}

# A CPU-only torch cannot load PyPI torchvision's detection operators: skip their registration
# module, as bench/train_speed.py does (segmentation never uses them).
TORCH_SCRIPT = r"""
import sys, time, types
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
import numpy, torch, torchvision
name, height, width, classes, threads = sys.argv[1], *map(int, sys.argv[2:6])
torch.set_num_threads(threads)
net = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None,
                                                     num_classes=classes, aux_loss=False).eval()
x = torch.from_numpy(numpy.random.RandomState(0).randn(1, 3, height, width).astype("float32"))
print(torch.__version__, flush=True)
with torch.inference_mode():
    for line in sys.stdin:  # one forward pass per line, its seconds answered on stdout
        start = time.perf_counter()
        torch.softmax(net(x)["out"], dim=1)
        print(time.perf_counter() - start, flush=True)
"""


class Torchvision:
    """torchvision's network in its own Python process, timed on request so runs can interleave."""

    def __init__(self, python: str, model: str, height: int, width: int, classes: int, threads: int):
        command = [
            python,
            "-c",
            TORCH_SCRIPT,
            TORCHVISION_MODEL[model],
            str(height),
            str(width),
            str(classes),
            str(threads),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.version = self.process.stdout.readline().strip()

    def __call__(self) -> float:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def gluoncv_network(model: str, height: int, width: int, classes: int, seed: int = 0) -> Probabilities:
    """The GluonCV network for an exact height x width input (``height=``/``width=`` as GluonCV allows)."""
    from gluoncv.model_zoo import FCN, DeepLabV3

    cls = {"fcn": FCN, "deeplab": DeepLabV3}[model]
    with contextlib.redirect_stdout(io.StringIO()):
        net = cls(
            classes,
            backbone="resnet50",
            aux=False,
            pretrained_base=False,
            height=height,
            width=width,
            crop_size=max(height, width),
        )
    mx.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.initialize(mx.init.Xavier(magnitude=2))
    return Probabilities(net)


def timed(run) -> Callable[[], float]:
    def once() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    return once


def mxnet_runner(block: Probabilities, x: np.ndarray, mkldnn: bool) -> Callable[[], float]:
    data = mx.nd.array(x)
    if mkldnn:
        block.optimize_for(data, backend="MKLDNN", static_alloc=True, static_shape=True)
    else:
        block.hybridize(static_alloc=True, static_shape=True)
    return timed(lambda: block(data).wait_to_read())


def onnx_runner(block: Probabilities, x: np.ndarray, threads: int, path: Path) -> Callable[[], float]:
    """The product's export and session settings, on an export of this exact shape."""
    export_block(block, x.shape[2], x.shape[3], path, {})
    session = cpu_session(path, threads)
    feed = {session.get_inputs()[0].name: x}
    return timed(lambda: session.run(None, feed))


def int8_runner(fp32_path: Path, x: np.ndarray, threads: int, path: Path) -> Callable[[], float]:
    """The int8 copy of the float32 export at ``fp32_path``, as training makes it."""
    rng = np.random.RandomState(5)
    height, width = x.shape[2:]
    calibration = (normalize(np.asarray(sample_data.make_pair(rng, width, height)[0])) for _ in range(4))
    quantize_file(fp32_path, path, calibration)
    session = cpu_session(path, threads)
    feed = {session.get_inputs()[0].name: x}
    return timed(lambda: session.run(None, feed))


def measure(runners: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """One warm-up each, then ``repeats`` rounds in which every runner runs once, in turn."""
    for run in runners.values():
        run()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            times[name].append(run())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="fcn,deeplab")
    parser.add_argument("--sizes", default="480x480,1024x768", help="WIDTHxHEIGHT, comma-separated")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=usable_cpu_count())
    parser.add_argument("--torch-python", default="/work/bench-venv-torch/bin/python")
    args = parser.parse_args()
    have_torch = Path(args.torch_python).exists()

    print(
        f"# machine: {platform.processor() or platform.machine()}, {usable_cpu_count()} cores available, "
        f"load average {os.getloadavg()[0]:.1f}; {args.threads} threads per engine; batch 1, fp32, random weights, "
        f"{args.classes} classes; engines interleaved, {args.repeats} rounds after 1 warm-up each; "
        f"median and (min) seconds"
    )
    print(
        f"# mxnet {mx.__version__} (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}), "
        f"onnxruntime {__import__('onnxruntime').__version__}, torchvision python: "
        f"{args.torch_python if have_torch else 'not found, column skipped'}"
    )
    header = (
        "model",
        "size",
        "mxnet hybridized",
        "mxnet+MKLDNN",
        "onnxruntime",
        "onnxruntime int8",
        "torchvision",
        "ort/torchvision median (min)",
        "ort int8/torchvision median (min)",
        "ort int8/ort",
        "best mxnet/torchvision median",
        "ort/best mxnet median",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model in args.models.split(","):
        for size in args.sizes.split(","):
            width, height = map(int, size.lower().split("x"))
            x = np.random.RandomState(0).randn(1, 3, height, width).astype(np.float32)
            torch = None
            with tempfile.TemporaryDirectory() as scratch:
                runners = {
                    "mxnet": mxnet_runner(gluoncv_network(model, height, width, args.classes), x, False),
                    "mkldnn": mxnet_runner(gluoncv_network(model, height, width, args.classes), x, True),
                    "onnx": onnx_runner(
                        gluoncv_network(model, height, width, args.classes),
                        x,
                        args.threads,
                        Path(scratch) / "model.onnx",
                    ),
                }
                runners["int8"] = int8_runner(
                    Path(scratch) / "model.onnx", x, args.threads, Path(scratch) / "int8.onnx"
                )
                if have_torch:
                    torch = Torchvision(args.torch_python, model, height, width, args.classes, args.threads)
                    runners["torch"] = torch
                times = measure(runners, args.repeats)
            if torch:
                torch.close()
            med = {k: statistics.median(v) for k, v in times.items()}
            low = {k: min(v) for k, v in times.items()}

            def cell(name, med=med, low=low):
                return f"{med[name]:.3f} ({low[name]:.3f})" if name in med else "-"

            def ratio(a, b, med=med, low=low):
                if a not in med or b not in med:
                    return "-"
                return f"{med[a] / med[b]:.2f} ({low[a] / low[b]:.2f})"

            best = "mxnet" if med["mxnet"] <= med["mkldnn"] else "mkldnn"
            cells = (
                LABEL[model],
                f"{width}x{height}",
                cell("mxnet"),
                cell("mkldnn"),
                cell("onnx"),
                cell("int8"),
                cell("torch"),
                ratio("onnx", "torch"),
                ratio("int8", "torch"),
                ratio("int8", "onnx"),
                ratio(best, "torch"),
                ratio("onnx", best),
            )
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
