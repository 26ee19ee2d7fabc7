"""Training speed per configuration (``_hybrid``, ``precision_dtype``) against torchvision's training step.

Method: a synthetic File-mode dataset of 320x240 JPEGs (semseg.sample_data) under a temporary
/opt/ml tree. Each configuration of ours runs in its own worker process (AMP changes MXNet's
operators process-wide) built by the product's own ``parts.build`` and fed by its real loader,
ResNet-50 with random weights, aux head, the default loss and SGD. torchvision's
``fcn_resnet50`` and ``deeplabv3_resnet50`` (aux head, cross-entropy + 0.5 aux, SGD) run their
training step on random tensors of the same batch and crop in their own Python, because PyTorch
must not enter the product's environment; create it once with

    python3.11 -m venv /work/bench-venv-torch
    /work/bench-venv-torch/bin/pip install torch==2.13.0 torchvision==0.28.0  # or a CPU-only torch 2.13.0

Every worker first runs one unmeasured epoch (graph building, oneDNN primitive creation), then
the workers take turns, one measured epoch of ``--steps`` iterations each per round (A B C A B C),
so that load from other processes falls on all alike. Images/s is the median over the rounds of
each epoch's images / wall time, data waits included; "data wait" is the loader's share of it.

    .venv/bin/python bench/train_speed.py [--algorithm fcn] [--steps 3] [--rounds 3] [--crop 240] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from semseg.cpu_threads import usable_cpu_count

# The loop before train set the thread count: always hybridized, float32, and MXNet's own thread count (``train``
# did not set OMP_NUM_THREADS, so MXNet took half of the CPUs; see semseg.cpu_threads).
BEFORE = "hybrid float32 on MXNet's threads"
CONFIGURATIONS = {  # name -> the hyperparameters that make it; all but BEFORE on train's thread count
    BEFORE: {"_hybrid": "true", "precision_dtype": "float32"},
    "imperative float32": {"_hybrid": "false", "precision_dtype": "float32"},
    "hybrid float32": {"_hybrid": "true", "precision_dtype": "float32"},
    "imperative bfloat16": {"_hybrid": "false", "precision_dtype": "bfloat16"},
    "hybrid bfloat16": {"_hybrid": "true", "precision_dtype": "bfloat16"},
}
BASELINE = BEFORE
TORCHVISION_MODELS = {"fcn": "fcn_resnet50", "deeplab": "deeplabv3_resnet50"}

# With a CPU-only torch, PyPI's torchvision cannot load its compiled detection operators (it links
# CUDA torch) and fails on import registering their shapes; segmentation never uses them, so the
# script skips that registration module.
TORCH_SCRIPT = r"""
import sys, time, types
sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
import torch, torchvision
name, batch, crop, classes, threads = sys.argv[1], *map(int, sys.argv[2:6])
torch.set_num_threads(threads)
torch.manual_seed(0)
net = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None,
                                                     num_classes=classes, aux_loss=True).train()
optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9, weight_decay=1e-4)
loss_of = torch.nn.CrossEntropyLoss(ignore_index=-1)
x = torch.rand(batch, 3, crop, crop)
y = torch.randint(0, classes, (batch, crop, crop))
print(torch.__version__, flush=True)
for line in sys.stdin:  # "STEPS": that many training steps, their seconds answered on stdout
    start = time.perf_counter()
    for _ in range(int(line)):
        out = net(x)
        loss = loss_of(out["out"], y) + 0.5 * loss_of(out["aux"], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(time.perf_counter() - start, flush=True)
"""


def worker(configuration: str, algorithm: str, steps: int, crop: int, batch: int) -> None:
    """One configuration of ours: answers each line of stdin with one epoch's images/s and data wait."""
    from semseg import cpu_threads

    if configuration == BEFORE:
        os.environ.pop(cpu_threads.VARIABLE, None)
    else:
        cpu_threads.set_math_threads()  # as ``train`` does, before mxnet is imported
    from semseg import hyperparameters
    from semseg.data.loaders import data_splits
    from semseg.logs import setup_logging
    from semseg.train import loop, parts
    from semseg.train.stop import StopFlag

    setup_logging(level=40)
    hp = hyperparameters.parse(
        {
            "algorithm": algorithm,
            "num_classes": "4",
            "num_training_samples": str(steps * batch),
            "crop_size": str(crop),
            "base_size": str(crop * 2),
            "mini_batch_size": str(batch),
            "use_pretrained_model": "False",
            "_workers": str(usable_cpu_count()),
            "_logging_frequency": "1000",
            **CONFIGURATIONS[configuration],
        }
    )
    splits = data_splits(hp, {}, seed=0)
    training = parts.build(hp, StopFlag(), None, steps)
    threads = os.environ.get(cpu_threads.VARIABLE, "MXNet's")
    print(json.dumps({"precision": f"{training.precision.dtype}, {threads} threads"}), flush=True)
    try:
        for epoch, _ in enumerate(sys.stdin):
            stats = loop.train_one_epoch(training, splits.train_loader, epoch, epoch * steps)
            print(json.dumps({"images_per_second": stats.throughput, "data_wait": stats.data_wait}), flush=True)
    finally:
        splits.close()


class Engine:
    """A worker process, measured one epoch (ours) or ``steps`` steps (torchvision) per request."""

    def __init__(self, name: str, command: list[str], env: dict, steps: int, batch: int, torch: bool):
        self.name, self.steps, self.batch, self.torch = name, steps, batch, torch
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        first = self._answer()
        self.detail = first.strip() if torch else json.loads(first)["precision"]
        self.speeds: list[float] = []
        self.waits: list[float] = []

    def run(self, measured: bool = True) -> None:
        self.process.stdin.write(f"{self.steps}\n")
        self.process.stdin.flush()
        answer = self._answer()
        if self.torch:
            speed, wait = self.steps * self.batch / float(answer), 0.0
        else:
            result = json.loads(answer)
            speed, wait = result["images_per_second"], result["data_wait"]
        if measured:
            self.speeds.append(speed)
            self.waits.append(wait)

    def _answer(self) -> str:
        """The worker's next answer (GluonCV's PSPNet prints a line of its own when built)."""
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} ended early")
            if self.torch or line.startswith("{"):
                return line

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="fcn", choices=("fcn", "psp", "deeplab"))
    parser.add_argument("--steps", type=int, default=3, help="iterations per measured epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crop", type=int, default=240)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS), help="comma-separated names")
    parser.add_argument("--torch-python", default="/work/bench-venv-torch/bin/python")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.algorithm, args.steps, args.crop, args.batch)
        return

    from semseg.sample_data import write_opt_ml_tree

    threads = usable_cpu_count()
    engines: list[Engine] = []
    with tempfile.TemporaryDirectory() as root:
        write_opt_ml_tree(root, train=16, validation=2, sizes=((320, 240),))
        env = {**os.environ, "SAGEMAKER_BASE_DIR": root}
        sizes = ["--algorithm", args.algorithm, "--steps", str(args.steps), "--crop", str(args.crop)]
        sizes += ["--batch", str(args.batch)]
        try:
            for name in args.configurations.split(","):
                command = [sys.executable, __file__, "--worker", name, *sizes]
                engines.append(Engine(name, command, env, args.steps, args.batch, torch=False))
            if Path(args.torch_python).exists():
                for algorithm in ("fcn", "deeplab"):
                    model = TORCHVISION_MODELS[algorithm]
                    command = [args.torch_python, "-c", TORCH_SCRIPT, model, str(args.batch), str(args.crop), "4"]
                    engines.append(
                        Engine(f"torchvision {model}", [*command, str(threads)], env, args.steps, args.batch, True)
                    )
            for engine in engines:
                engine.run(measured=False)
            for _ in range(args.rounds):
                for engine in engines:
                    engine.run()
        finally:
            for engine in engines:
                engine.close()
    report(engines, args, threads)


def report(engines: list[Engine], args, threads: int) -> None:
    import mxnet as mx

    print(
        f"machine: {platform.processor() or platform.machine()}, {threads} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}, MXNet {mx.__version__}; {args.algorithm}-resnet50, crop {args.crop}, "
        f"batch {args.batch}, {args.rounds} rounds of {args.steps} measured steps, median over rounds"
    )
    medians = {engine.name: statistics.median(engine.speeds) for engine in engines}
    base = medians.get(BASELINE)
    print(f"| {'configuration':<30} | computes in | images/s | s/step | data wait | vs {BASELINE} |")
    print("|---|---|---|---|---|---|")
    for engine in engines:
        speed = medians[engine.name]
        ratio = f"{speed / base:.2f}x" if base else "-"
        wait = "-" if engine.torch else f"{100 * statistics.median(engine.waits):.1f}%"
        computes = f"torch {engine.detail}" if engine.torch else engine.detail
        print(f"| {engine.name:<30} | {computes} | {speed:.3f} | {args.batch / speed:.2f} | {wait} | {ratio} |")
    print("each round's images/s:", {engine.name: [round(s, 3) for s in engine.speeds] for engine in engines})


if __name__ == "__main__":
    main()
