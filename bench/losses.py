"""Losses on imbalanced tasks: per-class IoU and mIoU after the same number of steps, per setting.

The synthetic tasks of ``tests/harness/tasks.py`` (``spots``, the default, ``digits``, ``sample``...),
FCN-ResNet-50 from scratch, Adam, learning rate 0.002, as a new user would start.

Each row is one real ``train`` job on the same data with the same seed and steps; the per-class IoU
is the last epoch's (``metrics.json`` history).

    .venv/bin/python bench/losses.py                       # the loss table on spots (8 jobs)
    .venv/bin/python bench/losses.py --table guards        # clip_gradient / lr_warmup_epochs (3 jobs)
    .venv/bin/python bench/losses.py --table weights --task sample   # the class_weights rules (4 jobs)
    .venv/bin/python bench/losses.py --task digits --epochs 6 --train 160
    .venv/bin/python bench/losses.py --table schedule --task digits --train 160 --model unet:resnet-18
    .venv/bin/python bench/losses.py --table weights --model unet:resnet-18   # a model that can draw spots
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from harness.tasks import CANVAS, TASKS, class_shares, write_task
from harness.trainjob import TRAIN

from semseg import paths

BASE = {
    "algorithm": "fcn",
    "backbone": "resnet-50",
    "use_pretrained_model": "False",
    "crop_size": "64",
    "base_size": str(CANVAS),
    "mini_batch_size": "4",
    "validation_mini_batch_size": "8",
    "optimizer": "adam",
    "learning_rate": "0.002",
    "_workers": "1",
}

TABLES = {
    "losses": [
        {"loss": loss, "class_weights": weights}
        for loss in ("cross_entropy", "focal", "dice", "cross_entropy+dice")
        for weights in ("none", "auto")
    ],
    "weights": [
        {"class_weights": rule} for rule in ("none", "median_frequency", "sqrt_median_frequency", "log_inverse")
    ],
    "schedule": [  # what makes a shape task (digits) learn: the step size, warm-up, the optimizer
        {},
        {"learning_rate": "0.0005"},
        {"lr_warmup_epochs": "2"},
        {"optimizer": "sgd", "learning_rate": "0.01"},
    ],
    "guards": [  # the defaults' row is the first of the loss table
        {"clip_gradient": "1.0"},
        {"lr_warmup_epochs": "1"},
        {"clip_gradient": "1.0", "lr_warmup_epochs": "1"},
    ],
}


def run_job(root: Path, timeout: float) -> tuple[int, float]:
    start = time.time()
    with open(root / "train.log", "w") as log:
        env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root)}
        code = subprocess.run([TRAIN], env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
    return code, time.time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", choices=sorted(TABLES), default="losses")
    parser.add_argument("--task", choices=sorted(TASKS), default="spots")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=80)
    parser.add_argument("--validation", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--model", default="fcn:resnet-50", help="algorithm:backbone")
    args = parser.parse_args()
    algorithm, _, backbone = args.model.partition(":")
    steps = args.epochs * (args.train // int(BASE["mini_batch_size"]))
    num_classes = TASKS[args.task][0]
    print(f"{args.model}, {args.task} task, {args.train} train / {args.validation} validation images", end="")
    print(f", {args.epochs} epochs, {steps} steps")
    rows = []
    for setting in TABLES[args.table]:
        hyperparameters = {
            **BASE,
            "algorithm": algorithm,
            "backbone": backbone or BASE["backbone"],
            **setting,
            "epochs": str(args.epochs),
        }
        with tempfile.TemporaryDirectory(prefix="bench-losses-") as scratch:
            root = write_task(args.task, Path(scratch), args.train, args.validation, hyperparameters)
            if rows == []:
                shares = ", ".join(f"{100 * c:.2f}" for c in class_shares(root, num_classes))
                print(f"pixel share per class (%): {shares}", flush=True)
            code, seconds = run_job(root, args.timeout)
            metrics_path = paths.output_data_dir(base=root) / "metrics.json"
            history = json.loads(metrics_path.read_text())["history"] if metrics_path.exists() else []
            last = history[-1] if history else {}
            iou = last.get("per_class_iou", [float("nan")] * num_classes)
            name = ", ".join(f"{k}={v}" for k, v in setting.items()) or "defaults"
            rows.append((name, code, seconds, last.get("mIOU", float("nan")), [h["mIOU"] for h in history], iou))
            print(f"{name}: exit {code}, {seconds:.0f} s, mIoU per epoch {[round(h['mIOU'], 3) for h in history]}")
            if code != 0:
                print((root / "train.log").read_text()[-1500:])
            print(f"  per-class IoU: {' '.join(f'{v:.2f}' for v in iou)}", flush=True)
    print()
    header = f"{'setting':44s} {'exit':>4s} {'s':>5s} {'mIoU':>6s} {'rare':>6s}  per-class IoU (canvas first)"
    print(header)
    for name, code, seconds, miou, _, iou in rows:
        rare = float(iou[-1]) if args.task == "spots" else float(np.mean(iou[1:]))  # the spots, or the digits
        print(f"{name:44s} {code:4d} {seconds:5.0f} {miou:6.3f} {rare:6.3f}  {' '.join(f'{v:.2f}' for v in iou)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
