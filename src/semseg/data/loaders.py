"""The loaders of both splits, from directories (File mode) or per-epoch FIFOs (Pipe mode).

A ``dataset`` channel (a CVAT export) is first written out as the four File-mode directories
(``dataset_channel.prepare``) and is then read like them.

The training loop sees the same thing either way: two ``BatchLoader`` objects, the iterations of
an epoch, and, in File mode, the sampler it can move to a resumed position. The loaders own
processes, so whoever builds ``Splits`` must ``close()`` it on every way out (``train.loop.train``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import paths
from ..cpu_threads import usable_cpu_count
from ..errors import UserError
from . import dataset_channel, file_mode, label_map, pipe_mode
from .batch_loader import BatchLoader, no_stop
from .dataset import EpochSampler, PairDataset, ValidationSampler, WorkerBatches
from .transforms import training_transform, validation_transform

log = logging.getLogger("semseg")

REQUIRED_CHANNELS = ("train", "train_annotation", "validation", "validation_annotation")
TEST_CHANNELS = ("test", "test_annotation")  # optional: held out, scored once at the end (train.native_scores)


@dataclass
class Splits:
    """What the loop needs to know about the data of both splits."""

    train_loader: BatchLoader
    validation_loader: BatchLoader
    iterations_per_epoch: int
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    train_batches: WorkerBatches | None = None  # None: a stream, which cannot skip ahead

    def close(self) -> None:
        """End both loaders' processes (nothing else does: see ``data.batch_loader``)."""
        self.train_loader.close()
        self.validation_loader.close()


def loader_workers(hp: dict) -> int:
    return max(0, min(hp["_workers"], usable_cpu_count()))


def _check_file_channels(channels: dict, streamed: set[str]) -> None:
    for name in REQUIRED_CHANNELS:
        if name.removesuffix("_annotation") in streamed:
            continue
        if name not in channels and not paths.channel_dir(name).is_dir():
            raise UserError(
                f"The '{name}' channel is missing; File mode needs the channels "
                "train, train_annotation, validation and validation_annotation"
            )
    given = [name for name in TEST_CHANNELS if name in channels or paths.channel_dir(name).is_dir()]
    if len(given) == 1:  # found now, not after the last epoch, when the test figure would be missing
        missing = next(name for name in TEST_CHANNELS if name not in given)
        raise UserError(
            f"The '{given[0]}' channel is given without the '{missing}' channel; a held-out test set needs both"
        )


def _transform(hp: dict, split: str):
    return training_transform(hp) if split == "train" else validation_transform(hp["crop_size"])


def _lookup_table(hp: dict, spec: dict, split: str) -> np.ndarray:
    return label_map.lookup_table(spec, hp["num_classes"], f"{split} label map")


def data_splits(
    hp: dict, channels: dict, seed: int, stop_check: Callable[[], None] = no_stop, shard: tuple[int, int] = (0, 1)
) -> Splits:
    """Each split from its directories (File mode) or its per-epoch FIFOs (Pipe mode).

    Each host loads its ``shard`` of every global batch: in File mode drawn from the whole dataset,
    in Pipe mode read from its own stream (SageMaker shards it with ShardedByS3Key).
    """
    streamed = pipe_mode.check_channels(channels)
    prepared = dataset_channel.prepare(hp)  # the 'dataset' channel as the four directories, or None
    if prepared is None:
        _check_file_channels(channels, streamed)
    channel_dir = paths.channel_dir if prepared is None else prepared.joinpath
    label_map_dir = paths.channel_dir("label_map") if paths.channel_dir("label_map").is_dir() else None
    workers = loader_workers(hp)
    loaders, sizes, class_pixels, train_batches = {}, {}, np.zeros(0, dtype=np.int64), None
    iterations = max(1, hp["num_training_samples"] // hp["mini_batch_size"])
    for split in ("train", "validation"):
        if split in streamed:  # the stream's length is unknown: num_training_samples is the train size
            table = _lookup_table(hp, label_map.load(label_map_dir, split), split)
            pairs = pipe_mode.StreamedPairs(_transform(hp, split), table)
            loaders[split] = pipe_mode.pipe_loader(split, hp, pairs, seed, workers, stop_check, shard)
            sizes[split] = hp["num_training_samples"] if split == "train" else 0
            continue
        pairs = file_mode.find_pairs(channel_dir(split), channel_dir(f"{split}_annotation"))
        spec = label_map.load(label_map_dir, split)
        table = _lookup_table(hp, spec, split)
        counts = file_mode.check_pairs(pairs, spec, hp["num_classes"], split)
        if split == "train":
            class_pixels = counts
            epochs = EpochSampler(len(pairs), hp["mini_batch_size"], iterations, seed)
            sampler = train_batches = WorkerBatches(epochs, *shard)
        else:
            sampler = ValidationSampler(len(pairs), hp["validation_mini_batch_size"])
        dataset = PairDataset(pairs, _transform(hp, split), table)
        loaders[split] = BatchLoader(dataset, sampler, workers, stop_check=stop_check)
        sizes[split] = len(pairs)
        log.info("%s: %d image/mask pairs", split, len(pairs))
    if hp["num_training_samples"] != sizes["train"]:
        log.info(
            "num_training_samples is %d; the train channel holds %d pairs", hp["num_training_samples"], sizes["train"]
        )
    return Splits(loaders["train"], loaders["validation"], iterations, class_pixels, train_batches)
