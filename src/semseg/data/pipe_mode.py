"""Pipe mode: image/mask pairs streamed by SageMaker from an augmented manifest, one FIFO per epoch.

With ``TrainingInputMode: Pipe``, ``RecordWrapperType: RecordIO`` and ``AttributeNames:
["source-ref", "<label>-ref"]``, SageMaker writes epoch N of a channel into the FIFO
``/opt/ml/input/data/<channel>_<N>`` as RecordIO records: image 1, mask 1, image 2, mask 2, ...
Nothing reaches the disk and the stream's length is unknown up front, so:

- a reader thread (``pipe_stream``) waits for the FIFO (``_pipe_wait_seconds``), reads records,
  pairs them, and for the train split shuffles them through a buffer of ``_pipe_shuffle_buffer``
  pairs; it hands them over through a bounded queue (at most 80 pairs), so the encoded pairs held
  at any time number at most ``_pipe_shuffle_buffer`` + 80 plus the loader's prefetch, whatever the
  stream's length;
- the batch sampler turns pairs into batches of keys that carry the encoded bytes, and the
  ``BatchLoader`` decodes and augments them in its worker processes while the next records are read,
  exactly as it does for File mode (same ``prepare_pair``, transforms and label maps);
- a train epoch is ``num_training_samples // mini_batch_size`` iterations, as in File mode: the
  FIFO is closed once they are drawn (SageMaker allows closing early); a stream that ends sooner
  gives a shorter epoch. Both are logged. A validation epoch is the whole stream, in order.

Every error names the channel, the epoch, and the record's index and byte offset in the stream.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from .. import paths
from ..errors import UserError
from ..sm_config import ChannelConfig
from .batch_loader import BatchLoader, no_stop
from .dataset import host_share, prepare_pair
from .images import MASK_MODES, check_mask, describe, open_image, upright_size
from .pipe_stream import SETTINGS, EpochStream, PairKey, StreamSettings
from .transforms import Compose

log = logging.getLogger(__name__)

STREAMED_SPLITS = ("train", "validation")
CONTENT_TYPES = ("application/x-recordio", "application/x-image")


def _content_type(config: ChannelConfig) -> str | None:
    return config.content_type.split(";")[0].strip().lower() if config.content_type else None


def check_channels(channels: dict[str, ChannelConfig]) -> set[str]:
    """The splits SageMaker streams in Pipe mode; fails fast on settings that cannot work.

    A missing ContentType is accepted (the RecordIO wrapping says all there is to know); a File-mode
    train or validation channel that names RecordIO but has no annotation channel is the classic
    augmented-manifest mistake and is told which settings to use.
    """
    streamed = set()
    for name, config in channels.items():
        if not config.is_pipe:
            wants_recordio = _content_type(config) == CONTENT_TYPES[0] or config.record_wrapper == "RecordIO"
            if (
                name in STREAMED_SPLITS
                and wants_recordio
                and f"{name}_annotation" not in channels
                and not paths.channel_dir(f"{name}_annotation").is_dir()
            ):
                raise UserError(
                    f"The '{name}' channel is in File mode with RecordIO data and has no "
                    f"'{name}_annotation' channel; to train from an augmented manifest, {SETTINGS}"
                )
            continue
        if name not in STREAMED_SPLITS:
            raise UserError(
                f"The '{name}' channel is in Pipe mode, which only the train and validation channels "
                'support; give it TrainingInputMode "File"'
            )
        if config.record_wrapper != "RecordIO":
            raise UserError(
                f"The '{name}' channel is in Pipe mode with RecordWrapperType {config.record_wrapper}, "
                f"so images and masks cannot be told apart in the stream; {SETTINGS}"
            )
        if _content_type(config) not in (None, *CONTENT_TYPES):
            raise UserError(
                f"The '{name}' channel is in Pipe mode with ContentType {config.content_type}, which "
                f"this algorithm does not read; {SETTINGS}"
            )
        streamed.add(name)
    return streamed


def _open(payload: bytes, key: PairKey, at: str, role: str):
    try:
        return open_image(payload)
    except Exception:
        raise UserError(
            f"In {key.where}, the {role} {at} is not an image (it starts with {payload[:24]!r}); "
            f"the attributes must be -ref attributes naming image files, so {SETTINGS}"
        ) from None


def check_pair(key: PairKey) -> None:
    """Header-only checks that give the user's mistake a name before any pixel is decoded."""
    image = _open(key.image, key, key.image_at, "image")
    mask = _open(key.mask, key, key.mask_at, "mask")
    with image, mask:
        if mask.mode not in MASK_MODES and image.mode in MASK_MODES and image.format == "PNG":
            raise UserError(
                f"In {key.where}, the mask seems to come before its image: {key.image_at} is "
                f"{describe(image)} and {key.mask_at} is {describe(mask)}; AttributeNames must "
                'list the image first, as ["source-ref", "<label>-ref"]'
            )
        check_mask(mask, key.mask_at, upright_size(image), key.image_at, key.where)


class StreamedPairs:
    """The dataset of streamed pairs: ``__getitem__`` decodes a ``PairKey`` (in a loader process)."""

    def __init__(self, transform: Compose, table: np.ndarray):
        self.transform, self.table = transform, table

    def __getitem__(self, key: PairKey):
        check_pair(key)
        try:
            return prepare_pair(key.image, key.mask, self.transform, self.table, random.Random(key.seed))
        except UserError:
            raise
        except Exception as exc:
            raise UserError(
                f"In {key.where}, the pair {key.image_at} and {key.mask_at} could not be decoded "
                f"({type(exc).__name__}: {exc})"
            ) from None


class PipeBatchSampler:
    """Batches of ``PairKey`` for the ``BatchLoader``, one epoch's FIFO per ``iter()``.

    Train (``iterations`` set): shuffled, full batches only, at most ``iterations`` of them.
    Validation (``iterations`` None): the whole stream in order, the last batch possibly short.
    """

    def __init__(
        self,
        channel: str,
        batch_size: int,
        iterations: int | None,
        settings: StreamSettings,
        stop_check: Callable[[], None] = no_stop,
    ):
        self.channel, self.batch_size, self.iterations = channel, batch_size, iterations
        self.settings = settings if iterations is not None else replace(settings, shuffle_buffer=1)
        self.stop_check = stop_check
        self.epoch = 0
        self.last_batches = 0

    def __len__(self) -> int:
        """Train: the iterations of an epoch; validation: the batches of the previous epoch (0 at first)."""
        return self.iterations if self.iterations is not None else self.last_batches

    def __iter__(self) -> Iterator[list[PairKey]]:
        """One epoch. Each batch is held back until the next one is complete, so the last is handed
        out only after the FIFO is closed and the epoch reported: a consumer that stops after
        ``len()`` batches never leaves the FIFO open (SageMaker opens the next epoch's after it)."""
        epoch, self.epoch = self.epoch, self.epoch + 1
        stream = EpochStream(self.channel, epoch, self.settings)
        wanted = None if self.iterations is None else self.iterations * self.batch_size
        batch: list[PairKey] = []
        pending: list[PairKey] | None = None
        batches = used = 0
        start = time.monotonic()
        try:
            for key in stream.pairs(self.stop_check):
                batch.append(key)
                if len(batch) < self.batch_size:
                    continue
                if pending is not None:
                    yield pending
                pending, batch = batch, []
                batches, used = batches + 1, used + len(pending)
                if wanted is not None and used >= wanted:
                    break
            if batch and wanted is None:
                if pending is not None:
                    yield pending
                pending = batch
                batches, used = batches + 1, used + len(batch)
        finally:
            stream.close(self.stop_check)
        self.last_batches = batches
        self._report(stream, epoch, used, batches, wanted, time.monotonic() - start)
        if pending is not None:
            yield pending

    def _report(
        self, stream: EpochStream, epoch: int, used: int, batches: int, wanted: int | None, seconds: float
    ) -> None:
        source = f"The {self.channel} stream of epoch {epoch} ({stream.path})"
        if stream.pairs_read == 0:
            raise UserError(
                f"{source} holds no records; the augmented manifest of the channel must list "
                f"image/mask pairs, {SETTINGS}"
            )
        log.info(
            "%s: %d image/mask pairs used in %d batches, %.1f MB read in %.1f s",
            source,
            used,
            batches,
            stream.bytes_read / 1e6,
            seconds,
        )
        if wanted is None:
            return
        if batches == 0:
            raise UserError(
                f"{source} holds {stream.pairs_read} image/mask pairs, fewer than one mini_batch_size "
                f"of {self.batch_size}"
            )
        if used < wanted:
            log.warning(
                "%s ended after %d image/mask pairs, fewer than the %d that %d iterations of %d need "
                "(num_training_samples // mini_batch_size): the epoch ran %d iterations",
                source,
                stream.pairs_read,
                wanted,
                self.iterations,
                self.batch_size,
                batches,
            )
        elif not stream.exhausted or stream.pairs_read > used:
            log.info(
                "%s holds more than the %d image/mask pairs that %d iterations of %d use (num_training_samples "
                "// mini_batch_size); the epoch ends there and the rest of the stream is skipped",
                source,
                used,
                self.iterations,
                self.batch_size,
            )


def pipe_loader(
    split: str,
    hp: dict,
    pairs: StreamedPairs,
    seed: int,
    workers: int,
    stop_check: Callable[[], None] = no_stop,
    shard: tuple[int, int] = (0, 1),
) -> BatchLoader:
    """The loader of a streamed split, a drop-in for the File-mode one.

    ``mini_batch_size`` is the global batch, as in File mode: each of the ``shard[1]`` hosts reads
    its share of it from its own stream (SageMaker gives each host its own FIFO).
    """
    if split == "train":
        batch_size = host_share(hp["mini_batch_size"], *shard)
        iterations = max(1, hp["num_training_samples"] // hp["mini_batch_size"])
        if shard[1] > 1:
            log.info(
                "train: this host reads batches of %d pairs from its stream, its share of mini_batch_size %d "
                "over %d hosts",
                batch_size,
                hp["mini_batch_size"],
                shard[1],
            )
    else:
        batch_size, iterations = hp["validation_mini_batch_size"], None
    settings = StreamSettings(hp["_pipe_wait_seconds"], hp["_pipe_shuffle_buffer"], seed)
    sampler = PipeBatchSampler(split, batch_size, iterations, settings, stop_check)
    log.info("%s: streamed in Pipe mode from %s", split, paths.pipe_path(split, "<epoch>"))
    return BatchLoader(pairs, sampler, workers, stop_check=stop_check)
