"""Label maps: how encoded mask values become class ids (SageMaker's ``scale`` and ``map``).

A label map is compiled into a 256-entry lookup table, so applying it is one indexing
operation. The table always sends 255 to the ignore label, and any value that does not land in
``0 .. num_classes-1`` to ignore too (counted, so training can warn once).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import logs
from ..errors import UserError

IGNORE_LABEL = -1  # GluonCV's loss and metric ignore only negative labels
IGNORE_VALUE = 255  # the value that means "ignore" in an encoded mask
DEFAULT_LABEL_MAP = {"scale": 1}


def load(label_map_dir: Path | None, split: str) -> dict:
    """Read ``<split>_label_map.json`` from the label_map channel, or the identity default."""
    if label_map_dir is None or not (label_map_dir / f"{split}_label_map.json").exists():
        logs.label_map(split, DEFAULT_LABEL_MAP, default=True)
        return dict(DEFAULT_LABEL_MAP)
    path = label_map_dir / f"{split}_label_map.json"
    try:
        spec = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"The label map {path} is not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or not ({"scale", "map"} & set(spec)):
        raise UserError(f"The label map {path} must be a JSON object with a 'scale' or a 'map' entry")
    logs.label_map(split, spec, default=False)
    return spec


def lookup_table(spec: dict, num_classes: int, source: str = "label map") -> np.ndarray:
    """A (256,) int32 table: encoded value -> class id, or IGNORE_LABEL."""
    encoded = np.arange(256)
    if "map" in spec:  # 'map' wins when both are given
        table = np.full(256, IGNORE_LABEL, dtype=np.int32)
        mapping = spec["map"]
        if not isinstance(mapping, dict):
            raise UserError(f"The 'map' of the {source} must be an object of class id -> encoded value")
        for class_id, value in mapping.items():
            try:
                cls, val = int(class_id), int(value)
            except (TypeError, ValueError):
                raise UserError(
                    f"The 'map' of the {source} has the entry {class_id!r}: {value!r}; "
                    "keys must be class ids and values encoded pixel values, both integers"
                ) from None
            if not 0 <= val <= 255:
                raise UserError(f"The 'map' of the {source} sends class {cls} to {val}, outside 0..255")
            table[val] = cls
    else:
        try:
            scale = float(spec["scale"])
        except (TypeError, ValueError):
            scale = math.nan
        if not scale > 0:
            raise UserError(f"The 'scale' of the {source} must be a positive number, not {spec['scale']!r}")
        table = np.floor(encoded / scale).astype(np.int32)
    table[IGNORE_VALUE] = IGNORE_LABEL
    table[(table < 0) | (table >= num_classes)] = IGNORE_LABEL
    return table


def out_of_range_values(spec: dict, num_classes: int) -> np.ndarray:
    """Encoded values (other than 255) that the table turns into ignore: a boolean (256,) mask."""
    table = lookup_table(spec, num_classes)
    dropped = table == IGNORE_LABEL
    dropped[IGNORE_VALUE] = False
    return dropped
