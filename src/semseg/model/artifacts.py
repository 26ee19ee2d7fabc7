"""The model artifacts, written as the built-in writes them and read back for serving or more training.

``model/`` holds ``hyperparams.json`` (the final configuration, string values), ``model_best.params``
(weights of the best validation mIoU) and ``model_<host>`` (final weights). Every file is written to
a temporary name and renamed, so a crash or a kill never leaves a half-written file behind:
every file is written through ``files.write_atomically``; archives from users (a ``model.tar.gz`` in
the ``model`` channel or the serving model directory) are unpacked by ``archives.extract_archive``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .. import paths
from ..archives import extract_archive, model_archive
from ..errors import UserError
from ..files import write_atomically
from ..hyperparameters import ALGORITHM_BACKBONES, ARCHITECTURE_KEYS, parse, to_string

log = logging.getLogger(__name__)


def save_parameters(net, path: Path) -> None:
    write_atomically(path, net.save_parameters)


def save_hyperparameters(hp: dict, model_dir: Path) -> None:
    text = json.dumps({k: to_string(v) for k, v in hp.items() if v is not None}, indent=2, sort_keys=True)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text + "\n")

    write_atomically(model_dir / paths.HYPERPARAMS_FILE, write)


def save_class_pixels(class_pixels, model_dir: Path) -> None:
    """The training masks' pixels per class (``class_pixels.json``); nothing when none were counted
    (Pipe mode streams the masks once, without counting them unless ``class_weights=auto``)."""
    counts = [int(count) for count in class_pixels]
    if not sum(counts):
        return
    text = json.dumps({"class_pixels": counts}) + "\n"
    write_atomically(model_dir / paths.CLASS_PIXELS_FILE, lambda tmp: Path(tmp).write_text(text))


def read_class_shares(model_dir: Path, num_classes: int) -> list[float] | None:
    """Each class's share of the training masks' pixels, from ``class_pixels.json``; None when the
    model has none (older models, Pipe mode) or it does not fit the model, which is logged."""
    path = model_dir / paths.CLASS_PIXELS_FILE
    if not path.is_file():
        return None
    try:
        counts = json.loads(path.read_text())["class_pixels"]
        valid = len(counts) == num_classes and all(isinstance(c, int) and c >= 0 for c in counts) and sum(counts)
    except (ValueError, UnicodeDecodeError, KeyError, TypeError):
        valid = False
    if not valid:
        log.warning("Ignoring %s: it does not hold %d pixel counts", path, num_classes)
        return None
    return [count / sum(counts) for count in counts]


def unpack_model_dir(directory: Path, scratch: Path) -> Path:
    """The directory holding the model files: ``directory`` itself, or where its tar.gz unpacks
    (``directory`` may also be the archive itself)."""
    if directory.is_file():
        extract_archive(directory, scratch)
        return scratch
    if (directory / paths.HYPERPARAMS_FILE).exists():
        return directory
    archive = model_archive(directory)
    if archive is None:
        return directory
    extract_archive(archive, scratch)
    return scratch


def model_to_serve(path: Path) -> Path:
    """What ``semseg serve --model PATH`` serves: a model directory (its files or a model.tar.gz in
    it), a model.tar.gz itself, or a training job's /opt/ml root, whose ``model/`` it then is."""
    if not path.exists():
        raise UserError(f"There is no model at {path}: give a model directory, a model.tar.gz or a job's /opt/ml root")
    if path.is_file() or (path / paths.HYPERPARAMS_FILE).exists() or any(path.glob("*.tar.gz")):
        return path.resolve()
    if (paths.model_dir(path) / paths.HYPERPARAMS_FILE).exists():
        return paths.model_dir(path).resolve()
    raise UserError(
        f"{path} holds no model: neither {paths.HYPERPARAMS_FILE} nor a model.tar.gz, in it or in its model/ folder"
    )


def read_hyperparameters(model_dir: Path) -> dict:
    path = model_dir / paths.HYPERPARAMS_FILE
    if not path.exists():
        raise UserError(f"The model directory {model_dir} has no {paths.HYPERPARAMS_FILE}")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"The model file {path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"The model file {path} must hold a JSON object of hyperparameters, not a {type(raw).__name__}")
    return parse(raw)


def weights_file(model_dir: Path) -> Path:
    """``model_best.params``, else the final weights ``model_<host>`` (the first one found)."""
    best = model_dir / paths.BEST_PARAMS
    if best.is_file():
        return best
    finals = sorted(model_dir.glob(paths.HOST_MODEL_PREFIX + "*"))
    finals = [p for p in finals if p.is_file() and not p.name.endswith((".json", ".onnx"))]
    if not finals:
        raise UserError(f"The model directory {model_dir} has neither {paths.BEST_PARAMS} nor model_algo-1")
    return finals[0]


def _ignored(key: str, new: dict, previous: dict) -> bool:
    """The backbone of an algorithm with its own (fastscnn) is not part of its architecture."""
    same_algorithm = new["algorithm"] == previous["algorithm"]
    return key == "backbone" and same_algorithm and not ALGORITHM_BACKBONES.get(new["algorithm"], True)


def check_same_architecture(new: dict, previous: dict) -> None:
    mismatched = [k for k in ARCHITECTURE_KEYS if new[k] != previous[k] and not _ignored(k, new, previous)]
    if mismatched:
        details = ", ".join(f"{k} is {new[k]!r} here but {previous[k]!r} in the model" for k in mismatched)
        raise UserError(
            f"The model channel holds a model of a different architecture: {details}; "
            "backbone, algorithm, crop_size and num_classes must match for incremental training"
        )
