"""SageMaker's side of Pipe mode, for local runs, tests and benchmarks.

SageMaker's SDK local mode cannot emulate Pipe mode, so this plays the platform: for each epoch it
creates the FIFO ``paths.pipe_name(channel, N)``, waits for the training job to open it, writes the epoch's bytes
(RecordIO-framed pairs, see ``pair_stream``) and closes it, which the reader sees as the end of the
epoch. A reader that closes early, as SageMaker allows, ends that epoch's writing quietly. The
FIFO primitives here are the ones ``semseg job`` feeds its Pipe-mode channels with
(``jobs.pipe_source``); ``feed_channel`` is the simple form the tests and benchmarks use.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .. import paths
from .recordio import frame

WRITE_CHUNK = 1 << 20
OPEN_POLL_S = 0.05


def make_fifo(path: Path) -> None:
    """A new FIFO at ``path``; one left there by an earlier run is replaced, anything else never is."""
    if path.is_fifo():
        path.unlink()
    os.mkfifo(path)


def open_writer(path: Path, stopping: Callable[[], bool] = lambda: False) -> int | None:
    """The FIFO opened for writing once a reader opened it; None if ``stopping()`` came first."""
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if stopping():
                return None
            time.sleep(OPEN_POLL_S)
            continue
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:WRITE_CHUNK]) :]


def pair_stream(pairs: Iterable[tuple[bytes, bytes]]) -> Iterable[bytes]:
    """Augmented-manifest lines as SageMaker streams them: image record, then mask record."""
    for image, mask in pairs:
        yield frame(image)
        yield frame(mask)


def feed_channel(data_dir: Path, channel: str, epochs: int, epoch_bytes: Callable[[int], Iterable[bytes]]) -> None:
    """Stream ``epoch_bytes(n)`` into ``data_dir/<channel>_<n>`` for n = 0 .. epochs-1, one after another."""
    for epoch in range(epochs):
        path = Path(data_dir) / paths.pipe_name(channel, epoch)
        make_fifo(path)
        fd = open_writer(path)
        try:
            for chunk in epoch_bytes(epoch):
                write_all(fd, chunk)
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)
