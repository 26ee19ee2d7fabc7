"""The files of a ``dataset`` channel, read in place: the members of its one zip, or its unzipped tree.

Members are read directly from the zip, never extracted under their own names: what the job
writes (``prepare``) goes to names of its own choosing inside the job's tree, so no member name
can place a file anywhere. A hostile archive is still refused as a whole, before anything is
written, because it is either a mistake or an attack and training on part of it would hide that:
absolute or ``..`` paths, links, two members with one name after normalisation, encryption, and
zip bombs. The bomb checks are the declared sizes against ``SEMSEG_MAX_EXTRACTED_BYTES`` (the
tarball limit, ``archives.check_extracted_size``) and a compression ratio no image can have;
Python's zip reader stops at the declared size and checks the CRC, so a member that lies about
its size fails to read instead of growing.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from pathlib import Path

from ...archives import check_extracted_size
from ...errors import UserError, one_line
from ...names import path_problem, shown

# PNG and JPEG are compressed already; only a bomb (or a huge blank bitmap) deflates this much.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECKED_ABOVE = 1 << 20  # small members (labelmap.txt, empty lists) may compress as they like
_IGNORED_PARTS = ("__MACOSX",)  # macOS adds __MACOSX/ and ._name resource forks to its zips


class Archive:
    """Regular files by normalised relative name (``a/b/c.png``), readable as bytes."""

    def __init__(self, source: Path, sizes: dict[str, int]):
        self.source, self.sizes = source, sizes

    @property
    def names(self) -> list[str]:
        return sorted(self.sizes)

    def read(self, name: str) -> bytes:
        raise NotImplementedError

    def check_size(self, names: list[str]) -> None:
        """Refuse, before anything is written, to read more than the extraction limit allows."""
        check_extracted_size(sum(self.sizes[name] for name in names), self.source)

    def close(self) -> None:
        pass

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _visible(name: str) -> bool:
    return not any(part.startswith(".") or part in _IGNORED_PARTS for part in name.split("/"))


def _normalised(raw: str, source: Path) -> str:
    """A member's name as ``a/b/c.png``: Windows separators, empty and ``.`` parts (``./a//b``, as zip
    tools write them) dropped; refused, as ``semseg.names`` refuses any outside name that could leave its
    folder, when absolute, with ``..`` or with control characters. A directory may come out empty."""
    name = raw.replace("\\", "/")
    if not name.startswith("/"):
        name = "/".join(part for part in name.split("/") if part not in ("", "."))
    problem = path_problem(name) if name else None
    if problem is not None:
        raise UserError(
            f"The dataset archive {source} holds the member '{shown(raw)}', which {problem}; refusing to read it"
        )
    return name


class ZipArchive(Archive):
    def __init__(self, source: Path):
        try:
            self.zip = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            raise UserError(
                f"The dataset archive {source} is not a readable zip file ({one_line(exc)}); "
                "it may be cut short, so upload it again"
            ) from None
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in self.zip.infolist():
            name, label = _normalised(info.filename, source), shown(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UserError(f"The dataset archive {source} holds the link '{label}'; refusing to read it")
            if info.is_dir() or not name:
                continue
            if name in self.members:
                raise UserError(
                    f"The dataset archive {source} holds two members named '{shown(name)}' "
                    f"('{shown(self.members[name].filename)}' and '{label}'); refusing to read it"
                )
            if info.flag_bits & 0x1:
                raise UserError(f"The dataset archive {source} is encrypted ('{label}'); zip it without a password")
            if info.file_size > RATIO_CHECKED_ABOVE and info.file_size > MAX_COMPRESSION_RATIO * max(
                1, info.compress_size
            ):
                raise UserError(
                    f"The dataset archive {source} holds '{label}', which would expand {info.compress_size} "
                    f"bytes to {info.file_size} (more than {MAX_COMPRESSION_RATIO} times): a zip bomb, not a dataset"
                )
            self.members[name] = info
        super().__init__(source, {name: info.file_size for name, info in self.members.items() if _visible(name)})

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(self.members[name])
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as exc:
            raise UserError(
                f"The member '{shown(name)}' of the dataset archive {self.source} could not be read "
                f"({one_line(exc)}); "
                "the archive may be damaged or cut short"
            ) from None

    def close(self) -> None:
        self.zip.close()


class DirectoryArchive(Archive):
    """The same tree unzipped in the channel directory (links refused there too)."""

    def __init__(self, root: Path):
        sizes = {}
        for directory, subdirectories, files in os.walk(root):
            for entry in (*subdirectories, *files):
                path = Path(directory, entry)
                if path.is_symlink():
                    raise UserError(f"The dataset channel holds the link {shown(path)}; refusing to read it")
            for entry in files:
                path = Path(directory, entry)
                if path.is_file():
                    name = path.relative_to(root).as_posix()
                    _normalised(name, root)  # the rules of zip members: no control characters in a name
                    sizes[name] = path.stat().st_size
        super().__init__(root, {name: size for name, size in sizes.items() if _visible(name)})

    def read(self, name: str) -> bytes:
        return (self.source / name).read_bytes()


def open_channel(channel_dir: Path) -> Archive:
    """The channel's one ``.zip``, else the tree in the channel directory itself."""
    zips = sorted(p for p in channel_dir.iterdir() if p.suffix.lower() == ".zip" and p.is_file())
    if len(zips) > 1:
        listed = ", ".join(shown(p.name) for p in zips)
        raise UserError(f"The 'dataset' channel holds {len(zips)} zip files ({listed}); give it exactly one")
    return ZipArchive(zips[0]) if zips else DirectoryArchive(channel_dir)
