"""Errors a user can cause, each carrying one sentence that is shown to them verbatim.

Training writes the sentence to ``output/failure`` and exits non-zero; serving returns it as
``{"error": ...}`` with the HTTP status the error class names. Anything that is not a
``UserError`` is a bug in this program and is reported as such, with the traceback in the log only.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or configuration, explained in one sentence."""

    http_status = 400


class UnsupportedContentType(UserError):
    http_status = 415


class UnsupportedAccept(UserError):
    http_status = 406


class PayloadTooLarge(UserError):
    http_status = 413


def one_line(error: BaseException | str) -> str:
    """The gist of an error's text on one line, for a sentence a user reads.

    MXNet reports as ``Traceback ...\\n  File "x.cc", line N\\nMXNetError: Check failed: expr: message``;
    only ``message`` means anything to a user. Other multi-line texts keep their last line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    if len(lines) == 1:
        return lines[0]
    gist = re.sub(r"^\w*Error: ", "", lines[-1])
    return re.sub(r"^Check failed: .*: ", "", gist)


LOW_SPACE_BYTES = 1 << 20  # below this much free space, a failed write is put down to a full disk


def _free_bytes(path: Path) -> int | None:
    for directory in (path, *path.parents):
        if directory.exists():
            stats = os.statvfs(directory)
            return stats.f_bavail * stats.f_frsize
    return None


@contextmanager
def explained_write_failure(path: Path) -> Iterator[None]:
    """Turn a write of ``path`` that ran out of room into one sentence naming it.

    A full volume (SageMaker's ``VolumeSizeInGB``, a small ``docker run`` disk) is the user's to
    fix, so it is a ``UserError``. MXNet reports it only as ``FileStream.Write incomplete``, so the
    free space is read while the half-written file still holds its room: use this around the
    write itself, inside whatever removes the partial file.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        free = _free_bytes(path)
        code = getattr(exc, "errno", None)
        if code in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < LOW_SPACE_BYTES):
            reason = f"no space left on the device ({free or 0} bytes free)"
        elif code == errno.EFBIG or "Write incomplete" in str(exc):
            reason = f"the write was cut short ({one_line(exc)}): a file-size limit (ulimit -f) or a failing device"
        else:
            raise
        raise UserError(f"{path} could not be written: {reason}; the files written before it are kept") from None
