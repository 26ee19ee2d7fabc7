"""Losses on imbalanced tasks: per-class IoU and mIoU after the same number of steps, per setting.

Two tasks, each on textured canvases (class 0, the canvas), FCN-ResNet-50 from scratch, Adam,
learning rate 0.002, as a new user would start:

- ``spots`` (default): one or two large patches (classes 1 and 2, by hue) and one to three small
  dark-red spots (class 3, about 0.5% of the pixels): a defect-like rare class that is easy to see.
- ``digits``: digits 0-9 (classes 1-10) drawn with a scalable font, the canvas about 96% of the
  pixels and each digit class under 0.5%: shape, not colour, tells the classes apart.

Each row is one real ``train`` job on the same data with the same seed and steps; the per-class IoU
is the last epoch's (``metrics.json`` history).

    .venv/bin/python bench/losses.py                       # the loss table on spots (8 jobs)
    .venv/bin/python bench/losses.py --table guards        # clip_gradient / lr_warmup_epochs (3 jobs)
    .venv/bin/python bench/losses.py --task digits --epochs 6 --train 160
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
from harness.trainjob import TRAIN
from PIL import Image, ImageDraw, ImageFont

from semseg import paths
from semseg.sample_data import write_opt_ml_tree

CANVAS = 80

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
    "guards": [  # the defaults' row is the first of the loss table
        {"clip_gradient": "1.0"},
        {"lr_warmup_epochs": "1"},
        {"clip_gradient": "1.0", "lr_warmup_epochs": "1"},
    ],
}


def canvas(rng: np.random.RandomState) -> Image.Image:
    """Blocky colour texture plus pixel noise: the background class."""
    texture = rng.normal(0, 1, size=(CANVAS // 8, CANVAS // 8, 3))
    texture = np.kron(texture, np.ones((8, 8, 1))) * 20 + rng.normal(0, 12, size=(CANVAS, CANVAS, 3))
    return Image.fromarray(np.clip(150 + texture, 0, 255).astype(np.uint8))


def spots_pair(rng: np.random.RandomState) -> tuple[Image.Image, Image.Image]:
    """One or two large patches (classes 1, 2) and one to three small spots (class 3)."""
    image, mask = canvas(rng), Image.new("L", (CANVAS, CANVAS), 0)
    draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(rng.randint(1, 3)):
        cls, size = int(rng.randint(1, 3)), int(rng.randint(24, 44))
        x, y = (int(v) for v in rng.randint(0, CANVAS - size, size=2))
        colour = (60, 170, 70) if cls == 1 else (60, 80, 200)
        draw_image.rectangle([x, y, x + size, y + size], fill=colour)
        draw_mask.rectangle([x, y, x + size, y + size], fill=cls)
    for _ in range(rng.randint(1, 3)):
        radius = int(rng.randint(2, 4))
        x, y = (int(v) for v in rng.randint(radius, CANVAS - radius, size=2))
        box = [x - radius, y - radius, x + radius, y + radius]
        draw_image.ellipse(box, fill=(150, 20, 30))
        draw_mask.ellipse(box, fill=3)
    return image, mask


def digit_pair(rng: np.random.RandomState, font_sizes=(22, 30)) -> tuple[Image.Image, Image.Image]:
    """A textured canvas with one or two digits; the mask holds 1 + the digit where it is drawn."""
    image = canvas(rng)
    mask = Image.new("L", (CANVAS, CANVAS), 0)
    for _ in range(rng.randint(1, 3)):
        digit = int(rng.randint(0, 10))
        font = ImageFont.load_default(size=int(rng.randint(*font_sizes)))
        x, y = (int(v) for v in rng.randint(0, CANVAS - font_sizes[1], size=2))
        ink = tuple(int(v) for v in rng.randint(0, 70, size=3))
        glyph = Image.new("L", (CANVAS, CANVAS), 0)
        ImageDraw.Draw(glyph).text((x, y), str(digit), fill=255, font=font, stroke_width=1)
        stroke = np.asarray(glyph) > 127
        pixels = np.asarray(image).copy()
        pixels[stroke] = ink
        image = Image.fromarray(pixels)
        mask_array = np.asarray(mask).copy()
        mask_array[stroke] = digit + 1
        mask = Image.fromarray(mask_array)
    return image, mask


TASKS = {"spots": (4, spots_pair), "digits": (11, digit_pair)}  # name: (num_classes, pair maker)


def write_task(task: str, root: Path, train: int, validation: int, hyperparameters: dict) -> Path:
    """The sample task's /opt/ml tree, its images and masks replaced by ``task``'s."""
    make_pair = TASKS[task][1]
    root = write_opt_ml_tree(root, train=train, validation=validation, hyperparameters=hyperparameters)
    rng = np.random.RandomState(0)
    for split in ("train", "validation"):
        images, masks = paths.channel_dir(split, base=root), paths.channel_dir(f"{split}_annotation", base=root)
        for image_path in sorted(images.glob("*.jpg")):
            image, mask = make_pair(rng)
            image.save(image_path, quality=95)
            mask.save(masks / f"{image_path.stem}.png")
    return root


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
    args = parser.parse_args()
    steps = args.epochs * (args.train // int(BASE["mini_batch_size"]))
    num_classes = TASKS[args.task][0]
    print(f"{args.task} task, {args.train} train / {args.validation} validation images, {args.epochs} epochs", end="")
    print(f", {steps} steps")
    rows = []
    for setting in TABLES[args.table]:
        hyperparameters = {
            **BASE,
            **setting,
            "num_classes": str(num_classes),
            "epochs": str(args.epochs),
            "num_training_samples": str(args.train),
        }
        with tempfile.TemporaryDirectory(prefix="bench-losses-") as scratch:
            root = write_task(args.task, Path(scratch), args.train, args.validation, hyperparameters)
            if rows == []:
                counts = np.zeros(num_classes, dtype=np.int64)
                for mask in paths.channel_dir("train_annotation", base=root).glob("*.png"):
                    counts += np.bincount(np.asarray(Image.open(mask)).ravel(), minlength=num_classes)
                shares = ", ".join(f"{100 * c / counts.sum():.2f}" for c in counts)
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
