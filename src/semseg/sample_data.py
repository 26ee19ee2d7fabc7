"""A small synthetic segmentation dataset that a network learns in minutes on a CPU.

Each image is a noisy textured background (class 0) with one or two large shapes (0.45 to 0.8 of
the short side, so that they stay several output cells wide at the networks' output stride of 8):
discs (class 1),
rectangles (class 2) and triangles (class 3), each class with its own hue and some per-shape
variation. Masks are palette PNGs, as SageMaker Ground Truth writes them. Used by the demo, the
tests and the benchmarks; ``write_opt_ml_tree`` lays it out as a SageMaker training job would.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from . import classes, paths, sm_config

NUM_CLASSES = 4
CLASS_COLOURS = {1: (200, 60, 50), 2: (60, 180, 70), 3: (60, 80, 200)}
PALETTE = [0, 0, 0, 220, 20, 60, 30, 160, 50, 40, 60, 220] + [128] * (256 * 3 - 12)
# What a label map would name them: the demo gives its model these names (classes.json).
CLASSES = classes.ClassTable(
    ("background", "disc", "rectangle", "triangle"),
    tuple(tuple(PALETTE[3 * i : 3 * i + 3]) for i in range(NUM_CLASSES)),
)
DEFAULT_SIZES = ((96, 96), (128, 96), (96, 120), (160, 112))


def make_pair(rng: np.random.RandomState, width: int, height: int) -> tuple[Image.Image, Image.Image]:
    """One (RGB image, palette mask) pair of the given size."""
    base = rng.randint(90, 160)
    noise = rng.normal(0, 18, size=(height, width, 3))
    image = np.clip(base + noise, 0, 255).astype(np.uint8)
    picture = Image.fromarray(image)
    mask = Image.new("P", (width, height), 0)
    mask.putpalette(PALETTE)
    draw_image, draw_mask = ImageDraw.Draw(picture), ImageDraw.Draw(mask)
    shortest = min(width, height)
    for _ in range(rng.randint(1, 3)):
        cls = int(rng.randint(1, NUM_CLASSES))
        size = rng.randint(int(shortest * 0.45), int(shortest * 0.8) + 1)
        x0, y0 = rng.randint(0, max(1, width - size)), rng.randint(0, max(1, height - size))
        box = [x0, y0, x0 + size, y0 + size]
        colour = tuple(int(np.clip(c + rng.randint(-25, 26), 0, 255)) for c in CLASS_COLOURS[cls])
        if cls == 1:
            draw_image.ellipse(box, fill=colour)
            draw_mask.ellipse(box, fill=cls)
        elif cls == 2:
            draw_image.rectangle(box, fill=colour)
            draw_mask.rectangle(box, fill=cls)
        else:
            triangle = [(x0, y0 + size), (x0 + size, y0 + size), (x0 + size // 2, y0)]
            draw_image.polygon(triangle, fill=colour)
            draw_mask.polygon(triangle, fill=cls)
    return picture, mask


def write_split(images_dir: Path, masks_dir: Path, count: int, seed: int, sizes=DEFAULT_SIZES) -> None:
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(count):
        width, height = sizes[i % len(sizes)]
        image, mask = make_pair(rng, width, height)
        image.save(images_dir / f"{i:04d}.jpg", quality=95)
        mask.save(masks_dir / f"{i:04d}.png")


def write_opt_ml_tree(
    root, train: int = 24, validation: int = 8, hyperparameters: dict | None = None, seed: int = 0, sizes=DEFAULT_SIZES
) -> Path:
    """Write a complete SageMaker training tree (config files + the four File-mode channels)."""
    root = Path(root)
    channel = functools.partial(paths.channel_dir, base=root)
    write_split(channel("train"), channel("train_annotation"), train, seed, sizes)
    write_split(channel("validation"), channel("validation_annotation"), validation, seed + 1, sizes)
    paths.config_dir(root).mkdir(parents=True, exist_ok=True)
    values = {
        "algorithm": "fcn",
        "backbone": "resnet-50",
        "use_pretrained_model": "False",
        "num_classes": str(NUM_CLASSES),
        "num_training_samples": str(train),
        "crop_size": "64",
        "base_size": "96",
        "epochs": "8",
        "mini_batch_size": "8",
        "validation_mini_batch_size": "8",
        "learning_rate": "0.01",
        "optimizer": "sgd",
    }
    values.update({k: str(v) for k, v in (hyperparameters or {}).items()})
    channels = {
        name: {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
            "ContentType": "image/png" if name.endswith("annotation") else "image/jpeg",
        }
        for name in ("train", "train_annotation", "validation", "validation_annotation")
    }
    resources = {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
    sm_config.write_config_files(root, values, channels, resources)
    for directory in (paths.model_dir(root), paths.output_data_dir(root), paths.checkpoints_dir(root)):
        directory.mkdir(parents=True, exist_ok=True)
    return root
