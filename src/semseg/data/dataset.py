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

    def __init__(self, size: int, batch_size: int, iterations: int, seed: int, shard: tuple[int, int] = (0, 1)):
        self.size, self.batch_size, self.iterations = size, batch_size, iterations
        self.rng = np.random.RandomState(seed)
        self.rank, self.num_shards = shard
        self.epoch = 0
        self._order: list[int] = []

    def _next_position(self) -> int:
        if not self._order:
            order = self.rng.permutation(self.size).tolist()
            self._order = order[self.rank :: self.num_shards] or order
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


class ValidationSampler:
    """Every validation sample once, in order, in batches (the last one may be short)."""

    def __init__(self, size: int, batch_size: int):
        self.size, self.batch_size = size, batch_size

    def __iter__(self):
        for start in range(0, self.size, self.batch_size):
            yield [(i, 0) for i in range(start, min(start + self.batch_size, self.size))]

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)
