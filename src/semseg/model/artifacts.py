"""The model artifacts, written as the built-in writes them and read back for serving or more training.

``model/`` holds ``hyperparams.json`` (the final configuration, string values), ``model_best.params``
(weights of the best validation mIoU) and ``model_<host>`` (final weights). Every file is written to
a temporary name and renamed, so a crash or a kill never leaves a half-written file behind.
Archives from users (a ``model.tar.gz`` in the ``model`` channel or the serving model directory)
are extracted refusing absolute paths, ``..`` and links.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

from .. import paths
from ..errors import UserError, explained_write_failure, one_line
from ..hyperparameters import ARCHITECTURE_KEYS, parse, to_string
from ..inference.settings import whole_number

log = logging.getLogger(__name__)


PARTIAL_MARK = ".tmp"  # a file being written is ".<name>.tmp<pid>" beside its final name


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; the old file stays until the new one is whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}")
    try:
        with explained_write_failure(path):
            write(str(tmp))
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_partial_files(directory: Path) -> None:
    """Delete what a killed job left half-written (``write_atomically``'s hidden temporary files).

    A SIGKILL runs no cleanup, so the next job does it before it writes, lest SageMaker package them.
    """
    for partial in directory.glob(f".*{PARTIAL_MARK}*"):
        log.info("Removing %s, left half-written by an earlier job", partial)
        partial.unlink(missing_ok=True)


def save_parameters(net, path: Path) -> None:
    write_atomically(path, net.save_parameters)


def save_hyperparameters(hp: dict, model_dir: Path) -> None:
    text = json.dumps({k: to_string(v) for k, v in hp.items() if v is not None}, indent=2, sort_keys=True)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text + "\n")

    write_atomically(model_dir / paths.HYPERPARAMS_FILE, write)


MAX_EXTRACTED_BYTES_ENV = "SEMSEG_MAX_EXTRACTED_BYTES"
MAX_EXTRACTED_BYTES = 8 << 30  # a ResNet-101 model with its ONNX export is under 1 GiB
MAX_EXTRACTED_BYTES_LIMIT = 1 << 40  # 1 TiB: more than any disk a training or serving instance has


def max_extracted_bytes() -> int:
    """How much an archive from a user may unpack to: ``$SEMSEG_MAX_EXTRACTED_BYTES`` or 8 GiB."""
    raw = os.environ.get(MAX_EXTRACTED_BYTES_ENV, "").strip()
    if not raw:
        return MAX_EXTRACTED_BYTES
    return whole_number(raw, f"The environment variable {MAX_EXTRACTED_BYTES_ENV}", 1, MAX_EXTRACTED_BYTES_LIMIT)


def check_extracted_size(total: int, source: Path) -> None:
    """Refuse, before writing anything, an archive whose members add up to more than the cap."""
    cap = max_extracted_bytes()
    if total > cap:
        raise UserError(
            f"The archive {source} would extract {total / 2**20:.1f} MiB, more than the {cap / 2**20:.1f} MiB "
            f"allowed; raise {MAX_EXTRACTED_BYTES_ENV} if it really holds that much"
        )


def _safe_members(archive: tarfile.TarFile, source: Path) -> list[tarfile.TarInfo]:
    members = []
    for member in archive.getmembers():
        name = member.name
        if name.startswith("/") or ".." in Path(name).parts:
            raise UserError(f"The archive {source} holds the unsafe path '{name}'; refusing to extract it")
        if member.issym() or member.islnk() or member.isdev():
            raise UserError(f"The archive {source} holds the link or device '{name}'; refusing to extract it")
        if member.isfile() or member.isdir():
            members.append(member)
    check_extracted_size(sum(member.size for member in members if member.isfile()), source)
    return members


def extract_archive(archive_path: Path, destination: Path) -> None:
    try:
        with tarfile.open(archive_path) as archive:
            archive.extractall(destination, members=_safe_members(archive, archive_path), filter="data")
    except tarfile.ReadError:
        raise UserError(
            f"The model archive {archive_path} is not a tar archive (plain or compressed with gzip, bzip2 or xz); "
            "make it with tar -czf model.tar.gz and the model files"
        ) from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"The model archive {archive_path} could not be read ({one_line(exc)})") from None


def unpack_model_dir(directory: Path, scratch: Path) -> Path:
    """The directory holding the model files: ``directory`` itself, or where its tar.gz unpacks
    (``directory`` may also be the archive itself)."""
    if directory.is_file():
        extract_archive(directory, scratch)
        return scratch
    if (directory / paths.HYPERPARAMS_FILE).exists():
        return directory
    archives = sorted(directory.glob("*.tar.gz")) + sorted(directory.glob("*.tgz"))
    if not archives:
        return directory
    extract_archive(archives[0], scratch)
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


def check_same_architecture(new: dict, previous: dict) -> None:
    mismatched = [k for k in ARCHITECTURE_KEYS if new[k] != previous[k]]
    if mismatched:
        details = ", ".join(f"{k} is {new[k]!r} here but {previous[k]!r} in the model" for k in mismatched)
        raise UserError(
            f"The model channel holds a model of a different architecture: {details}; "
            "backbone, algorithm, crop_size and num_classes must match for incremental training"
        )
