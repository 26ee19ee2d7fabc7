"""Class names and colours: what a class id means to a person.

A model directory may hold ``classes.json`` beside the built-in's three files (written when the
training data named its classes, e.g. a CVAT ``labelmap.txt``). Everything that shows classes to a
person reads it through ``load``: the serving PNG palette, the JSON answer, the training logs and the
report. A model without it gets names ``class_0 ..`` and the PASCAL VOC colour map, as the built-in.

Format: ``{"classes": [{"id": 0, "name": "background", "color": [0, 0, 0]}, ...]}``, ids ``0 ..
num_classes-1`` in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .files import write_atomically
from .names import shown

FILE_NAME = "classes.json"
BACKGROUND_NAME = "background"


def voc_colors(count: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map: distinct colours for class ids, so a mask is viewable as is."""
    colors = []
    for index in range(count):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colors.append((red, green, blue))
    return colors


@dataclass(frozen=True)
class ClassTable:
    """Names and RGB colours of classes ``0 .. len(names)-1``."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise ValueError("a class table needs one colour per name")

    def __len__(self) -> int:
        return len(self.names)

    def palette(self) -> list[int]:
        """A 768-entry PNG palette: the table's colours, then VOC colours for the ids above them."""
        rest = voc_colors()[len(self.colors) :]
        return [channel for color in (*self.colors, *rest) for channel in color]

    def name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else f"class_{class_id}"

    def to_json(self) -> dict:
        return {
            "classes": [
                {"id": index, "name": name, "color": list(color)}
                for index, (name, color) in enumerate(zip(self.names, self.colors, strict=True))
            ]
        }


def background_id(table: ClassTable) -> int:
    """The class whose regions are no objects (no CVAT shape or instance): the one named ``background``
    in any case, wherever it is (CVAT's label maps are sorted by name), else class 0."""
    for class_id, name in enumerate(table.names):
        if name.casefold() == BACKGROUND_NAME:
            return class_id
    return 0


def regions(mask):
    """``(labels, count)``: the connected regions of a boolean mask, numbered from 1 as
    ``scipy.ndimage.label`` numbers them, diagonal neighbours joined (8-connected), so that each
    region of a CVAT shape or instance has one outer contour."""
    import numpy as np
    from scipy import ndimage  # here: most users of class tables never split a mask

    return ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))


def default(num_classes: int) -> ClassTable:
    """``class_0 ..`` in VOC colours: what a model without ``classes.json`` shows."""
    return ClassTable(tuple(f"class_{i}" for i in range(num_classes)), tuple(voc_colors()[:num_classes]))


def checked(names: list[str], colors: list[tuple[int, int, int]], source: str, place=None) -> ClassTable:
    """The class table, once no colour names two classes and no name is given twice: the one rule
    for ``classes.json`` and ``labelmap.txt``, since a mask's colour must mean one class and a
    legend's share one name. ``place(index)`` says where entry ``index`` is ("line 3")."""
    place = place or (lambda index: f"class {index}")
    for index, (name, color) in enumerate(zip(names, colors, strict=True)):
        first = colors.index(color)
        if first < index:
            raise UserError(
                f"{source} gives the colour {','.join(map(str, color))} two names ('{shown(names[first])}' and "
                f"'{shown(name)}' on {place(index)}); each colour must name one class"
            )
        if names.index(name) < index:
            raise UserError(f"{source} names the class '{shown(name)}' twice (the second time on {place(index)})")
    return ClassTable(tuple(names), tuple(colors))


def from_json(spec: object, source: str) -> ClassTable:
    """Parse the ``classes.json`` object; any deviation is one sentence naming ``source``."""
    entries = spec.get("classes") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{source} must be a JSON object with a non-empty 'classes' list")
    names, colors = [], []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("id") != position:
            raise UserError(f'{source}: entry {position} must be an object with "id": {position}')
        name, color = entry.get("name"), entry.get("color")
        if not isinstance(name, str) or not name:
            raise UserError(f"{source}: class {position} needs a non-empty 'name'")
        if not (isinstance(color, list) and len(color) == 3 and all(type(c) is int and 0 <= c <= 255 for c in color)):
            raise UserError(f"{source}: class {position} ({shown(name)}) needs a 'color' of three integers 0..255")
        names.append(name)
        colors.append(tuple(color))
    return checked(names, colors, source)


def from_text(text: bytes | str, source: str) -> ClassTable:
    """A ``classes.json`` as read from a file or an archive member; ``source`` names it."""
    try:
        spec = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{source} is not valid JSON ({exc})") from None
    return from_json(spec, source)


def save(table: ClassTable, model_dir: Path) -> Path:
    """Write ``classes.json`` into ``model_dir`` atomically (the artifacts' own writer)."""
    path = Path(model_dir) / FILE_NAME
    text = json.dumps(table.to_json(), indent=1)
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))
    return path


def load(model_dir: Path, num_classes: int) -> ClassTable:
    """The model's class table, or ``default(num_classes)`` when it has no ``classes.json``."""
    path = Path(model_dir) / FILE_NAME
    if not path.exists():
        return default(num_classes)
    table = from_text(path.read_bytes(), str(path))
    if len(table) != num_classes:
        raise UserError(f"{path} names {len(table)} classes but the model has num_classes={num_classes}")
    return table
