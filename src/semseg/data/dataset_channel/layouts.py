"""Where a dataset starts inside the archive, which of the two layouts it has, and its splits.

- CVAT's "Segmentation Mask 1.1" export: ``labelmap.txt``, ``SegmentationClass/<name>.png``,
  ``ImageSets/Segmentation/<subset>.txt`` (one name per line, no extension, maybe with
  sub-folders) and ``JPEGImages/<name>.<ext>``.
- The annotation platform's: ``images/{train,val}/``, ``masks/{train,val}/`` (same base names),
  ``labelmap.txt``.

The tree may start anywhere (a zip usually has one top-level folder): its root is the shallowest
folder that holds a ``labelmap.txt`` or one of the layouts' folders. Subsets ``train`` and
``val``/``validation``, in any case (CVAT suggests ``Train``, ``Validation`` and ``Test``), are used
as such; a single subset (CVAT's ``default``) is split by ``validation_fraction``, seeded, so
every run and every host of a job draws the same split.
Nothing here logs: what a person should read (skipped names, the split) is gathered as notes,
which the job logs once, however often the dataset is opened.
"""

from __future__ import annotations

import posixpath
import random
from dataclasses import dataclass

from ...errors import UserError
from ...names import has_unsafe_characters, shown

LABEL_MAP = "labelmap.txt"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VALIDATION_SUBSETS = ("val", "validation")
PLATFORM_SPLITS = ("train", *VALIDATION_SUBSETS)
CVAT_FOLDERS = ("SegmentationClass/", "ImageSets/", "JPEGImages/")


@dataclass(frozen=True)
class Pair:
    name: str  # as the dataset names it: "img1" or "a/b/img1"
    image: str  # member names in the archive
    mask: str


@dataclass
class Layout:
    kind: str
    root: str  # "" or "folder/" : the prefix of every member of the dataset
    label_map: str | None  # member name, None when the export has none
    subsets: dict[str, list[Pair]]
    notes: list[str]  # skipped names and the like, for the log


def _root_of(name: str) -> str | None:
    """The dataset root that ``name`` implies, if it is one of the layouts' landmarks."""
    parts = name.split("/")
    if parts[-1] == LABEL_MAP:
        return "/".join(parts[:-1])
    for i, part in enumerate(parts[:-1]):
        if part == "SegmentationClass" or (part == "ImageSets" and parts[i + 1 : i + 2] == ["Segmentation"]):
            return "/".join(parts[:i])
        if part in ("images", "masks") and len(parts) > i + 2 and parts[i + 1] in PLATFORM_SPLITS:
            return "/".join(parts[:i])
    return None


def find_root(names: list[str], source: object) -> str:
    roots = {root for root in map(_root_of, names) if root is not None}
    if not roots:
        raise UserError(
            f"The dataset {source} has neither layout: expected CVAT's Segmentation Mask 1.1 export "
            "(labelmap.txt, SegmentationClass/, ImageSets/Segmentation/, JPEGImages/) or images/train, "
            "images/val, masks/train, masks/val and labelmap.txt"
        )
    depth = min(root.count("/") + bool(root) for root in roots)
    shallowest = sorted(root for root in roots if root.count("/") + bool(root) == depth)
    if len(shallowest) > 1:
        raise UserError(
            f"The dataset {source} holds more than one dataset (in {shown(shallowest[0])}/ and "
            f"{shown(shallowest[1])}/); give the channel one"
        )
    return shallowest[0] + "/" if shallowest[0] else ""


def _by_stem(names: list[str], prefix: str, extensions: tuple[str, ...], source: object) -> dict[str, str]:
    """Base name (with sub-folders, without extension) -> member, for files under ``prefix``."""
    found: dict[str, str] = {}
    for name in names:
        stem, extension = posixpath.splitext(name[len(prefix) :])
        if not name.startswith(prefix) or extension.lower() not in extensions:
            continue
        if stem in found:
            raise UserError(
                f"The dataset {source} holds two files named '{shown(stem)}' ({shown(found[stem])} and {shown(name)}); "
                "base names must be unique"
            )
        found[stem] = name
    return found


def _pairs(
    subset: str, listed: list[str], images: dict[str, str], masks: dict[str, str], notes: list[str]
) -> list[Pair]:
    """The listed names that have both an image and a mask; the others are skipped with a note each side."""
    for side, found in (("image", images), ("mask", masks)):
        missing = [name for name in listed if name not in found]
        if missing:
            notes.append(
                f"{len(missing)} names of the dataset's '{shown(subset)}' subset have no {side} and are skipped "
                f"(first: {shown(missing[0])})"
            )
    return [Pair(name, images[name], masks[name]) for name in listed if name in images and name in masks]


def _cvat(names: list[str], root: str, read_text, source: object, notes: list[str]) -> dict[str, list[Pair]]:
    masks = _by_stem(names, root + "SegmentationClass/", (".png",), source)
    if not masks:
        raise UserError(
            f"The CVAT export {source} holds no class masks (no PNG under SegmentationClass/); annotate with "
            "masks or polygons and export again as Segmentation Mask 1.1"
        )
    images = _by_stem(names, root + "JPEGImages/", IMAGE_EXTENSIONS, source)
    if not images:
        raise UserError(
            f"The CVAT export {source} holds no images (nothing under JPEGImages/); export again with 'Save images' on"
        )
    lists = root + "ImageSets/Segmentation/"
    listed = {
        name[len(lists) : -len(".txt")]: name
        for name in names
        if name.startswith(lists) and name.endswith(".txt") and "/" not in name[len(lists) :]
    }
    if not listed:
        notes.append(f"The CVAT export has no ImageSets/Segmentation/ lists: its {len(masks)} masks are one subset")
        return {"default": _pairs("default", sorted(masks), images, masks, notes)}
    return {
        subset: _pairs(subset, _listed(read_text(member), member, source), images, masks, notes)
        for subset, member in sorted(listed.items())
    }


def _platform(names: list[str], root: str, source: object, notes: list[str]) -> dict[str, list[Pair]]:
    subsets = {}
    for split in PLATFORM_SPLITS:
        images = _by_stem(names, f"{root}images/{split}/", IMAGE_EXTENSIONS, source)
        masks = _by_stem(names, f"{root}masks/{split}/", (".png",), source)
        if images or masks:
            subsets[split] = _pairs(split, sorted(set(images) | set(masks)), images, masks, notes)
    return subsets


def find_layout(names: list[str], read_text, source: object) -> Layout:
    """The dataset in ``names`` (members of the archive); ``read_text(name)`` reads a list file."""
    root = find_root(names, source)
    label_map = root + LABEL_MAP if root + LABEL_MAP in names else None
    notes: list[str] = []
    if any(name.startswith(tuple(root + folder for folder in CVAT_FOLDERS)) for name in names):
        subsets = _cvat(names, root, read_text, source, notes)
        return Layout("CVAT Segmentation Mask 1.1", root, label_map, subsets, notes)
    subsets = _platform(names, root, source, notes)
    if not subsets:
        raise UserError(f"The dataset {source} has a labelmap.txt but no images/train and masks/train beside it")
    return Layout("images/ and masks/ folders", root, label_map, subsets, notes)


def _listed(text: str, member: str, source: object) -> list[str]:
    """The names of an ``ImageSets`` list; one that holds a control character is refused (it can
    only be a damaged or forged list, and would break the log lines that name it)."""
    listed = []
    for number, line in enumerate(text.split("\n"), 1):
        name = line.strip().replace("\\", "/")
        if name and has_unsafe_characters(name):
            raise UserError(
                f"Line {number} of {shown(member)} in the dataset {source} names '{shown(name)}', which holds "
                "control characters; a list names one image per line"
            )
        if name:
            listed.append(name)
    return listed


def _split(pairs: list[Pair], fraction: float, seed: int, subset: str) -> tuple[list[Pair], list[Pair], str]:
    if len(pairs) < 2:
        raise UserError(
            f"The dataset's '{shown(subset)}' subset has {len(pairs)} image/mask pair; at least 2 are needed to hold "
            "some out for validation"
        )
    order = sorted(pairs, key=_name)
    random.Random(seed).shuffle(order)
    held_out = min(len(order) - 1, max(1, round(len(order) * fraction)))
    validation, train = sorted(order[:held_out], key=_name), sorted(order[held_out:], key=_name)
    note = (
        f"The dataset's '{shown(subset)}' subset ({len(order)} pairs) is split by validation_fraction={fraction:g}, "
        f"seed {seed}: {len(validation)} validate ({', '.join(shown(pair.name) for pair in validation)}), "
        f"the other {len(train)} train"
    )
    return train, validation, note


def _name(pair: Pair) -> str:
    return pair.name


def _subsets_named(subsets: dict[str, list[Pair]], names: tuple[str, ...]) -> list[str]:
    """The subsets called one of ``names``, in any case: CVAT suggests ``Train`` and ``Validation``."""
    return sorted(subset for subset in subsets if subset.lower() in names)


def choose_splits(
    subsets: dict[str, list[Pair]], fraction: float, seed: int
) -> tuple[list[Pair], list[Pair], list[str]]:
    """(train, validation, notes): the train and val subsets as such, or one subset split by ``fraction``."""
    validation_names = _subsets_named(subsets, VALIDATION_SUBSETS)
    train_names = _subsets_named(subsets, ("train",))
    for found in (train_names, validation_names):
        if len(found) > 1:
            raise UserError(
                f"The dataset has both a '{shown(found[0])}' and a '{shown(found[1])}' subset; keep one of them"
            )
    if train_names:
        train_name = train_names[0]
    elif len(subsets) == 1:
        train_name = next(iter(subsets))
    else:
        raise UserError(
            f"The dataset has the subsets {', '.join(map(shown, sorted(subsets)))}; name them train and val, or "
            "export a single subset to be split by validation_fraction"
        )
    unused = sorted(set(subsets) - {train_name, *validation_names})
    notes = [f"The dataset's subsets {', '.join(map(shown, unused))} are not used for training"] if unused else []
    train = subsets[train_name]
    if not train:
        raise UserError(f"The dataset's '{shown(train_name)}' subset has no image/mask pair")
    if validation_names and subsets[validation_names[0]]:
        notes.append(
            f"The dataset's '{shown(train_name)}' subset trains, its '{shown(validation_names[0])}' subset validates"
        )
        return train, subsets[validation_names[0]], notes
    train, validation, note = _split(train, fraction, seed, train_name)
    return train, validation, [*notes, note]
