"""Losses on an imbalanced task: per-class IoU and mIoU after the same number of steps, per setting.

The task: digits 0-9 (classes 1-10) drawn with a scalable font on textured canvases, class 0 the
canvas (about 97% of the pixels; each digit class well under 1%). FCN-ResNet-50 from scratch, Adam,
learning rate 0.002, as a new user would start. Each row is one real ``train`` job on the same data
with the same seed and steps; the per-class IoU is the last epoch's (``metrics.json`` history).

    .venv/bin/python bench/losses.py                       # the loss table (8 jobs)
    .venv/bin/python bench/losses.py --table guards        # clip_gradient / lr_warmup_epochs (3 jobs)
    .venv/bin/python bench/losses.py --epochs 2 --train 16 # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from semseg import paths
from semseg.sample_data import write_opt_ml_tree

NUM_CLASSES = 11  # canvas + ten digits
CANVAS = 80
TRAIN = str(Path(sys.executable).parent / "train")

BASE = {
    "algorithm": "fcn",
    "backbone": "resnet-50",
    "use_pretrained_model": "False",
    "num_classes": str(NUM_CLASSES),
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


def digit_pair(rng: np.random.RandomState, font_sizes=(22, 30)) -> tuple[Image.Image, Image.Image]:
    """A textured canvas with one or two digits; the mask holds 1 + the digit where it is drawn."""
    texture = rng.normal(0, 1, size=(CANVAS // 8, CANVAS // 8, 3))
    texture = np.kron(texture, np.ones((8, 8, 1))) * 20 + rng.normal(0, 12, size=(CANVAS, CANVAS, 3))
    image = Image.fromarray(np.clip(150 + texture, 0, 255).astype(np.uint8))
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


def write_digits(root: Path, train: int, validation: int, hyperparameters: dict) -> Path:
    """The sample task's /opt/ml tree, its images and masks replaced by the digits task's."""
    root = write_opt_ml_tree(root, train=train, validation=validation, hyperparameters=hyperparameters)
    rng = np.random.RandomState(0)
    for split in ("train", "validation"):
        images, masks = paths.channel_dir(split, base=root), paths.channel_dir(f"{split}_annotation", base=root)
        for image_path in sorted(images.glob("*.jpg")):
            image, mask = digit_pair(rng)
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
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--validation", type=int, default=48)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    steps = args.epochs * (args.train // int(BASE["mini_batch_size"]))
    print(f"digits task, {args.train} train / {args.validation} validation images, {args.epochs} epochs, {steps} steps")
    rows = []
    for setting in TABLES[args.table]:
        hyperparameters = {**BASE, **setting, "epochs": str(args.epochs), "num_training_samples": str(args.train)}
        with tempfile.TemporaryDirectory(prefix="bench-losses-") as scratch:
            root = write_digits(Path(scratch), args.train, args.validation, hyperparameters)
            if rows == []:
                counts = np.zeros(NUM_CLASSES, dtype=np.int64)
                for mask in paths.channel_dir("train_annotation", base=root).glob("*.png"):
                    counts += np.bincount(np.asarray(Image.open(mask)).ravel(), minlength=NUM_CLASSES)
                shares = ", ".join(f"{100 * c / counts.sum():.2f}" for c in counts)
                print(f"pixel share per class (%): {shares}", flush=True)
            code, seconds = run_job(root, args.timeout)
            metrics_path = paths.output_data_dir(base=root) / "metrics.json"
            history = json.loads(metrics_path.read_text())["history"] if metrics_path.exists() else []
            last = history[-1] if history else {}
            iou = last.get("per_class_iou", [float("nan")] * NUM_CLASSES)
            name = ", ".join(f"{k}={v}" for k, v in setting.items()) or "defaults"
            rows.append((name, code, seconds, last.get("mIOU", float("nan")), [h["mIOU"] for h in history], iou))
            print(f"{name}: exit {code}, {seconds:.0f} s, mIoU per epoch {[round(h['mIOU'], 3) for h in history]}")
            if code != 0:
                print((root / "train.log").read_text()[-1500:])
            print(f"  per-class IoU: {' '.join(f'{v:.2f}' for v in iou)}", flush=True)
    print()
    header = f"{'setting':44s} {'exit':>4s} {'s':>5s} {'mIoU':>6s} {'digits':>6s}  per-class IoU (canvas, 0..9)"
    print(header)
    for name, code, seconds, miou, _, iou in rows:
        digits = float(np.mean(iou[1:]))
        print(f"{name:44s} {code:4d} {seconds:5.0f} {miou:6.3f} {digits:6.3f}  {' '.join(f'{v:.2f}' for v in iou)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
