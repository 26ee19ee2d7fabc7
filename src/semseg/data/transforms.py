"""Joint image/mask transforms: GluonCV's segmentation recipe as small composable steps.

Training (``train_transform``), in GluonCV's order: random horizontal flip; random rescale so
the long side is ``U[0.5, 2.0] x base_size`` (image bilinear, mask nearest); pad right/bottom to
``crop_size`` (image with black, mask with *ignore*, unlike GluonCV which pads masks with class
0); random ``crop_size`` square crop; Gaussian blur with p=0.5, radius U(0, 1); ImageNet
normalisation.

Validation (``validation_transform``): resize so the short side is ``crop_size`` and take the
centre ``crop_size`` square, as GluonCV's ``_val_sync_transform`` does. Validation mIoU is
therefore measured on centre crops at training resolution.

Masks travel through the steps as encoded uint8 values (255 = ignore) and are turned into class
ids by the label map's lookup table only at the end, so padding and resizing never invent classes.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageFilter

from .label_map import IGNORE_VALUE

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class Compose:
    def __init__(self, steps):
        self.steps = steps

    def __call__(self, image: Image.Image, mask: Image.Image, rng: random.Random):
        for step in self.steps:
            image, mask = step(image, mask, rng)
        return image, mask


class RandomHorizontalFlip:
    def __call__(self, image, mask, rng):
        if rng.random() < 0.5:
            return image.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
        return image, mask


class RandomScale:
    """Resize so the long side is a random length in [0.5, 2.0] x base_size, keeping the aspect."""

    def __init__(self, base_size: int):
        self.low, self.high = int(base_size * 0.5), int(base_size * 2.0)

    def __call__(self, image, mask, rng):
        long_side = rng.randint(self.low, self.high)
        width, height = image.size
        if width >= height:
            size = (long_side, max(1, round(height * long_side / width)))
        else:
            size = (max(1, round(width * long_side / height)), long_side)
        return image.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)


class PadToSize:
    """Pad right and bottom up to ``size``: the image with black, the mask with ignore."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, image, mask, rng):
        width, height = image.size
        if width >= self.size and height >= self.size:
            return image, mask
        size = (max(width, self.size), max(height, self.size))
        padded_image = Image.new("RGB", size, (0, 0, 0))
        padded_image.paste(image, (0, 0))
        padded_mask = Image.new("L", size, IGNORE_VALUE)
        padded_mask.paste(mask, (0, 0))
        return padded_image, padded_mask


class RandomCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, image, mask, rng):
        width, height = image.size
        left, top = rng.randint(0, width - self.size), rng.randint(0, height - self.size)
        box = (left, top, left + self.size, top + self.size)
        return image.crop(box), mask.crop(box)


class RandomGaussianBlur:
    def __call__(self, image, mask, rng):
        if rng.random() < 0.5:
            return image.filter(ImageFilter.GaussianBlur(radius=rng.random())), mask
        return image, mask


class ResizeShortSide:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, image, mask, rng):
        width, height = image.size
        if width <= height:
            size = (self.size, max(self.size, round(height * self.size / width)))
        else:
            size = (max(self.size, round(width * self.size / height)), self.size)
        return image.resize(size, Image.BILINEAR), mask.resize(size, Image.NEAREST)


class CenterCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, image, mask, rng):
        width, height = image.size
        left, top = (width - self.size) // 2, (height - self.size) // 2
        box = (left, top, left + self.size, top + self.size)
        return image.crop(box), mask.crop(box)


def train_transform(base_size: int, crop_size: int) -> Compose:
    return Compose(
        [
            RandomHorizontalFlip(),
            RandomScale(base_size),
            PadToSize(crop_size),
            RandomCrop(crop_size),
            RandomGaussianBlur(),
        ]
    )


def validation_transform(crop_size: int) -> Compose:
    return Compose([ResizeShortSide(crop_size), CenterCrop(crop_size)])


def normalize(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) with ImageNet mean and std, as the networks expect."""
    return ((rgb.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
