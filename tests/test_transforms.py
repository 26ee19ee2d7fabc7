"""The GluonCV recipe as joint transforms: sizes, ignore padding, and label lookup."""

import random

import numpy as np
from PIL import Image

from semseg.data import label_map, transforms
from semseg.data.dataset import EpochSampler, prepare_pair


def test_padding_fills_the_mask_with_ignore_not_class_zero():
    image, mask = Image.new("RGB", (10, 6)), Image.new("L", (10, 6), 1)
    padded_image, padded_mask = transforms.PadToSize(16)(image, mask, random.Random(0))
    values = np.asarray(padded_mask)
    assert padded_image.size == (16, 16) and (values[6:, :] == 255).all() and (values[:6, :10] == 1).all()


def test_train_transform_yields_crop_size_squares_from_any_size():
    transform = transforms.train_transform(base_size=40, crop_size=32)
    for seed, size in enumerate([(5, 3), (200, 30), (33, 90)]):
        image, mask = transform(Image.new("RGB", size), Image.new("L", size), random.Random(seed))
        assert image.size == mask.size == (32, 32)


def test_validation_transform_is_a_centre_crop_of_the_short_side_resize():
    image = Image.fromarray(np.tile(np.arange(100, dtype=np.uint8), (50, 1)))
    out, mask = transforms.validation_transform(20)(image.convert("RGB"), image, random.Random(0))
    # 100x50 -> 40x20, centre 20x20 starts at x=10 of 40, i.e. x=25 of the original gradient
    assert out.size == (20, 20) and np.asarray(mask)[0, 0] in range(24, 28)


def test_prepare_pair_normalises_and_maps_labels(tmp_path):
    Image.new("RGB", (8, 8), (255, 255, 255)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 1, 2, 255] * 2] * 8, dtype=np.uint8), "L").save(tmp_path / "m.png")
    table = label_map.lookup_table({"scale": 1}, num_classes=2)
    image, labels = prepare_pair(
        tmp_path / "a.png", tmp_path / "m.png", transforms.validation_transform(8), table, random.Random(0)
    )
    assert image.shape == (3, 8, 8) and np.allclose(image[:, 0, 0], (1 - transforms.MEAN) / transforms.STD)
    assert labels[0, :4].tolist() == [0, 1, -1, -1]


def test_epoch_sampler_draws_iterations_times_batch_and_covers_the_data():
    sampler = EpochSampler(size=5, batch_size=2, iterations=5, seed=1)
    batches = list(sampler)
    positions = [p for batch in batches for p, _ in batch]
    assert len(batches) == 5 and all(len(b) == 2 for b in batches)
    assert sorted(positions) == sorted(list(range(5)) * 2)
