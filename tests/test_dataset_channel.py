"""The 'dataset' channel read directly (no training): both layouts, zipped or not, RGB or index
masks, subsets (each role in every spelling, the held-out test subset) and the seeded split, the
label map's classes, and the clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from harness.cvat_export import (
    COLOURS,
    LABELMAP,
    NAMES,
    cvat_members,
    mask_bytes,
    platform_members,
    write_tree,
    write_zip,
)
from PIL import Image

from semseg import classes, paths
from semseg.data import dataset_channel
from semseg.data.dataset_channel import labelmap_txt, layouts
from semseg.errors import UserError


@pytest.fixture
def job(tmp_path, monkeypatch):
    """An /opt/ml tree at tmp_path/ml; the dataset channel is written by each test."""
    root = tmp_path / "ml"
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(root))
    paths.channel_dir("dataset").mkdir(parents=True)
    return root


def hp(num_classes=4, fraction=0.2, seed=0):
    return {"num_classes": num_classes, "validation_fraction": fraction, "_seed": seed}


def prepared_masks(split: str) -> dict[str, np.ndarray]:
    """Original name -> class ids of the prepared masks of ``split``."""
    masks = {}
    for path in sorted((paths.prepared_dataset_dir() / f"{split}_annotation").iterdir()):
        name = path.stem.split("-", 1)[1].replace("~", "/")
        with Image.open(path) as mask:
            masks[name] = np.asarray(mask)
    return masks


def test_a_cvat_export_with_one_subset_is_split_and_its_rgb_masks_become_class_ids(job, caplog):
    caplog.set_level("INFO")
    members, truth = cvat_members({"default": 10})
    write_zip(paths.channel_dir("dataset") / "export.zip", members)
    assert dataset_channel.implied_hyperparameters({}) == {"num_training_samples": "8", "num_classes": "4"}
    root = dataset_channel.prepare(hp())
    assert root == paths.prepared_dataset_dir()
    train, validation = prepared_masks("train"), prepared_masks("validation")
    assert len(train) == 8 and len(validation) == 2 and not set(train) & set(validation)
    for name, ids in {**train, **validation}.items():
        np.testing.assert_array_equal(ids, truth[name])
    assert "street/default_002" in {**train, **validation}  # names with sub-folders
    with Image.open(next((root / "train_annotation").iterdir())) as mask:
        assert mask.mode == "P" and mask.getpalette()[:12] == [c for colour in COLOURS for c in colour]
    assert len(list((root / "train").iterdir())) == 8
    split_line = next(r.message for r in caplog.records if "split by validation_fraction=0.2, seed 0" in r.message)
    assert all(name in split_line for name in validation)
    table = classes.load(paths.model_dir(), 4)
    assert table.names == NAMES and table.colors == COLOURS


def test_the_split_is_seeded(job):
    write_zip(paths.channel_dir("dataset") / "export.zip", cvat_members({"default": 20})[0])
    held_out = []
    for seed in (0, 0, 1):
        dataset_channel.prepare(hp(seed=seed))
        held_out.append(sorted(prepared_masks("validation")))
    assert held_out[0] == held_out[1] != held_out[2]
    assert len(held_out[2]) == 4


def test_train_and_val_subsets_are_used_as_such_and_index_masks_are_kept(job, caplog):
    caplog.set_level("INFO")
    members, truth = cvat_members({"train": 5, "val": 3, "test": 2}, rgb=False, top="")
    write_zip(paths.channel_dir("dataset") / "export.zip", members)
    assert dataset_channel.implied_hyperparameters({})["num_training_samples"] == "5"  # the test subset is not counted
    dataset_channel.prepare(hp(fraction=0.5))
    assert sorted(prepared_masks("validation")) == sorted(n for n in truth if n.split("/")[-1].startswith("val"))
    for name, ids in {**prepared_masks("train"), **prepared_masks("test")}.items():
        np.testing.assert_array_equal(ids, truth[name])
    assert sorted(prepared_masks("test")) == ["test_000", "test_001"]
    assert len(list((paths.prepared_dataset_dir() / "test").iterdir())) == 2
    assert "The dataset's 'test' subset (2 pairs) is held out: it chooses no epoch" in caplog.text
    assert "not used for training" not in caplog.text


def pairs_of(*names: str) -> list[layouts.Pair]:
    return [layouts.Pair(name, f"{name}.jpg", f"{name}.png") for name in names]


@pytest.mark.parametrize(
    "train, validation, test",
    [("train", "val", "test"), ("Training", "Valid", "Testing"), ("TRAIN", "Validation", "TEST")],
)
def test_each_spelling_of_a_subset_takes_its_role(train, validation, test):
    subsets = {train: pairs_of("a", "b", "c"), validation: pairs_of("d"), test: pairs_of("e", "f")}
    chosen_train, chosen_validation, notes = layouts.choose_splits(subsets, 0.5, 0)
    assert [pair.name for pair in chosen_train] == ["a", "b", "c"] and [p.name for p in chosen_validation] == ["d"]
    assert layouts.test_subset(subsets) == (test, subsets[test])
    assert notes == [
        f"The dataset's '{test}' subset (2 pairs) is held out: it chooses no epoch and is scored once, at the end "
        "of training",
        f"The dataset's '{train}' subset trains, its '{validation}' subset validates",
    ]


@pytest.mark.parametrize("single", ["train", "default"])
def test_a_subset_beside_only_a_test_subset_is_split_by_validation_fraction(single):
    subsets = {single: pairs_of(*"abcdefghij"), "Test": pairs_of("x", "y")}
    train, validation, notes = layouts.choose_splits(subsets, 0.2, 0)
    assert len(train) == 8 and len(validation) == 2 and not {"x", "y"} & {p.name for p in train + validation}
    assert f"The dataset's '{single}' subset (10 pairs) is split by validation_fraction=0.2" in notes[-1]
    assert layouts.test_subset(subsets) == ("Test", subsets["Test"])


def test_without_a_test_subset_nothing_is_held_out():
    assert layouts.test_subset({"train": pairs_of("a", "b"), "val": pairs_of("c")}) is None


@pytest.mark.parametrize("first, second", [("val", "Valid"), ("test", "Testing"), ("train", "training")])
def test_two_subsets_of_one_role_are_refused_in_one_sentence(first, second):
    subsets = {"train" if "train" not in (first, second) else "val": pairs_of("a", "b"), first: [], second: []}
    with pytest.raises(UserError) as error:
        layouts.choose_splits(subsets, 0.2, 0)
    named = sorted((first, second))
    assert str(error.value) == f"The dataset has both a '{named[0]}' and a '{named[1]}' subset; keep one of them"


def platform_names(folders: dict[str, str], count: int = 2) -> list[str]:
    """Member names of a platform tree: image folder -> mask folder, ``count`` pairs each."""
    names = ["Dataset/labelmap.txt"]
    for image_folder, mask_folder in folders.items():
        for i in range(count):
            names += [
                f"Dataset/images/{image_folder}/{image_folder}{i}.jpg",
                f"Dataset/masks/{mask_folder}/{image_folder}{i}.png",
            ]
    return names


def test_the_platform_layout_takes_every_spelling_and_a_test_folder():
    names = platform_names({"Training": "training", "Valid": "VALID", "test": "test"})
    layout = layouts.find_layout(names, lambda name: "", "the zip")
    assert layout.kind == "images/ and masks/ folders" and layout.root == "Dataset/"
    assert sorted(layout.subsets) == ["Training", "Valid", "test"]
    assert [pair.mask for pair in layout.subsets["Valid"]] == [
        "Dataset/masks/VALID/Valid0.png",
        "Dataset/masks/VALID/Valid1.png",
    ]
    train, validation, _ = layouts.choose_splits(layout.subsets, 0.2, 0)
    assert {p.name for p in train} == {"Training0", "Training1"} and {p.name for p in validation} == {
        "Valid0",
        "Valid1",
    }
    assert [pair.image for pair in layouts.test_subset(layout.subsets)[1]] == [
        "Dataset/images/test/test0.jpg",
        "Dataset/images/test/test1.jpg",
    ]


def test_a_platform_test_folder_alone_beside_the_train_folder_is_found_from_its_landmark():
    layout = layouts.find_layout(platform_names({"train": "train", "Test": "Test"}, count=3)[1:], lambda name: "", "z")
    assert layout.root == "Dataset/" and sorted(layout.subsets) == ["Test", "train"]
    train, validation, _ = layouts.choose_splits(layout.subsets, 0.34, 0)
    assert len(train) == 2 and len(validation) == 1 and len(layouts.test_subset(layout.subsets)[1]) == 3


def test_one_platform_split_in_two_cases_is_refused_in_one_sentence():
    names = platform_names({"train": "train", "val": "val"}) + ["Dataset/images/Train/x.jpg"]
    with pytest.raises(UserError) as error:
        layouts.find_layout(names, lambda name: "", "the zip")
    assert str(error.value) == "The dataset the zip has both images/Train/ and images/train/; keep one of them"


def test_a_platform_zip_with_images_test_prepares_it_beside_the_splits(job):
    write_zip(paths.channel_dir("dataset") / "export.zip", platform_members(train=4, val=2, test=3))
    assert dataset_channel.implied_hyperparameters({})["num_training_samples"] == "4"
    dataset_channel.prepare(hp())
    assert sorted(prepared_masks("test")) == ["test000", "test001", "test002"]
    assert sorted(prepared_masks("validation")) == ["val000", "val001"] and len(prepared_masks("train")) == 4


def test_the_platform_layout_unzipped_in_the_channel(job):
    write_tree(paths.channel_dir("dataset"), platform_members(train=4, val=2, rgb=True))
    assert dataset_channel.implied_hyperparameters({})["num_training_samples"] == "4"
    dataset_channel.prepare(hp())
    assert sorted(prepared_masks("validation")) == ["val000", "val001"]
    assert {int(v) for ids in prepared_masks("train").values() for v in np.unique(ids)} <= {0, 1, 2, 3}


def test_colours_no_class_names_are_ignored_and_reported_once_per_split(job, caplog):
    members, truth = cvat_members({"train": 3, "val": 2})
    for stem in ("train_000", "train_001"):
        name = f"task_1/SegmentationClass/{stem}.png"
        ids = np.zeros(truth[stem].shape, dtype=np.uint8)  # the image's size
        rgb = np.asarray(COLOURS, dtype=np.uint8)[ids]
        rgb[:10, :10] = (7, 7, 7)  # 100 pixels in a colour labelmap.txt does not name
        members[name] = mask_bytes(rgb, rgb=False)
    write_zip(paths.channel_dir("dataset") / "export.zip", members)
    dataset_channel.prepare(hp())
    assert prepared_masks("train")["train_000"][:10, :10].tolist() == [[255] * 10] * 10
    warnings = [r.message for r in caplog.records if "no class of the label map names" in r.message]
    assert warnings == [
        "200 train mask pixels have colours that no class of the label map names and are ignored: 7,7,7 (200 px)"
    ]


def test_without_labelmap_rgb_masks_are_read_in_voc_colours_and_no_classes_json_is_written(job):
    members, truth = cvat_members({"default": 4}, rgb=False, labelmap=False)
    voc = np.asarray(classes.voc_colors()[:4], dtype=np.uint8)
    for name, ids in truth.items():
        members[f"task_1/SegmentationClass/{name}.png"] = mask_bytes(voc[ids], rgb=False)
    write_zip(paths.channel_dir("dataset") / "export.zip", members)
    assert dataset_channel.implied_hyperparameters({}) == {"num_training_samples": "3"}
    dataset_channel.prepare(hp())
    for name, ids in {**prepared_masks("train"), **prepared_masks("validation")}.items():
        np.testing.assert_array_equal(ids, truth[name])
    assert not (paths.model_dir() / "classes.json").exists()


def test_num_classes_that_disagrees_with_the_label_map_names_both_numbers(job):
    write_zip(paths.channel_dir("dataset") / "export.zip", cvat_members({"default": 4})[0])
    with pytest.raises(UserError, match="num_classes is 5 but task_1/labelmap.txt names 4 classes"):
        dataset_channel.prepare(hp(num_classes=5))


@pytest.mark.parametrize(
    "drop, message",
    [
        ("SegmentationClass/", "holds no class masks"),
        ("JPEGImages/", "holds no images"),
    ],
)
def test_an_export_without_masks_or_images_says_so(job, drop, message):
    members = {k: v for k, v in cvat_members({"default": 3})[0].items() if f"/{drop}" not in k}
    write_zip(paths.channel_dir("dataset") / "export.zip", members)
    with pytest.raises(UserError, match=message):
        dataset_channel.prepare(hp())


def test_a_zip_of_something_else_names_both_layouts(job):
    write_zip(paths.channel_dir("dataset") / "export.zip", {"photos/a.jpg": b"x"})
    with pytest.raises(UserError, match="has neither layout"):
        dataset_channel.implied_hyperparameters({})


@pytest.mark.parametrize("channel", ["train", "test_annotation"])
def test_the_dataset_channel_does_not_mix_with_the_four_channels(job, channel):
    write_zip(paths.channel_dir("dataset") / "export.zip", cvat_members({"default": 3})[0])
    paths.channel_dir(channel).mkdir()
    with pytest.raises(UserError, match="The 'dataset' channel replaces the channels"):
        dataset_channel.prepare(hp())


def test_without_a_dataset_channel_nothing_happens(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert dataset_channel.implied_hyperparameters({}) == {} and dataset_channel.prepare(hp()) is None


def test_labelmap_lines_by_the_documented_rules():
    text = LABELMAP + "\n# a comment\nsky:0,0,255:part1,part2:action\nroad:128,64,128\n"
    table = labelmap_txt.parse(text, "labelmap.txt")
    assert table.names == (*NAMES, "sky", "road")
    assert table.colors[-2:] == ((0, 0, 255), (128, 64, 128))


@pytest.mark.parametrize(
    "line, message",
    [
        ("car:250,50::", r"Line 3 of labelmap.txt \('car:250,50::'\) does not parse"),
        ("car 250,50,83", "does not parse: expected name:r,g,b:parts:actions"),
        ("car:250,50,300::", "does not parse"),
        (":1,2,3::", "does not parse"),
        ("car:0,0,0::", "gives the colour 0,0,0 two names \\('background' and 'car' on line 3\\)"),
        ("background:9,9,9::", "names the class 'background' twice"),
    ],
)
def test_a_labelmap_line_that_does_not_parse_is_one_sentence(line, message):
    with pytest.raises(UserError, match=message):
        labelmap_txt.parse(f"# label:color_rgb:parts:actions\nbackground:0,0,0::\n{line}\n", "labelmap.txt")


def test_a_labelmap_of_one_class_is_refused():
    with pytest.raises(UserError, match="names 1 classes; a label map must name 2 to 254"):
        labelmap_txt.parse("background:0,0,0::\n", "labelmap.txt")


def test_the_channel_takes_its_settings_from_inputdataconfig(job):
    paths.input_data_config_file().parent.mkdir(parents=True)
    paths.input_data_config_file().write_text(json.dumps({"dataset": {"TrainingInputMode": "Pipe"}}))
    with pytest.raises(UserError, match="The 'dataset' channel is in Pipe mode"):
        dataset_channel.implied_hyperparameters({})
