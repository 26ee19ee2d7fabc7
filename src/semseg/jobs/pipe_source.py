"""Pipe mode from S3, played locally: the job streams each epoch into the channel's FIFO itself.

For an ``AugmentedManifestFile`` channel every manifest line gives one record per attribute of
``AttributeNames``, in that order: the object an ``-ref`` attribute points at, or the attribute's
value as text. With ``RecordWrapperType: RecordIO`` each record is RecordIO-framed (the one framing
of ``data.recordio``), as SageMaker does; an ``S3Prefix`` channel streams its objects one after another.
``ShuffleConfig.Seed`` reshuffles the lines (or objects) at the start of every epoch. With
``CompressionType: Gzip`` every object the channel names (the manifest itself, or each object of an
``S3Prefix`` channel) is gunzipped as it is read; the images a manifest refers to are sent as they are.

Objects are not staged on disk: a few are fetched ahead in parallel, held in memory and written
out in order. Epoch N's FIFO appears when epoch N-1's is closed, as on SageMaker, and feeding goes
on until the job ends (the reader decides how many epochs there are).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
import threading
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..data.pipe_feed import make_fifo, open_writer, write_all
from ..data.recordio import framed
from ..errors import UserError
from ..names import shown
from .request import Channel
from .s3 import S3Location, list_objects, parse_uri, read_object

log = logging.getLogger("semseg")

PREFETCH = 8  # objects fetched ahead of the one being written


@dataclass(frozen=True)
class Item:
    """One record of the stream: an object to fetch (``gzipped``: to gunzip), or literal bytes."""

    source: S3Location | None = None
    literal: bytes = b""
    gzipped: bool = False

    def read(self) -> bytes:
        data = read_object(self.source)
        return _gunzipped(data, self.source) if self.gzipped else data


def _gunzipped(data: bytes, source: S3Location) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        raise UserError(f"{shown(source.uri)} is not gzip data, but its channel's CompressionType is Gzip") from None


def read_channel_object(channel: Channel, source: S3Location) -> bytes:
    """An object the channel itself names, gunzipped when its CompressionType is Gzip."""
    data = read_object(source)
    return _gunzipped(data, source) if channel.compression == "Gzip" else data


def manifest_lines(channel: Channel) -> list[list[Item]]:
    """The records of each line of an augmented manifest, in the order of ``AttributeNames``."""
    text = read_channel_object(channel, channel.source).decode("utf-8", errors="replace")
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number} of the manifest {shown(channel.source.uri)}"
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise UserError(f"The {where} is not JSON ({exc})") from None
        if not isinstance(entry, dict):
            raise UserError(f"The {where} is not a JSON object")
        items = []
        for attribute in channel.attribute_names:
            if attribute not in entry:
                raise UserError(f"The {where} has no attribute '{shown(attribute)}' (AttributeNames lists it)")
            value = entry[attribute]
            if attribute.endswith("-ref"):
                items.append(Item(source=parse_uri(str(value), f"'{shown(attribute)}' of the {where}")))
            else:
                items.append(Item(literal=(value if isinstance(value, str) else json.dumps(value)).encode()))
        lines.append(items)
    if not lines:
        raise UserError(f"The manifest {shown(channel.source.uri)} has no lines")
    return lines


def prefix_objects(channel: Channel) -> list[list[Item]]:
    if channel.source.is_local:
        root = channel.source.local
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        return [[Item(source=S3Location("", "", p), gzipped=channel.compression == "Gzip")] for p in files]
    objects = list_objects(channel.source)
    if not objects:
        raise UserError(f"There are no objects under {shown(channel.source.uri)}")
    gzipped = channel.compression == "Gzip"
    return [[Item(source=S3Location(channel.source.bucket, o.key), gzipped=gzipped)] for o in objects]


def epoch_items(channel: Channel, units: list[list[Item]], epoch: int) -> list[Item]:
    """The records of ``epoch``, units (manifest lines, objects) shuffled when a seed is set."""
    if channel.shuffle_seed is not None:
        units = list(units)
        random.Random(f"{channel.shuffle_seed}-{epoch}").shuffle(units)
    return [item for unit in units for item in unit]


def fetched(items: list[Item], pool: ThreadPoolExecutor) -> Iterator[bytes]:
    """Each item's bytes, in order, with up to PREFETCH objects fetched ahead."""
    ahead: deque = deque()
    pending = iter(items)

    def submit() -> None:
        item = next(pending, None)
        if item is not None:
            ahead.append(pool.submit(item.read) if item.source else item.literal)

    for _ in range(PREFETCH):
        submit()
    while ahead:
        head = ahead.popleft()
        submit()
        yield head if isinstance(head, bytes) else head.result()


class PipeFeeder:
    """Feeds one Pipe-mode channel, epoch after epoch, in a thread, until ``stop()``."""

    def __init__(self, channel: Channel, data_dir: Path):
        self.channel, self.data_dir = channel, data_dir
        self.units = (
            manifest_lines(channel) if channel.data_type == "AugmentedManifestFile" else prefix_objects(channel)
        )
        self.epochs_fed = 0
        self.bytes_fed = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pipe-{channel.name}", daemon=True)

    def start(self) -> PipeFeeder:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            with ThreadPoolExecutor(PREFETCH, thread_name_prefix=f"fetch-{self.channel.name}") as pool:
                epoch = 0
                while not self._stop.is_set():
                    if not self.feed_epoch(epoch, pool):
                        return
                    epoch += 1
        except BaseException as exc:  # reported by the job: a bad reference or a lost connection ends the feed
            self.error = exc
            log.error("Pipe-mode feeding of the '%s' channel stopped: %s", shown(self.channel.name), exc)

    def feed_epoch(self, epoch: int, pool: ThreadPoolExecutor) -> bool:
        """Stream one epoch; False when the job stopped before a reader came for it."""
        path = self.data_dir / paths.pipe_name(self.channel.name, epoch)
        make_fifo(path)
        fd = open_writer(path, self._stop.is_set)
        if fd is None:
            return False
        wrap = self.channel.record_wrapper == "RecordIO"
        try:
            for payload in fetched(epoch_items(self.channel, self.units, epoch), pool):
                if self._stop.is_set():
                    break
                pieces = framed(payload)[1] if wrap else [payload]
                for piece in pieces:
                    write_all(fd, piece)
                    self.bytes_fed += len(piece)
        except BrokenPipeError:
            pass  # the reader closed early, as SageMaker allows: the epoch ends there
        finally:
            os.close(fd)
        self.epochs_fed += 1
        return True
