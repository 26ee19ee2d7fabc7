"""SageMaker's side of Pipe mode, for local runs, tests and benchmarks.

SageMaker's SDK local mode cannot emulate Pipe mode, so this plays the platform: for each epoch it
creates the FIFO ``paths.pipe_name(channel, N)``, waits for the training job to open it, writes the epoch's bytes
(RecordIO-framed pairs, see ``pair_stream``) and closes it, which the reader sees as the end of the
epoch. A reader that closes early, as SageMaker allows, ends that epoch's writing quietly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .. import paths
from .recordio import frame

WRITE_CHUNK = 1 << 20


def pair_stream(pairs: Iterable[tuple[bytes, bytes]]) -> Iterable[bytes]:
    """Augmented-manifest lines as SageMaker streams them: image record, then mask record."""
    for image, mask in pairs:
        yield frame(image)
        yield frame(mask)


def feed_channel(data_dir: Path, channel: str, epochs: int, epoch_bytes: Callable[[int], Iterable[bytes]]) -> None:
    """Stream ``epoch_bytes(n)`` into ``data_dir/<channel>_<n>`` for n = 0 .. epochs-1, one after another."""
    for epoch in range(epochs):
        path = Path(data_dir) / paths.pipe_name(channel, epoch)
        os.mkfifo(path)
        fd = os.open(path, os.O_WRONLY)  # blocks until the reader opens the FIFO
        try:
            for chunk in epoch_bytes(epoch):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view[:WRITE_CHUNK]) :]
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)
