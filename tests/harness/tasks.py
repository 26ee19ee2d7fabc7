"""Synthetic tasks a short CPU run can learn, each a different difficulty users bring (bench and tests).

All draw on the same textured canvas (class 0): blocky colour texture plus pixel noise.

- ``sample``: the demo's task (``semseg.sample_data``): large discs, rectangles and triangles.
- ``thin``: thin structures, 1 to 3 pixels wide: dark crack-like polylines (class 1) and bright
  rings (class 2). At an output stride of 8 a network cannot draw them; at stride 2 it can.
- ``spots``: one or two large patches (classes 1 and 2, by hue) and one to three small dark-red
  blobs 4 to 8 pixels across (class 3, about 0.5% of the pixels): a rare, defect-like class.
- ``digits``: digits 0-9 (classes 1-10) drawn with a scalable font, the canvas about 96% of the
  pixels: shape, not colour, tells the classes apart.

``write_task`` lays a task out as a SageMaker training job's /opt/ml tree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from semseg import paths
from semseg.sample_data import NUM_CLASSES as SAMPLE_CLASSES
from semseg.sample_data import write_opt_ml_tree

CANVAS = 80
# The learning budget of bench/architectures.py, the same for every model and task (96 training images:
# 120 steps), and of the learning tests whose bars come from its table.
LEARNING = {
    "use_pretrained_model": "False",
    "_workers": "1",
    "_int8": "False",
    "crop_size": "64",
    "base_size": str(CANVAS),
    "mini_batch_size": "8",
    "validation_mini_batch_size": "16",
    "optimizer": "adam",
    "learning_rate": "0.002",
    "epochs": "10",
}

# The augmentation under which the digits task learns (docs/performance.md, "Digits"): the strong
# recipe with every piece off but a narrow rescale, and no mirror: shape tells its classes apart.
SHAPE_AUGMENTATION = {
    "_augmentation_type": "strong",
    "augment_horizontal_flip": "0",
    "augment_vertical_flip": "0",
    "augment_rotate90": "0",
    "augment_rotation_degrees": "0",
    "augment_color_jitter": "0",
    "augment_hue": "0",
    "augment_scale_min": "0.8",
    "augment_scale_max": "1.25",
}


def canvas(rng: np.random.RandomState) -> Image.Image:
    """Blocky colour texture plus pixel noise: the background class."""
    texture = rng.normal(0, 1, size=(CANVAS // 8, CANVAS // 8, 3))
    texture = np.kron(texture, np.ones((8, 8, 1))) * 20 + rng.normal(0, 12, size=(CANVAS, CANVAS, 3))
    return Image.fromarray(np.clip(150 + texture, 0, 255).astype(np.uint8))


def thin_pair(rng: np.random.RandomState) -> tuple[Image.Image, Image.Image]:
    """One to three cracks (class 1, dark polylines) and one or two rings (class 2, bright outlines)."""
    image, mask = canvas(rng), Image.new("L", (CANVAS, CANVAS), 0)
    draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(rng.randint(1, 4)):
        points = [tuple(int(v) for v in rng.randint(0, CANVAS, size=2))]
        for _ in range(rng.randint(2, 5)):
            step = rng.randint(-24, 25, size=2)
            points.append(tuple(int(np.clip(p + s, 0, CANVAS - 1)) for p, s in zip(points[-1], step)))
        width = int(rng.randint(1, 4))
        ink = tuple(int(v) for v in rng.randint(30, 70, size=3))
        draw_image.line(points, fill=ink, width=width)
        draw_mask.line(points, fill=1, width=width)
    for _ in range(rng.randint(1, 3)):
        radius = int(rng.randint(6, 16))
        x, y = (int(v) for v in rng.randint(radius, CANVAS - radius, size=2))
        box = [x - radius, y - radius, x + radius, y + radius]
        width = int(rng.randint(1, 4))
        draw_image.ellipse(box, outline=(235, 225, 120), width=width)
        draw_mask.ellipse(box, outline=2, width=width)
    return image, mask


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


# name: (num_classes, pair maker, class names); the sample task's pairs are semseg.sample_data's own.
TASKS = {
    "sample": (SAMPLE_CLASSES, None, ("background", "disc", "rectangle", "triangle")),
    "thin": (3, thin_pair, ("background", "crack", "ring")),
    "spots": (4, spots_pair, ("background", "patch A", "patch B", "spot")),
    "digits": (11, digit_pair, ("background",) + tuple(str(d) for d in range(10))),
}


def write_task(task: str, root: Path, train: int, validation: int, hyperparameters: dict) -> Path:
    """``task``'s /opt/ml tree: the sample task's, its images and masks replaced by ``task``'s own."""
    num_classes, make_pair, _ = TASKS[task]
    hyperparameters = {**hyperparameters, "num_classes": str(num_classes), "num_training_samples": str(train)}
    root = write_opt_ml_tree(root, train=train, validation=validation, hyperparameters=hyperparameters)
    if make_pair is None:
        return root
    rng = np.random.RandomState(0)
    for split in ("train", "validation"):
        images, masks = paths.channel_dir(split, base=root), paths.channel_dir(f"{split}_annotation", base=root)
        for image_path in sorted(images.glob("*.jpg")):
            image, mask = make_pair(rng)
            image.save(image_path, quality=95)
            mask.save(masks / f"{image_path.stem}.png")
    return root


def class_shares(root: Path, num_classes: int) -> np.ndarray:
    """Each class's share of the training masks' pixels."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for mask in paths.channel_dir("train_annotation", base=root).glob("*.png"):
        counts += np.bincount(np.asarray(Image.open(mask)).ravel(), minlength=num_classes)
    return counts / counts.sum()
