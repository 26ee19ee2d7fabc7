"""Joint image/mask transforms: GluonCV's segmentation recipe as small composable steps.

Training (``train_transform``), in GluonCV's order: random horizontal flip; random rescale so
the long side is ``U[0.5, 2.0] x base_size`` (image bilinear, mask nearest); pad right/bottom to
``crop_size`` (image with black, mask with *ignore*, unlike GluonCV which pads masks with class
0); random ``crop_size`` square crop; Gaussian blur with p=0.5, radius U(0, 1); ImageNet
normalisation.

The strong recipe (``_augmentation_type=strong``, ``strong_train_transform``) adds to it, for data
whose classes do not depend on orientation or exact colour (cells, aerial images, defects): a
vertical flip, a quarter turn, a small free rotation (image bilinear on black, mask nearest on
*ignore*, so the corners it uncovers teach nothing), colour jitter (brightness, contrast,
saturation, hue) and a wider scale range, each set by an ``augment_*`` hyperparameter.

Validation (``validation_transform``): resize so the short side is ``crop_size`` and take the
centre ``crop_size`` square, as GluonCV's ``_val_sync_transform`` does. Validation mIoU is
therefore measured on centre crops at training resolution.

Masks travel through the steps as encoded uint8 values (255 = ignore) and are turned into class
ids by the label map's lookup table only at the end, so padding and resizing never invent classes.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

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
    def __init__(self, probability: float = 0.5):
        self.probability = probability

    def __call__(self, image, mask, rng):
        if rng.random() < self.probability:
            return image.transpose(Image.FLIP_LEFT_RIGHT), mask.transpose(Image.FLIP_LEFT_RIGHT)
        return image, mask


class RandomVerticalFlip:
    def __init__(self, probability: float):
        self.probability = probability

    def __call__(self, image, mask, rng):
        if rng.random() < self.probability:
            return image.transpose(Image.FLIP_TOP_BOTTOM), mask.transpose(Image.FLIP_TOP_BOTTOM)
        return image, mask


class RandomQuarterTurn:
    """With ``probability``, a turn of 90, 180 or 270 degrees (exact: no pixel is resampled)."""

    TURNS = (Image.ROTATE_90, Image.ROTATE_180, Image.ROTATE_270)

    def __init__(self, probability: float):
        self.probability = probability

    def __call__(self, image, mask, rng):
        if rng.random() < self.probability:
            turn = rng.choice(self.TURNS)
            return image.transpose(turn), mask.transpose(turn)
        return image, mask


class RandomRotation:
    """A turn by U(-degrees, degrees) about the centre: the image bilinear, uncovered corners black;
    the mask nearest, uncovered corners *ignore*."""

    def __init__(self, degrees: float):
        self.degrees = degrees

    def __call__(self, image, mask, rng):
        if not self.degrees:
            return image, mask
        angle = rng.uniform(-self.degrees, self.degrees)
        return (
            image.rotate(angle, resample=Image.BILINEAR, fillcolor=(0, 0, 0)),
            mask.rotate(angle, resample=Image.NEAREST, fillcolor=IGNORE_VALUE),
        )


class ColorJitter:
    """Brightness, contrast and saturation each scaled by U(1 - amount, 1 + amount), then the hue
    turned by U(-hue, hue) of the colour wheel; the mask is untouched."""

    ENHANCERS = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)

    def __init__(self, amount: float, hue: float):
        self.amount, self.hue = amount, hue

    def __call__(self, image, mask, rng):
        if self.amount:
            for enhancer in self.ENHANCERS:
                image = enhancer(image).enhance(rng.uniform(1 - self.amount, 1 + self.amount))
        if self.hue:
            hsv = np.asarray(image.convert("HSV")).copy()
            hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(rng.uniform(-self.hue, self.hue) * 256)) % 256
            image = Image.fromarray(hsv, mode="HSV").convert("RGB")
        return image, mask


class RandomScale:
    """Resize so the long side is a random length in [low, high] x base_size (the built-in's 0.5 to
    2.0 unless given), keeping the aspect."""

    def __init__(self, base_size: int, low: float = 0.5, high: float = 2.0):
        self.low, self.high = max(1, int(base_size * low)), int(base_size * high)

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


def strong_train_transform(hp: dict) -> Compose:
    """The built-in's recipe with the strong pieces added, each set by its ``augment_*`` hyperparameter."""
    crop_size = hp["crop_size"]
    return Compose(
        [
            RandomHorizontalFlip(hp["augment_horizontal_flip"]),
            RandomVerticalFlip(hp["augment_vertical_flip"]),
            RandomQuarterTurn(hp["augment_rotate90"]),
            RandomRotation(hp["augment_rotation_degrees"]),
            ColorJitter(hp["augment_color_jitter"], hp["augment_hue"]),
            RandomScale(hp["base_size"], hp["augment_scale_min"], hp["augment_scale_max"]),
            PadToSize(crop_size),
            RandomCrop(crop_size),
            RandomGaussianBlur(),
        ]
    )


def training_transform(hp: dict) -> Compose:
    """The recipe ``_augmentation_type`` names: ``default`` (the built-in's, unchanged) or ``strong``."""
    if hp["_augmentation_type"] == "strong":
        return strong_train_transform(hp)
    return train_transform(hp["base_size"], hp["crop_size"])


def validation_transform(crop_size: int) -> Compose:
    return Compose([ResizeShortSide(crop_size), CenterCrop(crop_size)])


def normalize(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) with ImageNet mean and std, as the networks expect."""
    return ((rgb.astype(np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)
