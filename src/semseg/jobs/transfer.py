"""Moving whole prefixes and files between S3 and local folders, in parallel, resumably.

Downloads go through boto3's transfer manager (``s3transfer``: parallel objects, parallel ranges of
large objects, retries of dropped streams) into a staging folder and are renamed into place when
whole, with the object's modification time set on the file. A file whose size and time already
match its object is not fetched again (the rule of ``aws s3 sync``), so a download that was killed
half way resumes with the objects it had not finished. Progress shows bytes and files.

Every key becomes a local path through ``names.relative_paths``, all of them before the first byte
is fetched, so a key that would leave the destination, or that is also the "folder" of another key,
is refused in one sentence instead of losing a file. Folders made for files in flight carry a mark
(``OWN_MARK``), and only a folder with that mark is ever removed whole.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, one_line
from ..names import relative_paths, shown
from .s3 import ObjectInfo, S3Location, client, explain, explained, list_objects, parse_uri, read_object

log = logging.getLogger("semseg")

CONCURRENCY = 16  # parallel requests of one transfer manager
PART_BYTES = 16 << 20  # objects larger than this travel in parallel ranges / multipart uploads
OWN_MARK = ".semseg-own"  # in every folder made here for files in flight: the only folders ever removed whole


@dataclass
class TransferSummary:
    files: int = 0
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 2**20 / self.seconds if self.seconds else 0.0


def transfer_manager():
    from boto3.s3.transfer import TransferConfig
    from s3transfer.manager import TransferManager

    config = TransferConfig(
        max_concurrency=CONCURRENCY, multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, use_threads=True
    )
    return TransferManager(client(), config)


class Progress:
    """One progress bar of bytes, with files done out of files to do; thread-safe."""

    def __init__(self, label: str, total_bytes: int, total_files: int):
        from tqdm import tqdm

        self._lock = threading.Lock()
        self._files, self._total_files = 0, total_files
        self._bar = tqdm(
            total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr, mininterval=1
        )
        self._bar.set_postfix_str(f"0/{total_files} files", refresh=False)

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self._bar.update(count)

    def file_done(self) -> None:
        with self._lock:
            self._files += 1
            self._bar.set_postfix_str(f"{self._files}/{self._total_files} files", refresh=False)

    def close(self) -> None:
        self._bar.close()


class _Finisher:
    """What happens to one object once fetched: ``finish()`` runs in the transfer's thread as soon as
    it succeeded, so that a kill a moment later loses no finished file. s3transfer swallows whatever
    a done-callback raises, so the error is kept here for ``download`` to raise."""

    def __init__(self, finish):
        self.finish = finish
        self.error: BaseException | None = None

    def __call__(self) -> None:
        try:
            self.finish()
        except BaseException as exc:  # raised by download once every transfer has ended
            self.error = exc


def _subscriber(progress: Progress, size: int | None = None, finisher: _Finisher | None = None):
    """Reports progress and runs ``finisher`` when the transfer succeeded."""
    from s3transfer.subscribers import BaseSubscriber

    class Subscriber(BaseSubscriber):
        def on_queued(self, future, **kwargs):
            if size is not None:  # saves the HeadObject the manager would otherwise send per object
                future.meta.provide_transfer_size(size)

        def on_progress(self, future, bytes_transferred, **kwargs):
            progress.add_bytes(bytes_transferred)

        def on_done(self, future, **kwargs):
            try:
                future.result()
            except BaseException:
                return  # reported by whoever waits on the future
            if finisher is not None:
                finisher()
                if finisher.error is not None:
                    return
            progress.file_done()

    return Subscriber()


def objects_of(source: S3Location) -> tuple[list[ObjectInfo], str]:
    """The objects a channel's ``S3Uri`` names and the key prefix their local paths are relative to.

    A URI ending in ``/`` is a folder; otherwise it names one object if such a key exists, else the
    folder of that name (as the SageMaker SDK's local mode reads it), so ``s3://b/train`` never pulls
    in ``s3://b/train_annotation/``.
    """
    if source.key.endswith("/") or not source.key:
        return list_objects(source), source.key
    exact = [o for o in list_objects(source) if o.key == source.key]
    if exact:
        return exact, source.key.rsplit("/", 1)[0] + "/" if "/" in source.key else ""
    folder = S3Location(source.bucket, source.key + "/")
    return list_objects(folder), folder.key


def manifest_objects(manifest: S3Location) -> tuple[S3Location, list[ObjectInfo], str]:
    """A ``ManifestFile`` channel: (where its objects are, the objects, the key prefix their paths are relative to).

    The manifest is SageMaker's JSON array: ``{"prefix": "s3://bucket/prefix/"}``, then one key per
    entry, relative to that prefix (each object's key is the prefix followed by the entry).
    """
    where = f"The manifest {shown(manifest.uri)}"
    try:
        entries = json.loads(read_object(manifest))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{where} is not JSON; a ManifestFile is a JSON array of a prefix and keys") from None
    first = entries[0] if isinstance(entries, list) and entries else None
    if not isinstance(first, dict) or not isinstance(first.get("prefix"), str):
        raise UserError(f'{where} must be a JSON array that starts with {{"prefix": "s3://bucket/prefix/"}}')
    if not all(isinstance(entry, str) and entry for entry in entries[1:]):
        raise UserError(f"{where} lists something that is not a key; after the prefix, every entry is a relative key")
    root = parse_uri(first["prefix"], f"{where}'s prefix")
    if root.is_local:
        raise UserError(f"{where}'s prefix must be an s3:// URI")
    wanted = [root.key + entry for entry in entries[1:]]
    found = {obj.key: obj for obj in list_objects(root)}
    missing = [key for key in wanted if key not in found]
    if missing:
        raise UserError(
            f"{where} lists {len(missing)} keys that do not exist (first: s3://{root.bucket}/{shown(missing[0])})"
        )
    relative_to = root.key[: root.key.rfind("/") + 1]  # the prefix's folder: "data/" of "data/" and "data/img"
    return root, [found[key] for key in dict.fromkeys(wanted)], relative_to


def _is_current(path: Path, obj: ObjectInfo) -> bool:
    try:
        stat = path.stat()
    except OSError:
        return False
    return stat.st_size == obj.size and int(stat.st_mtime) == int(obj.modified)


def local_paths(objects: list[ObjectInfo], prefix: str, destination: Path) -> dict[str, Path]:
    """Each object's file under ``destination``: its key less ``prefix``, through ``names.relative_paths``,
    which refuses a key that could leave ``destination`` and two keys that would be one file, or a file
    and the folder of another (``a`` and ``a/b.jpg``), naming both keys."""
    checked = relative_paths((obj.key for obj in objects), "S3 key")
    depth = prefix.count("/")  # the prefix is "" or ends in "/": its parts lead every key's
    return {key: destination.joinpath(*path.parts[depth:]) for key, path in checked.items()}


def make_own_folder(folder: Path) -> Path:
    """An empty ``folder`` with the mark of this module. One left by a killed run (marked, or still
    empty) is replaced; a folder with anything else in it is not this program's to empty, and is refused."""
    if folder.is_symlink() or folder.exists():
        if folder.is_symlink() or not folder.is_dir():
            raise UserError(f"The staging folder {folder} is in the way: something else has that name; move it away")
        if (folder / OWN_MARK).is_file():
            remove_own_folder(folder)
        elif any(folder.iterdir()):
            raise UserError(
                f"The staging folder {folder} holds files that no download of this program left there; move them away"
            )
        else:
            folder.rmdir()
    folder.mkdir(parents=True)
    (folder / OWN_MARK).touch()
    return folder


def remove_own_folder(folder: Path) -> None:
    """Remove ``folder`` if it carries the mark of ``make_own_folder``; the mark goes last, so a removal
    cut short leaves a folder that is still known to be ours."""
    mark = folder / OWN_MARK
    if folder.is_symlink() or not mark.is_file():
        return
    for entry in folder.iterdir():
        if entry.name == OWN_MARK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    mark.unlink()
    folder.rmdir()


def download(
    source: S3Location,
    destination: Path,
    staging: Path,
    label: str = "download",
    manifest: bool = False,
    share: tuple[int, int] | None = None,
) -> TransferSummary:
    """Everything ``source`` names (or, with ``manifest``, the manifest at ``source`` lists) into
    ``destination``, skipping files already there and current. ``share``, ``(rank, hosts)``: only the
    host ``rank``'s share of the objects, every ``hosts``-th in key order from the ``rank``-th, as
    ``ShardedByS3Key`` gives each instance about 1/hosts of them.

    ``staging`` holds the files being fetched (made afresh: whatever a killed run left there is
    incomplete); it must be on the same file system as ``destination``. Every key is checked
    before anything is written.
    """
    if source.is_local and not manifest:  # a file:// folder has no objects to share: each host links it whole
        return copy_local(source.local, destination)
    started = time.monotonic()
    if manifest:
        source, objects, prefix = manifest_objects(source)
    else:
        objects, prefix = objects_of(source)
    if not objects:
        raise UserError(f"There are no objects under {shown(source.uri)}")
    if share is not None:
        rank, hosts = share
        every = sorted(objects, key=lambda obj: obj.key)
        objects = every[rank::hosts]
        log.info("%s: this host's share, %d of the %d objects (ShardedByS3Key)", shown(label), len(objects), len(every))
        if not objects:
            raise UserError(
                f"{shown(source.uri)} holds {len(every)} objects, too few for {hosts} hosts to have one each"
            )
    todo, summary = [], TransferSummary()
    targets = local_paths(objects, prefix, destination)
    for obj in objects:
        if _is_current(targets[obj.key], obj):
            summary.skipped += 1
        else:
            todo.append((obj, targets[obj.key]))
    if summary.skipped:
        log.info("%s: %d of %d files are here and current already", shown(label), summary.skipped, len(objects))
    make_own_folder(staging)
    try:
        _fetch(source, todo, staging, Progress(shown(label), sum(obj.size for obj, _ in todo), len(todo)), summary)
    finally:
        remove_own_folder(staging)
    summary.seconds = time.monotonic() - started
    log.info(
        "%s: %d files, %.1f MB from %s in %.1f s (%.1f MB/s)",
        shown(label),
        summary.files,
        summary.bytes / 2**20,
        shown(source.uri),
        summary.seconds,
        summary.mb_per_s,
    )
    return summary


def _fetch(
    source: S3Location, todo: list[tuple[ObjectInfo, Path]], staging: Path, progress: Progress, summary: TransferSummary
) -> None:
    """Each object of ``todo`` through ``staging`` to its path; raises the first transfer or finish failure."""
    finishers = []
    try:
        with transfer_manager() as manager:
            futures = []
            for index, (obj, path) in enumerate(todo):
                temporary = staging / str(index)
                finisher = _Finisher(functools.partial(_put_in_place, temporary, path, obj.modified))
                subscriber = _subscriber(progress, obj.size, finisher)
                future = manager.download(source.bucket, obj.key, str(temporary), subscribers=[subscriber])
                futures.append((future, obj))
                finishers.append((finisher, obj, path))
            for future, obj in futures:
                try:
                    future.result()
                except Exception as exc:
                    manager.shutdown(cancel=True)
                    raise explain(exc, "download", S3Location(source.bucket, obj.key)) from None
        # The manager has shut down: every done-callback has run.
        for finisher, obj, path in finishers:
            if finisher.error is not None:
                raise UserError(
                    f"s3://{source.bucket}/{shown(obj.key)} was downloaded but could not be put in place as "
                    f"{shown(path)}: {one_line(finisher.error)}"
                )
            summary.files += 1
            summary.bytes += obj.size
    finally:
        progress.close()


def _put_in_place(temporary: Path, path: Path, modified: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.utime(temporary, (modified, modified))
    os.replace(temporary, path)


def copy_local(source: Path, destination: Path) -> TransferSummary:
    """A ``file://`` channel: the folder's files (or the one file) linked into ``destination``.

    Hard links where the file system allows (instant, no second copy), copies elsewhere.
    """
    if not source.exists():
        raise UserError(f"The local path {source} does not exist")
    summary = TransferSummary()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        target = destination / (path.name if path == source else path.relative_to(source))
        if target.exists():
            summary.skipped += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        summary.files += 1
        summary.bytes += path.stat().st_size
    return summary


def upload_file(path: Path, target: S3Location, manager=None) -> None:
    """One file to ``target`` (multipart when large); a ``file://`` target gets a copy."""
    if target.is_local:
        target.local.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.local.with_name(f".{target.local.name}.partial")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target.local)
        return
    if manager is None:
        with transfer_manager() as own:
            return upload_file(path, target, own)
    try:
        manager.upload(str(path), target.bucket, target.key).result()
    except FileNotFoundError:
        raise  # the file went away (a checkpoint rotated out): the caller decides
    except Exception as exc:
        raise explain(exc, "upload to", target) from None


def delete_object(target: S3Location) -> None:
    if target.is_local:
        target.local.unlink(missing_ok=True)
        return
    with explained("delete", target):
        client().delete_object(Bucket=target.bucket, Key=target.key)
