"""The held-out images an evaluation scores, from any of the layouts training reads.

- A folder in the File-mode layout (``test`` and ``test_annotation``, or ``validation`` and
  ``validation_annotation``, as under /opt/ml/input/data; ``label_map/`` beside them applies);
- a dataset zip, or its tree unzipped, in either layout of the ``dataset`` channel (CVAT's
  Segmentation Mask 1.1 or the annotation platform's ``images/``/``masks/``): a subset named by
  ``subset``, by default the test subset when there is one, else the validation split exactly as
  training drew it (the model's ``validation_fraction`` and ``_seed``).

Dataset masks are turned into class ids with the dataset channel's own code, so they mean what
they meant in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import file_mode, label_map
from ..data.dataset_channel import layouts
from ..data.dataset_channel.prepare import open_dataset_at, write_pairs
from ..data.file_mode import Sample
from ..errors import UserError
from ..names import shown

FILE_MODE_SPLITS = ("test", "validation")  # the File-mode pairs an evaluation takes, first found first


@dataclass
class HeldOut:
    samples: list[Sample]
    table: np.ndarray  # mask value -> class id (-1: ignored), as ``data.label_map`` makes it
    description: str  # what was taken, for the log and the report


def held_out(path: Path, subset: str | None, hp: dict, scratch: Path) -> HeldOut:
    """The image/mask pairs at ``path`` to score a model of hyperparameters ``hp`` on.

    ``scratch``: an empty folder that dataset pairs are written out to as File-mode pairs.
    """
    if not path.exists():
        raise UserError(f"There is no data at {path}: give a folder of File-mode pairs, a dataset zip or its folder")
    if path.is_dir():
        for split in (subset,) if subset else FILE_MODE_SPLITS:
            if (path / split).is_dir() and (path / f"{split}_annotation").is_dir():
                return _file_mode(path, split, hp)
        pairs = sorted(entry.name[: -len("_annotation")] for entry in path.glob("*_annotation") if entry.is_dir())
        if subset and pairs:
            raise UserError(
                f"The data {path} has no File-mode pair '{shown(subset)}' and '{shown(subset)}_annotation'; "
                f"it has {', '.join(map(shown, pairs))}"
            )
    elif path.suffix.lower() != ".zip":
        raise UserError(f"The data {path} is a file but not a .zip; give a dataset zip or a folder")
    return _from_dataset(path, subset, hp, scratch)


def _file_mode(path: Path, split: str, hp: dict) -> HeldOut:
    label_maps = path / "label_map"
    spec = label_map.load(label_maps if label_maps.is_dir() else None, split)
    samples = file_mode.find_pairs(path / split, path / f"{split}_annotation")
    table = label_map.lookup_table(spec, hp["num_classes"], f"{split} label map")
    return HeldOut(samples, table, f"the '{split}' pairs of {path} ({len(samples)} images)")


def _from_dataset(path: Path, subset: str | None, hp: dict, scratch: Path) -> HeldOut:
    with open_dataset_at(path) as opened:
        subsets = opened.layout.subsets
        if opened.table is not None and len(opened.table) != hp["num_classes"]:
            raise UserError(
                f"The model has {hp['num_classes']} classes but the dataset {path} names {len(opened.table)} in its "
                "labelmap.txt; evaluate a model on data labelled with its classes"
            )
        if subset is not None:
            matching = [name for name in subsets if name.lower() == subset.lower()]
            if not matching:
                raise UserError(
                    f"The dataset {path} has no subset '{shown(subset)}'; "
                    f"it has {', '.join(map(shown, sorted(subsets)))}"
                )
            chosen, what = subsets[matching[0]], f"the '{shown(matching[0])}' subset"
        else:
            chosen, what = _default_subset(subsets, hp)
        if not chosen:
            raise UserError(f"{what[0].upper()}{what[1:]} of the dataset {path} has no image/mask pair")
        images, masks = scratch / "images", scratch / "masks"
        write_pairs(opened, chosen, images, masks, hp["num_classes"], "evaluation")
    samples = file_mode.find_pairs(images, masks)
    table = label_map.lookup_table(label_map.DEFAULT_LABEL_MAP, hp["num_classes"], "dataset masks")
    return HeldOut(samples, table, f"{what} of {path} ({len(samples)} images)")


def _default_subset(subsets: dict, hp: dict) -> tuple[list, str]:
    test = layouts.test_subset(subsets)
    if test is not None:
        return test[1], f"the '{shown(test[0])}' subset"
    _, validation, _ = layouts.choose_splits(subsets, hp["validation_fraction"], hp["_seed"])
    return validation, (
        f"the validation split as training drew it (validation_fraction={hp['validation_fraction']:g}, "
        f"seed {hp['_seed']})"
    )
