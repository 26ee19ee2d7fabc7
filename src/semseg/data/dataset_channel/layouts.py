"""Where a dataset starts inside the archive, which of the two layouts it has, and its splits.

- CVAT's "Segmentation Mask 1.1" export: ``labelmap.txt``, ``SegmentationClass/<name>.png``,
  ``ImageSets/Segmentation/<subset>.txt`` (one name per line, no extension, maybe with
  sub-folders) and ``JPEGImages/<name>.<ext>``.
- The annotation platform's: ``images/{train,val,test}/``, ``masks/{train,val,test}/`` (same base
  names), ``labelmap.txt``.

The tree may start anywhere (a zip usually has one top-level folder): its root is the shallowest
folder that holds a ``labelmap.txt`` or one of the layouts' folders. A subset's role comes from its
name, in any case and in each of the spellings CVAT and its users write (``TRAIN_SUBSETS``,
``VALIDATION_SUBSETS``, ``TEST_SUBSETS``; CVAT suggests ``Train``, ``Validation`` and ``Test``), in
both layouts. The train and validation subsets are used as such; without a validation subset the
train subset (or the only subset, CVAT's ``default``) is split by ``validation_fraction``, seeded,
so every run and every host of a job draws the same split. A test subset is held out of both: no
epoch is chosen by it, and it is scored once, at the end of training.
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
TRAIN_SUBSETS = ("train", "training")
VALIDATION_SUBSETS = ("val", "valid", "validation")
TEST_SUBSETS = ("test", "testing")
PLATFORM_SPLITS = (*TRAIN_SUBSETS, *VALIDATION_SUBSETS, *TEST_SUBSETS)  # images/<split>/, in any case
CLASS_MASKS = "SegmentationClass/"  # CVAT's folders in its export
OBJECT_MASKS = "SegmentationObject/"
LISTS = "ImageSets/Segmentation/"
IMAGES = "JPEGImages/"
CVAT_FOLDERS = (CLASS_MASKS, "ImageSets/", IMAGES)
DEFAULT_SUBSET = "default"  # CVAT's subset of a task without subsets


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
        if part in ("images", "masks") and len(parts) > i + 2 and parts[i + 1].lower() in PLATFORM_SPLITS:
            return "/".join(parts[:i])
    return None


def find_root(names: list[str], source: object) -> str:
    roots = {root for root in map(_root_of, names) if root is not None}
    if not roots:
        raise UserError(
            f"The dataset {source} has neither layout: expected CVAT's Segmentation Mask 1.1 export "
            "(labelmap.txt, SegmentationClass/, ImageSets/Segmentation/, JPEGImages/) or images/train, "
            "images/val, masks/train, masks/val (and images/test, masks/test) and labelmap.txt"
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
    masks = _by_stem(names, root + CLASS_MASKS, (".png",), source)
    if not masks:
        raise UserError(
            f"The CVAT export {source} holds no class masks (no PNG under SegmentationClass/); annotate with "
            "masks or polygons and export again as Segmentation Mask 1.1"
        )
    images = _by_stem(names, root + IMAGES, IMAGE_EXTENSIONS, source)
    if not images:
        raise UserError(
            f"The CVAT export {source} holds no images (nothing under JPEGImages/); export again with 'Save images' on"
        )
    lists = root + LISTS
    listed = {
        name[len(lists) : -len(".txt")]: name
        for name in names
        if name.startswith(lists) and name.endswith(".txt") and "/" not in name[len(lists) :]
    }
    if not listed:
        notes.append(f"The CVAT export has no ImageSets/Segmentation/ lists: its {len(masks)} masks are one subset")
        return {DEFAULT_SUBSET: _pairs(DEFAULT_SUBSET, sorted(masks), images, masks, notes)}
    return {
        subset: _pairs(subset, _listed(read_text(member), member, source), images, masks, notes)
        for subset, member in sorted(listed.items())
    }


def _platform_folders(names: list[str], root: str, side: str, source: object) -> dict[str, str]:
    """Lower-cased split -> the folder ``<root><side>/<split>/`` as the dataset spells it."""
    found: dict[str, str] = {}
    for name in names:
        parts = name[len(root) :].split("/")
        if not name.startswith(root) or len(parts) < 3 or parts[0] != side or parts[1].lower() not in PLATFORM_SPLITS:
            continue
        spelling = found.setdefault(parts[1].lower(), parts[1])
        if spelling != parts[1]:
            first, second = sorted((spelling, parts[1]))
            raise UserError(
                f"The dataset {source} has both {side}/{shown(first)}/ and {side}/{shown(second)}/; keep one of them"
            )
    return found


def _platform(names: list[str], root: str, source: object, notes: list[str]) -> dict[str, list[Pair]]:
    """One subset per split folder, named as ``images/`` spells it (``masks/`` may spell it in another case)."""
    image_folders = _platform_folders(names, root, "images", source)
    mask_folders = _platform_folders(names, root, "masks", source)
    subsets = {}
    for split in sorted(set(image_folders) | set(mask_folders)):
        subset = image_folders.get(split) or mask_folders[split]
        images = _by_stem(names, f"{root}images/{image_folders.get(split, subset)}/", IMAGE_EXTENSIONS, source)
        masks = _by_stem(names, f"{root}masks/{mask_folders.get(split, subset)}/", (".png",), source)
        if images or masks:
            subsets[subset] = _pairs(subset, sorted(set(images) | set(masks)), images, masks, notes)
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
    """The subsets called one of ``names``, in any case; two of one role are refused (which would train?)."""
    found = sorted(subset for subset in subsets if subset.lower() in names)
    if len(found) > 1:
        raise UserError(
            f"The dataset has both a '{shown(found[0])}' and a '{shown(found[1])}' subset; keep one of them"
        )
    return found


def test_subset(subsets: dict[str, list[Pair]]) -> tuple[str, list[Pair]] | None:
    """The held-out test subset (its name and pairs), None when the dataset has none."""
    found = _subsets_named(subsets, TEST_SUBSETS)
    return (found[0], subsets[found[0]]) if found else None


def choose_splits(
    subsets: dict[str, list[Pair]], fraction: float, seed: int
) -> tuple[list[Pair], list[Pair], list[str]]:
    """(train, validation, notes): the train and validation subsets as such, or the train subset (or
    the only one besides a test subset) split by ``fraction``. The test subset is in neither."""
    test = test_subset(subsets)
    train_names, validation_names = _subsets_named(subsets, TRAIN_SUBSETS), _subsets_named(subsets, VALIDATION_SUBSETS)
    others = sorted(set(subsets) - {test[0]} if test else set(subsets))
    if train_names:
        train_name, validation_name = train_names[0], (validation_names or [None])[0]
    elif len(others) == 1:  # CVAT's 'default' alone, or beside a test subset: split, whatever its name
        train_name, validation_name = others[0], None
    else:
        raise UserError(
            f"The dataset has the subsets {', '.join(map(shown, sorted(subsets)))}; name them train and val, or "
            "export a single subset to be split by validation_fraction"
        )
    unused = sorted(set(others) - {train_name, validation_name})
    notes = [f"The dataset's subsets {', '.join(map(shown, unused))} are not used for training"] if unused else []
    if test:
        notes.append(
            f"The dataset's '{shown(test[0])}' subset ({len(test[1])} pairs) is held out: it chooses no epoch and "
            "is scored once, at the end of training"
        )
    train = subsets[train_name]
    if not train:
        raise UserError(f"The dataset's '{shown(train_name)}' subset has no image/mask pair")
    if validation_name is not None and subsets[validation_name]:
        notes.append(
            f"The dataset's '{shown(train_name)}' subset trains, its '{shown(validation_name)}' subset validates"
        )
        return train, subsets[validation_name], notes
    train, validation, note = _split(train, fraction, seed, train_name)
    return train, validation, [*notes, note]
