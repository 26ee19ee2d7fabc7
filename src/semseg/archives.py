"""Archives from users (a ``model.tar.gz``, a dataset zip), bounded before anything is unpacked.

An archive is either what it claims or a mistake or an attack, and unpacking part of it would hide
which: members that would land outside the destination (absolute, ``..``, control characters: the
rules of ``names``), links and devices are refused as a whole, and so is an archive whose members
add up to more than ``$SEMSEG_MAX_EXTRACTED_BYTES``. The dataset zip reader shares the size cap.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .bounds import whole_number
from .errors import UserError, one_line
from .names import path_problem, shown

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
        name = member.name.rstrip("/") if member.isdir() else member.name
        name = "/".join(part for part in name.split("/") if part != ".") if not name.startswith("/") else name
        problem = path_problem(name) if name else None
        if problem is not None:
            raise UserError(
                f"The archive {source} holds the unsafe path '{shown(member.name)}', which {problem}; "
                "refusing to extract it"
            )
        if member.issym() or member.islnk() or member.isdev():
            raise UserError(
                f"The archive {source} holds the link or device '{shown(member.name)}'; refusing to extract it"
            )
        if member.isfile() or member.isdir():
            members.append(member)
    check_extracted_size(sum(member.size for member in members if member.isfile()), source)
    return members


@contextmanager
def _reading(archive_path: Path) -> Iterator[None]:
    """A tar archive that does not read is one sentence naming it."""
    try:
        yield
    except tarfile.ReadError:
        raise UserError(
            f"The model archive {archive_path} is not a tar archive (plain or compressed with gzip, bzip2 or xz); "
            "make it with tar -czf model.tar.gz and the model files"
        ) from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UserError(f"The model archive {archive_path} could not be read ({one_line(exc)})") from None


def extract_archive(archive_path: Path, destination: Path) -> None:
    with _reading(archive_path), tarfile.open(archive_path) as archive:
        archive.extractall(destination, members=_safe_members(archive, archive_path), filter="data")


MODEL_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")  # what a model archive is called


def model_archive(directory: Path) -> Path | None:
    """The model archive a model directory holds instead of its files: its first ``*.tar.gz``, else ``*.tgz``."""
    found = [path for suffix in MODEL_ARCHIVE_SUFFIXES for path in sorted(directory.glob(f"*{suffix}"))]
    return found[0] if found else None


def read_member(archive_path: Path, name: str, max_bytes: int) -> bytes | None:
    """The bytes of the file ``name`` at the top of a tar archive, as extracting it would leave it (the
    last member of that name), or None when it has none; nothing is written. More than ``max_bytes``
    is refused in one sentence."""
    with _reading(archive_path), tarfile.open(archive_path) as archive:
        found = None
        for member in archive:
            if member.isfile() and "/".join(part for part in member.name.split("/") if part != ".") == name:
                found = member
        if found is None:
            return None
        if found.size > max_bytes:
            raise UserError(
                f"The model archive {archive_path} holds a {name} of {found.size} bytes, more than the "
                f"{max_bytes} such a file can need"
            )
        return archive.extractfile(found).read()
