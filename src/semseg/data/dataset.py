"""Datasets and samplers that feed the training loop.

A sample is prepared by ``prepare_pair``: decode, joint transform, label lookup, normalise. The
sampler hands each draw its own seed, so augmentation is reproducible whatever the number of
loader processes, and an epoch is exactly the ``iterations x batch`` draws the LR schedule
was set up for (``num_training_samples / mini_batch_size`` iterations, as the built-in does).
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from ..errors import UserError
from .file_mode import Sample
from .images import open_image, read_mask, to_rgb_array
from .transforms import Compose, normalize


def prepare_pair(image_source, mask_source, transform: Compose, table: np.ndarray, rng: random.Random):
    """(float32 (3, H, W) normalised image, float32 (H, W) class ids with -1 = ignore)."""
    with open_image(image_source) as image:
        rgb = Image.fromarray(to_rgb_array(image))
    mask = Image.fromarray(read_mask(mask_source))
    rgb, mask = transform(rgb, mask, rng)
    labels = table[np.asarray(mask, dtype=np.uint8)].astype(np.float32)
    return normalize(np.asarray(rgb, dtype=np.uint8)), labels


class PairDataset:
    """File-mode pairs; indexed by ``(position, seed)`` tuples from ``EpochSampler``."""

    def __init__(self, samples: list[Sample], transform: Compose, table: np.ndarray):
        self.samples, self.transform, self.table = samples, transform, table

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        position, seed = key
        sample = self.samples[position]
        try:
            return prepare_pair(sample.image, sample.mask, self.transform, self.table, random.Random(seed))
        except (OSError, ValueError, SyntaxError) as exc:  # e.g. a file cut short after a readable header
            raise UserError(f"The image {sample.image} or its mask could not be decoded ({exc})") from None


class EpochSampler:
    """Batches of ``(position, seed)`` for one epoch of ``iterations`` batches of ``batch_size``.

    Draws walk through shuffled passes over the dataset, continuing across epochs, so every
    sample is seen equally often even when an epoch is not a whole number of passes.
    """

    def __init__(self, size: int, batch_size: int, iterations: int, seed: int):
        self.size, self.batch_size, self.iterations = size, batch_size, iterations
        self.rng = np.random.RandomState(seed)
        self.epoch = 0
        self._order: list[int] = []

    def _next_position(self) -> int:
        if not self._order:
            self._order = self.rng.permutation(self.size).tolist()
        return self._order.pop()

    def __iter__(self):
        seeds = self.rng.randint(0, 2**31 - 1, size=self.iterations * self.batch_size)
        for i in range(self.iterations):
            yield [(self._next_position(), int(seeds[i * self.batch_size + j])) for j in range(self.batch_size)]
        self.epoch += 1

    def __len__(self) -> int:
        return self.iterations

    def state(self) -> dict:
        """What the coming epochs depend on, as JSON-friendly values (for checkpoints)."""
        kind, keys, position, has_gauss, cached = self.rng.get_state()
        return {
            "rng": [kind, keys.tolist(), position, has_gauss, cached],
            "order": list(self._order),
            "epoch": self.epoch,
        }

    def restore(self, state: dict) -> None:
        kind, keys, position, has_gauss, cached = state["rng"]
        self.rng.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
        self._order, self.epoch = list(state["order"]), state["epoch"]


def host_share(batch_size: int, rank: int, hosts: int) -> int:
    """How many samples of a global batch of ``batch_size`` the host ``rank`` of ``hosts`` trains on."""
    return len(range(rank, batch_size, hosts))


class WorkerBatches:
    """This worker's share ``batch[rank::size]`` of each global batch of ``sampler``.

    In a multi-host job every worker iterates the same sampler (same seed) and loads only its
    share, so N hosts of one device each train exactly like one host with N devices, and each
    sample is read by one worker only; on one host (rank 0 of 1) the share is the whole batch.
    ``resume_at`` skips the batches a resumed epoch already trained on, drawing them all the same,
    so the sampler's state moves exactly as in an uninterrupted run. The length is always the
    whole epoch's.
    """

    def __init__(self, sampler: EpochSampler, rank: int = 0, size: int = 1):
        self.sampler, self.rank, self.size = sampler, rank, size
        self._pending = None

    def resume_at(self, iteration: int) -> None:
        batches = iter(self.sampler)
        for _ in range(iteration):
            next(batches)
        self._pending = batches if iteration < len(self.sampler) else None

    def __iter__(self):
        batches, self._pending = self._pending or iter(self.sampler), None
        return (batch[self.rank :: self.size] for batch in batches)

    def __len__(self) -> int:
        return len(self.sampler)


class ValidationSampler:
    """Every validation sample once, in order, in batches (the last one may be short)."""

    def __init__(self, size: int, batch_size: int):
        self.size, self.batch_size = size, batch_size

    def __iter__(self):
        for start in range(0, self.size, self.batch_size):
            yield [(i, 0) for i in range(start, min(start + self.batch_size, self.size))]

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)
