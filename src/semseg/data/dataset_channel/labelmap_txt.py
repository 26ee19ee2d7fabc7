"""CVAT's ``labelmap.txt`` and the RGB masks whose colours it names.

Each line that is not blank or a ``#`` comment is ``name:r,g,b:parts:actions`` (parts and actions
are usually empty and are not used here); a class id is the line's index among those lines, so
the first line is class 0. A mask pixel whose colour no line names becomes "ignore" (255), and the
colours are counted so the job can say once per split what it ignored. ``text`` writes a table
back in the same form, with CVAT's comment line first.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ... import classes
from ...classes import ClassTable
from ...errors import UserError
from ...hyperparameters import TABLE
from ...names import has_unsafe_characters, shown
from ..label_map import IGNORE_VALUE
from .layouts import LABEL_MAP

MAX_CLASSES = int(TABLE["num_classes"].high)
LINE_RULE = "expected name:r,g,b:parts:actions, for example car:250,50,83::"
HEADER = "# label:color_rgb:parts:actions"  # the comment line CVAT writes first


def _colour(text: str) -> tuple[int, int, int] | None:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        return None
    colour = tuple(int(p) for p in parts)
    return colour if all(c <= 255 for c in colour) else None


def parse(text: str, source: str) -> ClassTable:
    """The classes of a label map, in line order; any line that does not parse is one sentence."""
    names: list[str] = []
    colours: list[tuple[int, int, int]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        colour = _colour(fields[1]) if 2 <= len(fields) <= 4 else None
        name = fields[0].strip()
        if colour is None or not name:
            raise UserError(f"Line {number} of {source} ('{shown(line[:80])}') does not parse: {LINE_RULE}")
        names.append(name)
        colours.append(colour)
        line_numbers.append(number)
    if len(names) < 2 or len(names) > MAX_CLASSES:
        raise UserError(f"{source} names {len(names)} classes; a label map must name 2 to {MAX_CLASSES}")
    return classes.checked(names, colours, source, lambda index: f"line {line_numbers[index]}")


def text(table: ClassTable, source: str) -> str:
    """``table`` as a ``labelmap.txt``, one line per class in id order, so that ``parse`` reads it back
    as the same table; a name that a line cannot hold as it is (a ``:``, a leading ``#``, spaces at
    either end, control characters) is refused in one sentence naming ``source``."""
    for name in table.names:
        if ":" in name or name.startswith("#") or name != name.strip() or has_unsafe_characters(name):
            raise UserError(
                f"The class name '{shown(name)}' of {source} cannot be a line of {LABEL_MAP}: a name there "
                "holds no ':' or control characters and neither starts with '#' nor begins or ends with a space"
            )
    lines = [f"{name}:{','.join(map(str, colour))}::" for name, colour in zip(table.names, table.colors)]
    return "\n".join([HEADER, *lines, ""])


def _keys(colours) -> np.ndarray:
    array = np.asarray(colours, dtype=np.uint32).reshape(-1, 3)
    return (array[:, 0] << 16) | (array[:, 1] << 8) | array[:, 2]


def rgb_to_ids(rgb: np.ndarray, colours: tuple[tuple[int, int, int], ...]) -> tuple[np.ndarray, Counter]:
    """(uint8 (H, W) class ids with 255 for unknown colours, pixel count of each unknown colour)."""
    keys = _keys(rgb[:, :, :3])
    known = _keys(colours)
    order = np.argsort(known)
    sorted_keys = known[order]
    position = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    found = sorted_keys[position] == keys
    ids = np.where(found, order[position], IGNORE_VALUE).astype(np.uint8)
    unknown_keys, counts = np.unique(keys[~found], return_counts=True)
    unknown = Counter(
        {(int(k >> 16), int((k >> 8) & 255), int(k & 255)): int(n) for k, n in zip(unknown_keys, counts, strict=True)}
    )
    return ids.reshape(rgb.shape[:2]), unknown
