"""``CheckpointConfig.S3Uri`` played locally: the checkpoint folder mirrored to S3 while the job runs.

As SageMaker does: what is in S3 is restored into the empty folder before training starts; then
new and changed files are uploaded every few seconds (and once more when the job ends), and files
deleted locally are deleted in S3. Hidden files and folders (a checkpoint being written) wait until
they are renamed into place; within a checkpoint, ``MANIFEST.json`` goes up after the files it
describes, so a checkpoint cut short on its way to S3 is never taken for a whole one.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from ..names import shown
from ..train.checkpoint import MANIFEST
from .s3 import S3Location, list_objects
from .transfer import delete_object, download, transfer_manager, upload_file

log = logging.getLogger("semseg")

INTERVAL_S = 2.0


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def _visible_files(root: Path) -> list[Path]:
    files = [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: (p.parent, p.name == MANIFEST, p.name))


class CheckpointSync:
    def __init__(self, local: Path, remote: S3Location, staging: Path, interval_s: float = INTERVAL_S):
        self.local, self.remote, self.staging, self.interval_s = local, remote, staging, interval_s
        self._synced: dict[str, tuple[int, int]] = {}  # relative path -> signature last uploaded or restored
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpoint-sync", daemon=True)
        self._lock = threading.Lock()
        self.uploads = 0
        self.error: BaseException | None = None

    def restore(self) -> int:
        """Bring the checkpoints already in S3 into the local folder; the number of files restored.

        The keys become local paths through ``transfer.download``, which refuses any that could leave the folder."""
        self.local.mkdir(parents=True, exist_ok=True)
        prefix = self.remote if self.remote.is_local or self.remote.key.endswith("/") else self.remote.child("")
        if prefix.is_local and not prefix.local.exists():
            return 0
        if not prefix.is_local and not list_objects(prefix):
            log.info("No checkpoints under %s yet: training starts from the beginning", shown(prefix.uri))
            return 0
        summary = download(prefix, self.local, self.staging, label="checkpoints")
        for path in _visible_files(self.local):
            self._synced[str(path.relative_to(self.local))] = _signature(path)
        log.info("Restored %d checkpoint files from %s", summary.files + summary.skipped, shown(prefix.uri))
        return summary.files + summary.skipped

    def sync_once(self) -> None:
        with self._lock, transfer_manager() as manager:
            present = {}
            for path in _visible_files(self.local):
                relative = str(path.relative_to(self.local))
                try:
                    signature = _signature(path)
                except FileNotFoundError:
                    continue  # deleted by training between the listing and now
                present[relative] = signature
                if self._synced.get(relative) != signature:
                    try:
                        upload_file(path, self.remote.child(relative), manager)
                    except FileNotFoundError:
                        continue
                    self._synced[relative] = signature
                    self.uploads += 1
            for relative in sorted(set(self._synced) - set(present)):
                delete_object(self.remote.child(relative))
                del self._synced[relative]

    def start(self) -> CheckpointSync:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the periodic sync and sync one last time (raises what that last sync met)."""
        self._stop.set()
        self._thread.join(60)
        self.sync_once()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync_once()
            except Exception as exc:  # kept for the final sync to meet again; training goes on meanwhile
                self.error = exc
                log.warning("Checkpoint sync to %s failed, will retry: %s", shown(self.remote.uri), exc)
