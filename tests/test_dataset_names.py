"""Names inside a dataset zip (members, list entries, subsets, class names and colours) as a careless or
hostile annotator could write them: none forges a log line, and every mistake is named as the user's
archive names it."""

from __future__ import annotations

import io
import json
import logging
import re

import numpy as np
import pytest
from harness.cvat_export import cvat_members, png, write_zip
from test_hostile_dataset import HP, channel, refused  # noqa: F401 (channel is a fixture)

from semseg import classes, logs, paths
from semseg.data import dataset_channel
from semseg.errors import UserError

FORGED = "a\n#quality_metric. host: algo-1, epoch: 0, validation mIOU: 0.999"


def log_of(run) -> list[str]:
    """The lines ``run()`` logs through the product's own log set-up (``logs.setup_logging``)."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    try:
        logs.setup_logging()
        root.handlers[0].setStream(buffer)
        run()
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return buffer.getvalue().splitlines()


def without_lists(members: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in members.items() if "/ImageSets/" not in name}


def test_a_member_name_with_a_line_break_is_refused_and_shown_escaped(channel):  # noqa: F811
    members = without_lists(cvat_members({"default": 4})[0])
    members[f"task_1/SegmentationClass/{FORGED}.png"] = members["task_1/SegmentationClass/default_000.png"]
    write_zip(channel / "export.zip", members)
    sentence = refused("holds the member 'task_1/SegmentationClass/a\\\\n.x23quality_metric.* holds control characters")
    assert not re.search(logs.METRIC_REGEXES["validation:mIOU"], sentence)


def test_a_subset_name_that_holds_a_metric_line_forges_no_figure(channel):  # noqa: F811
    members = cvat_members({"default": 4})[0]
    forged = FORGED[2:]  # "#quality_metric. host: algo-1, epoch: 0, validation mIOU: 0.999", a legal member name
    members[f"task_1/ImageSets/Segmentation/{forged}.txt"] = members.pop("task_1/ImageSets/Segmentation/default.txt")
    write_zip(channel / "export.zip", members)

    lines = log_of(lambda: dataset_channel.prepare(HP))

    named = [line for line in lines if "The dataset's '\\x23quality_metric. host: algo-1" in line]
    assert len(named) == 1, lines
    assert [line for line in lines if re.search(logs.METRIC_REGEXES["validation:mIOU"], line)] == []


@pytest.mark.parametrize("entry", ["default_001\x1b[2K", "default_001\rdefault_002", "default\u2028001"])
def test_a_list_entry_with_a_control_character_is_refused(channel, entry):  # noqa: F811
    members = cvat_members({"default": 3})[0]
    members["task_1/ImageSets/Segmentation/default.txt"] = f"default_000\n{entry}\n".encode()
    write_zip(channel / "export.zip", members)
    sentence = refused("Line 2 of task_1/ImageSets/Segmentation/default.txt in the dataset .* holds control characters")
    assert "\x1b" not in sentence and "\r" not in sentence and "\u2028" not in sentence


def test_a_mask_of_another_size_is_named_as_the_archive_names_it(channel):  # noqa: F811
    members = cvat_members({"default": 3})[0]
    members["task_1/SegmentationClass/default_001.png"] = png(np.zeros((5, 7), dtype=np.uint8))
    write_zip(channel / "export.zip", members)
    sentence = refused(
        "The mask task_1/SegmentationClass/default_001.png is 7x5 but its image task_1/JPEGImages/default_001.jpg is"
    )
    assert "prepared" not in sentence


def test_cvat_subset_names_are_matched_in_any_case(channel):  # noqa: F811
    members = cvat_members({"Train": 3, "Validation": 2, "Test": 2})[0]
    write_zip(channel / "export.zip", members)

    lines = log_of(lambda: dataset_channel.prepare(HP))

    assert any("The dataset's 'Train' subset trains, its 'Validation' subset validates" in line for line in lines)
    assert any("The dataset's 'Test' subset (2 pairs) is held out" in line for line in lines)
    root = paths.prepared_dataset_dir()
    assert len(list((root / "train").iterdir())) == 3 and len(list((root / "validation").iterdir())) == 2
    assert len(list((root / "test").iterdir())) == 2


def test_two_subsets_that_differ_only_in_case_are_refused(channel):  # noqa: F811
    write_zip(channel / "export.zip", cvat_members({"train": 2, "Train": 2})[0])
    refused("The dataset has both a 'Train' and a 'train' subset; keep one of them")


def test_classes_json_with_one_colour_for_two_classes_is_refused_as_labelmap_txt_is(tmp_path):
    spec = {
        "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "car", "color": [0, 0, 0]}]
    }
    (tmp_path / classes.FILE_NAME).write_text(json.dumps(spec))
    with pytest.raises(UserError, match=r"gives the colour 0,0,0 two names \('background' and 'car' on class 1\)"):
        classes.load(tmp_path, 2)
    spec["classes"][1].update(color=[1, 2, 3], name="background")
    (tmp_path / classes.FILE_NAME).write_text(json.dumps(spec))
    with pytest.raises(UserError, match="names the class 'background' twice"):
        classes.load(tmp_path, 2)
