"""Dataset zips built by the documented rules, from the sample task of ``semseg.sample_data``.

CVAT's "Segmentation Mask 1.1": ``labelmap.txt`` (``# label:color_rgb:parts:actions``, then one
``name:r,g,b:parts:actions`` line per class, background first), ``SegmentationClass/<name>.png``
(each pixel in its class's colour), ``ImageSets/Segmentation/<subset>.txt`` (names without
extension), ``JPEGImages/<name>.jpg``. The platform's: ``images/{train,val,test}/``,
``masks/{train,val,test}/`` and CVAT's ``labelmap.txt``. Masks are RGB (the label map's colours) or
one-channel PNGs of class ids.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from semseg.sample_data import DEFAULT_SIZES, make_pair

NAMES = ("background", "disc", "rectangle", "triangle")
COLOURS = ((0, 0, 0), (250, 50, 83), (36, 179, 83), (61, 61, 245))
LABELMAP = "# label:color_rgb:parts:actions\n" + "".join(
    f"{name}:{','.join(map(str, colour))}::\n" for name, colour in zip(NAMES, COLOURS, strict=True)
)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def rgb_mask(ids: np.ndarray) -> np.ndarray:
    return np.asarray(COLOURS, dtype=np.uint8)[ids]


def sample(count: int, seed: int = 0) -> list[tuple[bytes, np.ndarray]]:
    """(JPEG bytes, class ids) of ``count`` sample-task pairs."""
    rng = np.random.RandomState(seed)
    pairs = []
    for i in range(count):
        image, mask = make_pair(rng, *DEFAULT_SIZES[i % len(DEFAULT_SIZES)])
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        pairs.append((buffer.getvalue(), np.asarray(mask, dtype=np.uint8)))
    return pairs


def mask_bytes(ids: np.ndarray, rgb: bool) -> bytes:
    return png(rgb_mask(ids) if rgb else ids)


def cvat_members(
    subsets: dict[str, int], rgb: bool = True, top: str = "task_1/", labelmap: bool = True, seed: int = 0
) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """(member name -> bytes, image name -> class ids) of a CVAT export with these subset sizes.

    Every third name sits in a sub-folder, as in tasks made from folders of images.
    """
    members, truth = {}, {}
    pairs = iter(sample(sum(subsets.values()), seed))
    for subset, count in subsets.items():
        names = []
        for i in range(count):
            jpeg, ids = next(pairs)
            name = f"street/{subset}_{i:03d}" if i % 3 == 2 else f"{subset}_{i:03d}"
            members[f"{top}JPEGImages/{name}.jpg"] = jpeg
            members[f"{top}SegmentationClass/{name}.png"] = mask_bytes(ids, rgb)
            names.append(name)
            truth[name] = ids
        members[f"{top}ImageSets/Segmentation/{subset}.txt"] = "".join(f"{n}\n" for n in names).encode()
    if labelmap:
        members[f"{top}labelmap.txt"] = LABELMAP.encode()
    return members, truth


def platform_members(train: int, val: int, rgb: bool = True, top: str = "Dataset/", test: int = 0) -> dict[str, bytes]:
    """The platform's zip: ``images/<split>/`` and ``masks/<split>/`` for train, val and (when ``test``) test."""
    members = {f"{top}labelmap.txt": LABELMAP.encode()}
    pairs = iter(sample(train + val + test))
    for split, count in (("train", train), ("val", val), ("test", test)):
        for i in range(count):
            jpeg, ids = next(pairs)
            members[f"{top}images/{split}/{split}{i:03d}.jpg"] = jpeg
            members[f"{top}masks/{split}/{split}{i:03d}.png"] = mask_bytes(ids, rgb)
    return members


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_tree(root: Path, members: dict[str, bytes]) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root
