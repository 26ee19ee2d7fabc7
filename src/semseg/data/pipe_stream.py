"""One epoch of a Pipe-mode channel: wait for its FIFO, read RecordIO records, pair them, shuffle.

A reader thread does the reading (``EpochStream``), so that the next records arrive while the
loader processes decode the previous ones; it hands pairs over through a bounded queue, so the
encoded pairs held at any time number at most ``_pipe_shuffle_buffer`` + 80, whatever the
stream's length. ``pipe_mode`` turns the pairs into batches for the ``BatchLoader``.
"""

from __future__ import annotations

import queue
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .. import paths
from ..errors import UserError
from .recordio import Record, read_records

SETTINGS = (
    'use TrainingInputMode "Pipe", RecordWrapperType "RecordIO", AttributeNames '
    '["source-ref", "<label>-ref"] (image first, then mask) and ContentType "application/x-recordio"'
)
POLL_SECONDS = 0.1
READ_BUFFER = 1 << 20
HANDOFF = 16  # pairs per queue item: one lock round-trip per 16 pairs keeps the thread handoff cheap


def wait_for_fifo(path: Path, timeout: float, stopping: Callable[[], bool] = lambda: False) -> bool:
    """Wait until ``path`` exists; False if ``stopping()`` became true first.

    SageMaker creates ``<channel>_<N+1>`` only after ``<channel>_<N>`` is closed, so a short wait is
    normal; the timeout turns a stream that never comes into a clear failure instead of a hang.
    """
    deadline = time.monotonic() + timeout
    while not path.exists():
        if stopping():
            return False
        if time.monotonic() > deadline:
            raise UserError(
                f"The Pipe-mode input {path} did not appear within {timeout:g} seconds (the "
                "_pipe_wait_seconds hyperparameter); SageMaker creates it when the channel is in Pipe mode"
            )
        time.sleep(POLL_SECONDS)
    if stat.S_ISDIR(path.stat().st_mode):
        raise UserError(f"The Pipe-mode input {path} is a directory, not the FIFO SageMaker streams into")
    return True


@dataclass(frozen=True)
class StreamSettings:
    """How a channel's stream is read: the wait for each epoch's FIFO (``_pipe_wait_seconds``), the
    shuffle buffer (``_pipe_shuffle_buffer``; 1 keeps the stream's order) and the seed of its draws."""

    wait_seconds: float
    shuffle_buffer: int
    seed: int


class PairKey(NamedTuple):
    """One streamed pair as a loader key: the encoded bytes and where they came from."""

    image: bytes
    mask: bytes
    seed: int
    where: str  # "the 'train' channel, epoch 0"
    image_at: str  # "record 4 (byte offset 1234)"
    mask_at: str


def _at(record: Record) -> str:
    return f"record {record.index} (byte offset {record.offset})"


def pair_records(records: Iterator[Record], where: str) -> Iterator[tuple[Record, Record]]:
    """[image, mask] pairs in AttributeNames order; an image left without its mask is an error."""
    image = None
    for record in records:
        if image is None:
            image = record
        else:
            yield image, record
            image = None
    if image is not None:
        raise UserError(
            f"In {where}, the stream holds an odd number of records: the last, {_at(image)}, is an "
            f"image without its mask; every manifest line must give two attributes, {SETTINGS}"
        )


_END = object()


class EpochStream:
    """A reader thread over one epoch's FIFO: records -> pairs -> shuffle buffer -> bounded queue."""

    def __init__(self, channel: str, epoch: int, settings: StreamSettings):
        self.channel, self.epoch = channel, epoch
        self.path = paths.pipe_path(channel, epoch)
        self.where = f"the '{channel}' channel, epoch {epoch}"
        self.wait_seconds, self.shuffle_buffer = settings.wait_seconds, settings.shuffle_buffer
        self.rng = random.Random(f"{settings.seed}/{channel}/{epoch}")
        self.pairs_read = 0
        self.bytes_read = 0
        self.exhausted = False
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pipe-{channel}-{epoch}", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._cancel.is_set():
            try:
                self._queue.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _pairs(self, stream) -> Iterator[tuple[Record, Record]]:
        for pair in pair_records(read_records(stream, self.where), self.where):
            self.pairs_read += 1
            self.bytes_read = pair[1].offset + len(pair[1].payload)
            yield pair

    def _shuffled(self, pairs: Iterator[tuple[Record, Record]]) -> Iterator[tuple[Record, Record]]:
        """Uniform draws from a buffer refilled by the stream (1 = stream order)."""
        buffer: list = []
        for pair in pairs:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(pair)
                continue
            slot = self.rng.randrange(len(buffer))
            yield buffer[slot]
            buffer[slot] = pair
        self.rng.shuffle(buffer)
        yield from buffer

    def _run(self) -> None:
        try:
            if not wait_for_fifo(self.path, self.wait_seconds, self._cancel.is_set):
                return
            chunk: list[PairKey] = []
            with open(self.path, "rb", buffering=READ_BUFFER) as stream:
                for image, mask in self._shuffled(self._pairs(stream)):
                    chunk.append(
                        PairKey(
                            image.payload, mask.payload, self.rng.getrandbits(31), self.where, _at(image), _at(mask)
                        )
                    )
                    if len(chunk) == HANDOFF:
                        if not self._put(chunk):
                            return
                        chunk = []
                self.exhausted = True
            if chunk and not self._put(chunk):
                return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it in the main thread
            self._put(exc)

    def pairs(self, stop_check: Callable[[], None]) -> Iterator[PairKey]:
        """The pairs as they arrive; ``stop_check`` runs while waiting, so SIGTERM is not delayed."""
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                stop_check()
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item

    def close(self, stop_check: Callable[[], None]) -> None:
        """Stop reading and close the FIFO, so that SageMaker can open the next epoch's."""
        self._cancel.set()
        while self._thread.is_alive():
            self._thread.join(0.5)
            stop_check()
