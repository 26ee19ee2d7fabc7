"""Where one training step's time goes: MXNet's profiler on ours against torch.profiler on torchvision's.

One FCN-ResNet-50 training step (batch 2, crop 240, aux head, random data, SGD) after two warm-up
steps, in our configuration ``--configuration`` (built by the product's ``parts.build``) and in
torchvision's ``fcn_resnet50`` (its own Python, as in ``bench/train_speed.py``). Each profiler's
per-operator self times are summed into the same categories (convolution forward and backward,
BatchNorm, elementwise, casts and copies, resize, loss, optimizer), printed as shares of the step
and as seconds, followed by the top operators of each.

    .venv/bin/python bench/train_profile.py [--configuration "hybrid bfloat16"] [--torch-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

from train_speed import CONFIGURATIONS, TORCH_SCRIPT  # noqa: E402

from semseg.cpu_threads import usable_cpu_count  # noqa: E402

# Lower-cased operator names, first match wins; names are MXNet's and PyTorch's (aten::, mkldnn).
CATEGORIES = [
    ("convolution backward", r"backward.*conv|conv.*backward|_backward_convolution"),
    ("convolution forward", r"conv"),
    ("batchnorm", r"batch_?norm"),
    ("loss (softmax, cross-entropy)", r"softmax|nll|cross_entropy|pick|log_softmax"),
    ("resize", r"bilinear|upsample|resize"),
    ("casts and copies", r"cast|copy|to_dense|reorder|_to|contiguous|clone"),
    ("optimizer", r"sgd|adam|update|mom"),
    ("elementwise and other", r"."),
]

TORCH_PROFILE = (
    TORCH_SCRIPT.split("for line in sys.stdin")[0]
    + r"""
from torch.profiler import profile, ProfilerActivity
def step():
    out = net(x)
    loss = loss_of(out["out"], y) + 0.5 * loss_of(out["aux"], y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
step(); step()
start = time.perf_counter()
with profile(activities=[ProfilerActivity.CPU]) as p:
    step()
wall = time.perf_counter() - start
rows = [(e.key, e.self_cpu_time_total / 1e6) for e in p.key_averages()]
print(json.dumps({"wall": wall, "ops": rows}))
"""
).replace("import sys, time, types", "import sys, time, types, json")


def mxnet_profile(configuration: str) -> dict:
    """Run in a worker process: our step profiled by MXNet's profiler, per operator self seconds."""
    from semseg import cpu_threads, hyperparameters

    cpu_threads.set_math_threads()  # as ``train`` does, before mxnet is imported
    import mxnet as mx

    from semseg.logs import setup_logging
    from semseg.train import loop, parts
    from semseg.train.stop import StopFlag

    setup_logging(level=40)
    hp = hyperparameters.parse(
        {
            "algorithm": "fcn",
            "num_classes": "4",
            "num_training_samples": "2",
            "crop_size": "240",
            "base_size": "480",
            "mini_batch_size": "2",
            "use_pretrained_model": "False",
            **CONFIGURATIONS[configuration],
        }
    )
    training = parts.build(hp, StopFlag(), None, 3)
    images = mx.nd.random.uniform(shape=(2, 3, 240, 240))
    labels = mx.nd.floor(mx.nd.random.uniform(0, 4, shape=(2, 240, 240)))
    for _ in range(2):
        loop.train_step(training, images, labels)
    mx.nd.waitall()
    with tempfile.TemporaryDirectory() as scratch:
        mx.profiler.set_config(
            profile_symbolic=True,
            profile_imperative=True,
            profile_memory=False,
            profile_api=False,
            aggregate_stats=True,
            filename=os.path.join(scratch, "profile.json"),
        )
        import time

        start = time.perf_counter()
        mx.profiler.set_state("run")
        loop.train_step(training, images, labels)
        mx.nd.waitall()
        mx.profiler.set_state("stop")
        wall = time.perf_counter() - start
        table = json.loads(mx.profiler.dumps(format="json", reset=True))
    rows = []
    for domain in table.get("Time", {}).values():
        for name, stats in domain.items():
            rows.append((name, stats["Total"] / 1e3))  # milliseconds
    return {"wall": wall, "ops": rows, "precision": training.precision.dtype}


def categorize(rows: list) -> dict[str, float]:
    totals = {name: 0.0 for name, _ in CATEGORIES}
    for op, seconds in rows:
        for name, pattern in CATEGORIES:
            if re.search(pattern, op.lower()):
                totals[name] += seconds
                break
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configuration", default="hybrid bfloat16", choices=list(CONFIGURATIONS))
    parser.add_argument("--torch-python", default="/work/bench-venv-torch/bin/python")
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(mxnet_profile(args.configuration)), flush=True)
        return
    threads = str(usable_cpu_count())
    unbulked = {**os.environ, "MXNET_EXEC_BULK_EXEC_TRAIN": "0", "MXNET_EXEC_BULK_EXEC_INFERENCE": "0"}
    ours_run = subprocess.run(  # without bulking, so the profiler times each operator, not runs of them
        [sys.executable, __file__, "--worker", "--configuration", args.configuration],
        env=unbulked,
        capture_output=True,
        text=True,
        check=True,
    )
    ours = json.loads(next(line[7:] for line in ours_run.stdout.splitlines() if line.startswith("RESULT ")))
    command = [args.torch_python, "-c", TORCH_PROFILE, "fcn_resnet50", "2", "240", "4", threads]
    theirs_run = subprocess.run(command, capture_output=True, text=True, check=True)
    theirs = json.loads(theirs_run.stdout.strip().splitlines()[-1])
    print(f"load average {os.getloadavg()[0]:.1f}; one FCN-ResNet-50 step, batch 2, crop 240, {threads} threads")
    print(f"ours ({args.configuration}, computes in {ours['precision']}): {ours['wall']:.2f} s wall")
    print(f"torchvision: {theirs['wall']:.2f} s wall")
    mine, yours = categorize(ours["ops"]), categorize(theirs["ops"])
    total_mine, total_yours = sum(mine.values()) or 1.0, sum(yours.values()) or 1.0
    print("| category | ours s | ours share | torchvision s | torchvision share |")
    print("|---|---|---|---|---|")
    for name, _ in CATEGORIES:
        print(
            f"| {name} | {mine[name]:.2f} | {100 * mine[name] / total_mine:.0f}% | {yours[name]:.2f} | "
            f"{100 * yours[name] / total_yours:.0f}% |"
        )
    print(f"| operator time summed | {total_mine:.2f} | | {total_yours:.2f} | |")
    for label, rows in (("ours", ours["ops"]), ("torchvision", theirs["ops"])):
        top = sorted(rows, key=lambda row: -row[1])[: args.top]
        print(f"top operators, {label}: " + ", ".join(f"{op} {seconds:.2f}s" for op, seconds in top))


if __name__ == "__main__":
    main()
