"""File-mode channels: find image/mask pairs in the four-directory layout and check them up front.

Pairs are matched by base name (``cat.jpg`` with ``cat.png``). Directories are flat: entries that
are not readable images (a sub-directory from an S3 prefix collision, a stray text file) are
skipped with the built-in's warning. Every mask is read once before training starts, so that a
mask of the wrong size or mode fails the job in the first seconds instead of mid-epoch, and so
that values outside the classes can be reported in one summary warning.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import label_map
from .images import check_mask, open_image, upright_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path


def _readable_images(directory: Path) -> dict[str, Path]:
    """Base name -> path for every top-level entry that PIL can identify as an image."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        try:
            if not path.is_file():
                raise OSError
            with open_image(path):
                pass
        except Exception:
            log.warning("%s is not a readable image file", path)
            continue
        if path.stem in found:
            raise UserError(
                f"The channel directory {directory} holds two images named '{path.stem}' "
                f"({found[path.stem].name} and {path.name}); base names must be unique"
            )
        found[path.stem] = path
    return found


def find_pairs(images_dir: Path, masks_dir: Path) -> list[Sample]:
    """Image/mask pairs of one split; unmatched files are skipped with one warning each side."""
    for directory in (images_dir, masks_dir):
        if not directory.is_dir():
            raise UserError(f"The '{directory.name}' channel is missing: expected a directory at {directory}")
    images, masks = _readable_images(images_dir), _readable_images(masks_dir)
    unmatched_images = sorted(set(images) - set(masks))
    unmatched_masks = sorted(set(masks) - set(images))
    if unmatched_images:
        log.warning(
            "%d images in %s have no mask of the same base name in %s and are skipped (first: %s)",
            len(unmatched_images),
            images_dir,
            masks_dir,
            images[unmatched_images[0]].name,
        )
    if unmatched_masks:
        log.warning(
            "%d masks in %s have no image of the same base name in %s and are skipped (first: %s)",
            len(unmatched_masks),
            masks_dir,
            images_dir,
            masks[unmatched_masks[0]].name,
        )
    pairs = [Sample(images[name], masks[name]) for name in sorted(set(images) & set(masks))]
    if not pairs:
        raise UserError(
            f"No image/mask pairs found: {images_dir} and {masks_dir} must hold images and PNG masks "
            "with the same base names (for example cat.jpg and cat.png)"
        )
    return pairs


def _mask_histogram(sample: Sample) -> np.ndarray:
    """Check one pair's sizes and the mask's mode; return the histogram of its encoded values."""
    with open_image(sample.image) as image:
        image_size = upright_size(image)
    with open_image(sample.mask) as mask:
        check_mask(mask, str(sample.mask), image_size, str(sample.image))
        try:
            values = np.asarray(mask, dtype=np.uint8)
        except Exception as exc:
            raise UserError(f"The mask {sample.mask} could not be decoded ({exc})") from None
    return np.bincount(values.ravel(), minlength=256)


def check_pairs(pairs: list[Sample], spec: dict, num_classes: int, split: str, workers: int = 4) -> np.ndarray:
    """Validate every pair; warn once about values outside the classes. Returns class pixel counts."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        histogram = sum(pool.map(_mask_histogram, pairs), np.zeros(256, dtype=np.int64))
    dropped = label_map.out_of_range_values(spec, num_classes)
    dropped_pixels = int(histogram[dropped].sum())
    if dropped_pixels:
        values = np.flatnonzero(dropped & (histogram > 0))
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        log.warning(
            "%d %s mask pixels (%.2f%%) have values that map to no class of 0..%d (values: %s) and are ignored",
            dropped_pixels,
            split,
            100.0 * dropped_pixels / max(1, int(histogram.sum())),
            num_classes - 1,
            shown,
        )
    table = label_map.lookup_table(spec, num_classes)
    counts = np.zeros(num_classes, dtype=np.int64)
    valid = table >= 0
    np.add.at(counts, table[valid], histogram[valid])
    if not counts.any():
        nothing = (
            f"The {split} masks have no labelled pixel: every pixel is 255 (ignore) or maps to no class of "
            f"0..{num_classes - 1}"
        )
        if split == "train":
            raise UserError(f"{nothing}, so there is nothing to learn")
        log.warning("%s; its mIOU will be 0", nothing)
    return counts
