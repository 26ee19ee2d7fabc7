"""The 'dataset' channel read directly (no training): both layouts, zipped or not, RGB or index
masks, subsets and the seeded split, the label map's classes, and the clear errors."""

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
from semseg.data.dataset_channel import labelmap_txt
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
    dataset_channel.prepare(hp(fraction=0.5))
    assert sorted(prepared_masks("validation")) == sorted(n for n in truth if n.split("/")[-1].startswith("val"))
    for name, ids in prepared_masks("train").items():
        np.testing.assert_array_equal(ids, truth[name])
    assert "The dataset's subsets test are not used for training" in caplog.text


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


def test_the_dataset_channel_does_not_mix_with_the_four_channels(job):
    write_zip(paths.channel_dir("dataset") / "export.zip", cvat_members({"default": 3})[0])
    paths.channel_dir("train").mkdir()
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
