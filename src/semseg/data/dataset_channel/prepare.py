"""The ``dataset`` channel turned into what File mode trains on, so training has one code path.

``prepare`` writes each split's images (their bytes, unchanged) and masks (class ids, 255 =
ignore) into ``paths.prepared_dataset_dir()`` as the four File-mode directories, and ``test`` and
``test_annotation`` when the dataset has a test subset (whole or not at all: they are renamed into
place once complete), which ``data.loaders`` then reads like any channels, with the identity label
map; the test pair is read only at the end of training (``train.native_scores``). RGB masks become
palette PNGs whose palette is the label map's colours, so they still look like the CVAT masks
in a viewer; one-channel masks (palette or grayscale) already hold class ids and are copied as
they are. Converting once up front, rather than in every loader process at every draw, costs one
pass over the masks, which File mode makes anyway to check them.

The label map's names and colours go to ``model/classes.json`` before training starts, so that
everything reading ``classes.load`` during or after the run sees them. With a model to continue
(a ``model`` channel), they must be that model's classes (``model_channel``).
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ... import classes, hyperparameters, paths, sm_config
from ...classes import ClassTable
from ...errors import UserError, one_line
from ...names import shown
from ..images import MASK_MODES, ImageTooLarge, check_mask_size, describe, open_image, upright_size
from . import labelmap_txt, model_channel
from .archive import Archive, ZipArchive, open_channel
from .layouts import Layout, Pair, choose_splits, find_layout, test_subset

log = logging.getLogger("semseg")

MAX_MASK_PIXELS = 1 << 26  # 8192 x 8192: a mask beyond is a decompression bomb, not an annotation
REPLACED_CHANNELS = (
    "train",
    "train_annotation",
    "validation",
    "validation_annotation",
    "test",
    "test_annotation",
    "label_map",
)
SPLITS = ("train", "validation", "test")
# A prepared file is named by its number and the dataset's name, '/' written as '~' and what a file
# name should not hold (control characters, '#', spaces, anything beyond ASCII) as '_'.
_FILE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._~-]")


@dataclass
class Dataset:
    archive: Archive
    layout: Layout
    table: ClassTable | None  # None: the export has no labelmap.txt

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc) -> None:
        self.archive.close()


def channel_dir() -> Path | None:
    """The ``dataset`` channel's directory, None when the job has no such channel."""
    config = sm_config.read_input_data_config().get(paths.DATASET_CHANNEL)
    if config is not None and config.is_pipe:
        raise UserError("The 'dataset' channel is in Pipe mode; give it TrainingInputMode \"File\"")
    directory = paths.channel_dir(paths.DATASET_CHANNEL)
    if not directory.is_dir():
        if config is not None:
            raise UserError(f"The 'dataset' channel is missing: expected a directory at {directory}")
        return None
    mixed = [name for name in REPLACED_CHANNELS if paths.channel_dir(name).is_dir()]
    if mixed:
        raise UserError(
            f"The 'dataset' channel replaces the channels {', '.join(REPLACED_CHANNELS)}, but the job also has "
            f"{', '.join(mixed)}; give either the dataset or those channels"
        )
    return directory


def open_dataset(directory: Path) -> Dataset:
    """The dataset of a channel directory: its one zip, else the tree in it."""
    return _dataset_of(open_channel(directory))


def open_dataset_at(path: Path) -> Dataset:
    """A dataset zip itself, or a folder as the channel holds one (for ``semseg evaluate``)."""
    return open_dataset(path) if path.is_dir() else _dataset_of(ZipArchive(path))


def _dataset_of(archive: Archive) -> Dataset:
    try:
        layout = find_layout(archive.names, lambda name: _text(archive, name), archive.source)
        table = None
        if layout.label_map is not None:
            table = labelmap_txt.parse(_text(archive, layout.label_map), layout.label_map)
        return Dataset(archive, layout, table)
    except BaseException:
        archive.close()
        raise


def _text(archive: Archive, name: str) -> str:
    try:
        return archive.read(name).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{name} in {archive.source} is not UTF-8 text") from None


def implied_hyperparameters(provided: dict) -> dict[str, str]:
    """What the dataset says when the user leaves it out: ``num_classes`` (from the label map) and
    ``num_training_samples`` (the train split's size). Empty without a ``dataset`` channel."""
    directory = channel_dir()
    if directory is None:
        return {}
    fraction = hyperparameters.parse_one("validation_fraction", provided)
    with open_dataset(directory) as dataset:
        train, _, _ = choose_splits(dataset.layout.subsets, fraction, 0)  # the seed moves pairs, not the size
        implied = {"num_training_samples": str(len(train))}
        if dataset.table is not None:
            implied["num_classes"] = str(len(dataset.table))
    log.info("From the 'dataset' channel, unless given: %s", implied)
    return implied


def prepare(hp: dict) -> Path | None:
    """Write the splits of the ``dataset`` channel as File-mode directories; their root, or None
    without a ``dataset`` channel. Writes ``model/classes.json`` when the dataset names its classes."""
    directory = channel_dir()
    if directory is None:
        return None
    with open_dataset(directory) as dataset:
        table, layout = dataset.table, dataset.layout
        order_note = None
        if table is not None:  # with a model to continue, its classes (model_channel)
            table, order_note = model_channel.in_model_order(table, layout.label_map)
        log.info(
            "The 'dataset' channel holds %s at '%s' (%s)",
            layout.kind,
            shown(layout.root) or "the top",
            f"{len(table)} classes: {', '.join(map(shown, table.names))}" if table else "no labelmap.txt",
        )
        if table is not None and hp["num_classes"] != len(table):
            raise UserError(
                f"num_classes is {hp['num_classes']} but {layout.label_map} names {len(table)} classes; "
                "leave num_classes out to take it from the label map, or make them agree"
            )
        train, validation, notes = choose_splits(layout.subsets, hp["validation_fraction"], hp["_seed"])
        test = (test_subset(layout.subsets) or ("", []))[1]
        for note in (*layout.notes, *notes, *([order_note] if order_note else [])):
            log.info("%s", note)
        dataset.archive.check_size([member for pair in train + validation + test for member in (pair.image, pair.mask)])
        root = paths.prepared_dataset_dir()
        partial = root.with_name(root.name + ".partial")
        for directory in (root, partial):
            if directory.exists():
                shutil.rmtree(directory)
        colours = table.colors if table is not None else tuple(classes.voc_colors()[: hp["num_classes"]])
        palette = (table or classes.default(hp["num_classes"])).palette()
        try:
            for split, pairs in zip(SPLITS, (train, validation, test), strict=True):
                if not pairs:  # an empty test subset: nothing to hold out
                    continue
                images, masks = partial / split, partial / f"{split}_annotation"
                _write_split(dataset.archive, pairs, images, masks, colours, palette, split)
        except BaseException:  # a member that fails to read half-way leaves nothing behind
            shutil.rmtree(partial, ignore_errors=True)
            raise
        partial.rename(root)
        if table is not None:
            classes.save(table, paths.model_dir())
            log.info("Class names and colours written to %s", paths.model_dir() / classes.FILE_NAME)
    return root


def _write_split(
    archive: Archive, pairs: list[Pair], images: Path, masks: Path, colours, palette: list[int], split: str
) -> None:
    images.mkdir(parents=True)
    masks.mkdir(parents=True)

    def write(numbered: tuple[int, Pair]) -> Counter:
        number, pair = numbered
        stem = f"{number:05d}-{_FILE_NAME_UNSAFE.sub('_', pair.name.replace('/', '~'))}"[:200]
        extension = Path(pair.image).suffix.lower()
        image = archive.read(pair.image)
        image_size = _image_size(archive, pair.image, image)
        (images / f"{stem}{extension}").write_bytes(image)
        return _write_mask(archive, pair, masks / f"{stem}.png", colours, palette, image_size)

    with ThreadPoolExecutor(max_workers=4) as pool:
        unknown = sum(pool.map(write, enumerate(pairs)), Counter())
    if unknown:
        total = sum(unknown.values())
        shown = ", ".join(f"{','.join(map(str, colour))} ({count} px)" for colour, count in unknown.most_common(10))
        log.warning(
            "%d %s mask pixels have colours that no class of the label map names and are ignored: %s%s",
            total,
            split,
            shown,
            " ..." if len(unknown) > 10 else "",
        )
    log.info("%s: %d image/mask pairs prepared", split, len(pairs))


def _image_size(archive: Archive, member: str, data: bytes) -> tuple[int, int]:
    """The upright size of an image member, from its header: a bad image is named as the user's
    archive names it, not as the prepared copy training would otherwise report."""
    try:
        with open_image(data) as image:
            return upright_size(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(
            f"The image {shown(member)} in {archive.source} could not be decoded ({one_line(exc)})"
        ) from None


def _write_mask(
    archive: Archive, pair: Pair, target: Path, colours, palette: list[int], image_size: tuple[int, int]
) -> Counter:
    """Class ids of one mask into ``target``; returns the pixel counts of colours no class names."""
    member = pair.mask
    data = archive.read(member)
    try:
        with open_image(data, max_pixels=MAX_MASK_PIXELS) as mask:
            check_mask_size(mask.size, f"The mask {shown(member)}", image_size, shown(pair.image))
            if mask.mode in MASK_MODES:  # one channel: the values are class ids already
                target.write_bytes(data)
                return Counter()
            if mask.mode not in ("RGB", "RGBA"):
                raise UserError(
                    f"The mask {shown(member)} is {describe(mask)}; dataset masks must be RGB in the label map's "
                    "colours or one-channel PNGs of class ids"
                )
            rgb = np.asarray(mask.convert("RGB"), dtype=np.uint8)
    except ImageTooLarge as exc:
        raise UserError(f"The mask {shown(member)}: {exc}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UserError(
            f"The mask {shown(member)} in {archive.source} could not be decoded ({one_line(exc)})"
        ) from None
    ids, unknown = labelmap_txt.rgb_to_ids(rgb, colours)
    image = Image.fromarray(ids, mode="L").convert("P")
    image.putpalette(palette)
    image.save(target)
    return unknown


def write_pairs(dataset: Dataset, pairs: list[Pair], images: Path, masks: Path, num_classes: int, split: str) -> None:
    """``pairs`` of ``dataset`` as one File-mode pair of folders: images as they are, masks as class ids."""
    table = dataset.table
    colours = table.colors if table is not None else tuple(classes.voc_colors()[:num_classes])
    palette = (table or classes.default(num_classes)).palette()
    _write_split(dataset.archive, pairs, images, masks, colours, palette, split)
