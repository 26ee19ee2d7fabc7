"""Shared fixtures: synthetic images and masks written the way users' datasets are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def save_mask(path: Path, values: np.ndarray, mode: str = "P") -> Path:
    mask = Image.fromarray(values.astype(np.uint8), mode="L")
    if mode == "P":
        mask = mask.convert("P")
        mask.putpalette([i % 256 for i in range(768)])
    mask.save(path)
    return path


def save_image(path: Path, width: int, height: int, colour=(120, 80, 40), mode: str = "RGB") -> Path:
    image = Image.new("RGB", (width, height), colour)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


@pytest.fixture(scope="session")
def learnt_model(tmp_path_factory):
    """The demo's training run (a task it learns, about 0.8 mIoU; int8 copy included), run once per
    session for the tests that need a network that has learnt something (a ``trainjob.Job``)."""
    from trainjob import run_train

    from semseg.demo import DEMO_HYPERPARAMETERS
    from semseg.sample_data import write_opt_ml_tree

    root = write_opt_ml_tree(
        tmp_path_factory.mktemp("learnt"), train=32, validation=16, hyperparameters=DEMO_HYPERPARAMETERS
    )
    (root / "checkpoints").rmdir()  # no checkpoints: they would cost 8 writes of three model sizes
    return run_train(root, timeout=1500)


@pytest.fixture
def split_dirs(tmp_path):
    images, masks = tmp_path / "train", tmp_path / "train_annotation"
    images.mkdir()
    masks.mkdir()
    return images, masks
