"""Class-id masks written as a CVAT "Segmentation mask 1.1" zip: what ``layouts`` reads, written.

CVAT imports such a zip as annotations of a task's images, matched by name, and the ``dataset``
channel trains on it as it is. Its members, ``<name>`` being an image's name without extension
(sub-folders kept):

- ``labelmap.txt``: CVAT's comment line, then one line per class in class-id order
  (``labelmap_txt.text``), so that a class id read back from the line of its colour is the id written;
- ``SegmentationClass/<name>.png``: RGB, each pixel the colour of its class;
- ``SegmentationObject/<name>.png``: RGB, each connected region of a class other than the background
  (8-connected, as the CVAT detector's shapes) its own instance, coloured with the PASCAL VOC colour
  of its instance number 1, 2, ... (the colours CVAT's dataset library reads instances by); the
  background is black. An image has at most ``MAX_INSTANCES``: each class's largest regions are
  numbered first, and a region past the last number joins its class's largest, so every pixel keeps
  its class;
- ``ImageSets/Segmentation/default.txt``: the names, one a line (CVAT's subset of a task without subsets);
- ``JPEGImages/<name><extension>``: the image's bytes unchanged, as CVAT exports with "Save images".

The zip is written under a temporary name and renamed once complete (``files.write_atomically``):
a batch that fails half-way leaves no zip that looks whole.
"""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ... import classes
from ...classes import ClassTable, voc_colors
from ...errors import UserError
from ...files import write_atomically
from ...names import relative_path
from . import labelmap_txt
from .layouts import CLASS_MASKS, DEFAULT_SUBSET, IMAGES, LABEL_MAP, LISTS, OBJECT_MASKS

MAX_INSTANCES = 254  # VOC colours 1..254: 0 is the background, 255 VOC's border colour
_INSTANCE_COLOURS = np.asarray(voc_colors(), dtype=np.uint8)
T = TypeVar("T")


def instances(ids: np.ndarray, background: int) -> np.ndarray:
    """uint8 instance numbers (0: none) of the connected regions of each class but ``background``."""
    labelled, queue = {}, []  # queue: (rank of the region in its class by size, class, region label)
    for class_id in map(int, np.unique(ids)):
        if class_id == background:
            continue
        regions, count = classes.regions(ids == class_id)
        sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
        labelled[class_id] = regions
        queue.extend((rank, class_id, int(region) + 1) for rank, region in enumerate(np.argsort(-sizes, kind="stable")))
    lookup = {class_id: np.zeros(regions.max() + 1, dtype=np.uint8) for class_id, regions in labelled.items()}
    largest: dict[int, int] = {}  # class -> the number of its largest region (numbered first: rank 0)
    for number, (_, class_id, region) in enumerate(sorted(queue), 1):
        number = number if number <= MAX_INSTANCES else largest[class_id]
        largest.setdefault(class_id, number)
        lookup[class_id][region] = number
    objects = np.zeros(ids.shape, dtype=np.uint8)
    for class_id, regions in labelled.items():
        inside = regions > 0
        objects[inside] = lookup[class_id][regions[inside]]
    return objects


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class Writer:
    """The members of one open zip; ``add`` may be called from several threads."""

    def __init__(self, archive: zipfile.ZipFile, table: ClassTable):
        self.archive, self.table = archive, table
        self.colours = np.asarray(table.colors, dtype=np.uint8)
        self.background = classes.background_id(table)
        self.names: list[str] = []
        self.lock = threading.Lock()

    def add(self, name: str, ids: np.ndarray, image: bytes, extension: str) -> None:
        """One image: ``ids`` its uint8 (H, W) class ids, ``image`` its file's bytes, ``extension`` its own."""
        relative_path(name, "image name")  # the caller checked it; a member name never leaves the zip's tree
        if ids.size and int(ids.max()) >= len(self.table):
            raise UserError(
                f"the answer holds class id {int(ids.max())}, beyond the {len(self.table)} classes of the class table"
            )
        class_mask = _png(self.colours[ids])
        object_mask = _png(_INSTANCE_COLOURS[instances(ids, self.background)])
        with self.lock:
            self.archive.writestr(f"{IMAGES}{name}{extension}", image, zipfile.ZIP_STORED)
            self.archive.writestr(f"{CLASS_MASKS}{name}.png", class_mask, zipfile.ZIP_STORED)
            self.archive.writestr(f"{OBJECT_MASKS}{name}.png", object_mask, zipfile.ZIP_STORED)
            self.names.append(name)

    def finish(self, labelmap: str) -> None:
        listed = "".join(f"{name}\n" for name in sorted(self.names))
        self.archive.writestr(f"{LISTS}{DEFAULT_SUBSET}.txt", listed, zipfile.ZIP_DEFLATED)
        self.archive.writestr(LABEL_MAP, labelmap, zipfile.ZIP_DEFLATED)


def write(path: Path, table: ClassTable, source: str, fill: Callable[[Writer], T]) -> T:
    """Write the zip at ``path``: ``fill(writer)`` adds the images, then the list and label map follow;
    returns what ``fill`` returns.

    ``source`` names where ``table`` came from, for the sentence refusing a class name that
    ``labelmap.txt`` cannot hold (checked before anything is written). Whatever ``fill`` raises
    leaves ``path`` as it was.
    """
    labelmap = labelmap_txt.text(table, source)

    filled = []

    def write_zip(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w") as archive:
            writer = Writer(archive, table)
            filled.append(fill(writer))
            writer.finish(labelmap)

    write_atomically(path, write_zip)
    return filled[0]
