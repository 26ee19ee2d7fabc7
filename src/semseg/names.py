"""Names that come from outside this program, kept as names.

Channel names, S3 keys, zip members, list entries, file names and class names are chosen by
whoever wrote the request, the bucket or the archive. Two rules keep them from doing more than
name something:

- a name becomes a path only through ``relative_path`` (or ``relative_paths`` for a set of
  them), which refuses, in one sentence, whatever could leave the folder it is joined to or land
  on the file of another name: absolute names, empty, ``.`` and ``..`` parts, control characters
  and parts longer than a file name may be;
- a name appears in a log line or a message only through ``shown``, which writes every character
  that could start a new line, reorder or hide the text around it, or begin a metric line, as a
  visible escape. ``logs.OneLineFormatter`` renders every text argument of a log record so, and
  keeps every record on one line, as a second line of defence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from .errors import UserError

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional marks,
# embeddings, overrides and isolates (a right-to-left override makes "gnp.exe" read as "exe.png").
_CONTROLS = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_IN_LINE = re.compile(f"[{_CONTROLS}]")
# In a name, '#' too: every metric line a MetricDefinitions regex reads starts with it, and those
# regexes are not anchored, so a name holding "#quality_metric. ... mIOU: 0.999" would forge a figure
# even on one line.
_UNSAFE_IN_NAME = re.compile(f"[{_CONTROLS}#]")
NAME_MAX_BYTES = 255  # the longest file name Linux file systems take (NAME_MAX)


def _escape(match: re.Match) -> str:
    character = match.group()
    return "\\x23" if character == "#" else character.encode("unicode_escape").decode("ascii")


def shown(name: object) -> str:
    """``name`` as text for a log line or a message: ``\\n``, ``\\x1b``, ``\\u202e``, ``#`` and the
    like are written as escapes, so the name reads as one visible run of text that no metric regex
    takes for a metric line."""
    return _UNSAFE_IN_NAME.sub(_escape, str(name))


def one_line(text: str) -> str:
    """``text`` with its line breaks and other controls escaped (``#`` kept: the text may be a metric line)."""
    return _UNSAFE_IN_LINE.sub(_escape, text)


def has_unsafe_characters(name: str) -> bool:
    """Whether ``name`` holds a control character (``#`` is fine in a file name)."""
    return _UNSAFE_IN_LINE.search(name) is not None


def path_problem(name: str) -> str | None:
    """Why ``name`` cannot be a relative path inside its folder ("is an absolute path"), or None."""
    if not isinstance(name, str) or not name:
        return "is empty"
    if has_unsafe_characters(name):
        return "holds control characters"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' part"
    if any(len(part.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES for part in parts):
        return f"has a part longer than {NAME_MAX_BYTES} bytes, more than a file name takes"
    return None


def relative_path(name: str, what: str) -> PurePosixPath:
    """``name`` (parts separated by ``/``) as a relative path that stays inside any folder it is
    joined to; ``what`` says where the name came from, for the sentence that refuses it."""
    problem = path_problem(name)
    if problem is not None:
        text = shown(name) if len(name) <= 200 else shown(name[:80]) + "..."
        raise UserError(f"The {what} '{text}' {problem}; it cannot name a file inside its folder")
    return PurePosixPath(*name.split("/"))


def relative_paths(names: Iterable[str], what: str) -> dict[str, PurePosixPath]:
    """Each name's ``relative_path``, refusing two names that would be one file, or a file and the
    folder of another (``a`` and ``a/b.jpg``), before anything is written."""
    found: dict[str, PurePosixPath] = {}
    for name in names:
        found[name] = relative_path(name, what)
    by_path = {str(path): name for name, path in found.items()}
    for name, path in found.items():
        for folder in path.parents:
            other = by_path.get(str(folder))
            if other is not None and str(folder) != ".":
                raise UserError(
                    f"The {what}s '{shown(other)}' and '{shown(name)}' clash: the first would be a file and the folder "
                    "of the second; rename one"
                )
    return found
