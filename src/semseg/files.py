"""Files written whole or not at all.

A training job is killed at any moment (SIGKILL after StopTrainingJob's grace period, a spot
interruption, a full disk), and SageMaker packages whatever ``model/`` holds. So every file the
program writes for later goes to a hidden temporary name beside its final one and is renamed onto
it once complete: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from .errors import explained_write_failure

log = logging.getLogger("semseg")

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
