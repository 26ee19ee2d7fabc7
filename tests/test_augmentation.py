"""The strong augmentation recipe (``_augmentation_type=strong``): the image and its mask move together,
uncovered pixels are ignored rather than labelled, colours change only in the image, and the default
recipe is exactly the built-in's."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from semseg import hyperparameters
from semseg.data import transforms
from semseg.data.label_map import IGNORE_VALUE
from semseg.errors import UserError

COLOURS = {0: (30, 30, 30), 1: (230, 40, 40), 2: (40, 200, 60)}  # far apart, so jitter cannot mix them up


def hp(**given) -> dict:
    return hyperparameters.parse({"num_classes": "3", "num_training_samples": "8", "crop_size": "48", "base_size": "64",
                                  "_augmentation_type": "strong", **given})  # fmt: skip


def blocks(seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """An image of large rectangles painted in each class's colour, and its mask."""
    rng = np.random.RandomState(seed)
    mask = np.zeros((72, 96), dtype=np.uint8)
    for class_id in (1, 2):
        top, left = rng.randint(0, 40), rng.randint(0, 60)
        mask[top : top + 30, left : left + 34] = class_id
    rgb = np.zeros((*mask.shape, 3), dtype=np.uint8)
    for class_id, colour in COLOURS.items():
        rgb[mask == class_id] = colour
    return Image.fromarray(rgb), Image.fromarray(mask, mode="L")


def nearest_class(rgb: np.ndarray) -> np.ndarray:
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    return np.argmin(((rgb[..., None, :].astype(np.float32) - palette) ** 2).sum(-1), axis=-1)


@pytest.mark.parametrize("seed", range(8))
def test_the_image_and_its_mask_stay_aligned_through_every_step(seed):
    transform = transforms.training_transform(hp(augment_color_jitter="0", augment_hue="0"))
    image, mask = transform(*blocks(seed), random.Random(seed))
    ids, rgb = np.asarray(mask), np.asarray(image)
    labelled = ids != IGNORE_VALUE
    assert image.size == mask.size == (48, 48) and labelled.any()
    agreement = (nearest_class(rgb)[labelled] == ids[labelled]).mean()
    assert agreement > 0.95, agreement  # only the bilinear image's edges may blur into a neighbour


def test_a_free_rotation_uncovers_ignore_never_a_class():
    image, mask = Image.new("RGB", (40, 40), COLOURS[1]), Image.new("L", (40, 40), 1)
    turned_image, turned_mask = transforms.RandomRotation(30)(image, mask, random.Random(1))
    values = np.asarray(turned_mask)
    assert set(np.unique(values)) == {1, IGNORE_VALUE}
    assert values[0, 0] == IGNORE_VALUE and values[20, 20] == 1
    assert tuple(np.asarray(turned_image)[0, 0]) == (0, 0, 0)


def test_colour_jitter_changes_the_image_and_never_the_mask():
    image, mask = blocks()
    jittered, same_mask = transforms.ColorJitter(0.3, 0.05)(image, mask, random.Random(3))
    assert not np.array_equal(np.asarray(jittered), np.asarray(image))
    assert np.array_equal(np.asarray(same_mask), np.asarray(mask))


def test_quarter_turns_and_flips_are_exact():
    image, mask = blocks()
    for step in (
        transforms.RandomQuarterTurn(1.0),
        transforms.RandomVerticalFlip(1.0),
        transforms.RandomHorizontalFlip(1.0),
    ):
        moved_image, moved_mask = step(image, mask, random.Random(0))
        assert nearest_class(np.asarray(moved_image)).tolist() == np.asarray(moved_mask).tolist()


def test_the_default_recipe_is_the_built_ins():
    default = transforms.training_transform(hp(_augmentation_type="default"))
    assert [type(step) for step in default.steps] == [
        transforms.RandomHorizontalFlip,
        transforms.RandomScale,
        transforms.PadToSize,
        transforms.RandomCrop,
        transforms.RandomGaussianBlur,
    ]
    scale = default.steps[1]
    assert (scale.low, scale.high) == (32, 128)  # 0.5 and 2.0 x base_size 64, whatever augment_scale_* say
    before = transforms.train_transform(64, 48)(*blocks(), random.Random(5))
    after = default(*blocks(), random.Random(5))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(before, after))


def test_the_strong_recipe_takes_its_settings_from_the_table():
    strong = transforms.training_transform(
        hp(augment_scale_min="0.5", augment_scale_max="3", augment_rotate90="0", augment_horizontal_flip="0")
    )
    kinds = [type(step) for step in strong.steps]
    assert transforms.RandomRotation in kinds and transforms.ColorJitter in kinds
    scale = next(step for step in strong.steps if isinstance(step, transforms.RandomScale))
    assert (scale.low, scale.high) == (32, 192)
    turn = next(step for step in strong.steps if isinstance(step, transforms.RandomQuarterTurn))
    assert turn.probability == 0.0
    flip = next(step for step in strong.steps if isinstance(step, transforms.RandomHorizontalFlip))
    assert flip.probability == 0.0


@pytest.mark.parametrize(
    "given, sentence",
    [
        ({"augment_scale_min": "2", "augment_scale_max": "1"}, "augment_scale_min .* must be below augment_scale_max"),
        ({"augment_rotate90": "1.5"}, "augment_rotate90"),
        ({"augment_rotation_degrees": "-3"}, "augment_rotation_degrees"),
        ({"_augmentation_type": "heavy"}, "_augmentation_type"),
    ],
)
def test_a_bad_setting_is_one_sentence(given, sentence):
    with pytest.raises(UserError, match=sentence) as refused:
        hp(**given)
    assert "\n" not in str(refused.value)
