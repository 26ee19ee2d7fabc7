"""Label maps: SageMaker's 'scale' and 'map' semantics compiled into a lookup table."""

import json

import numpy as np
import pytest

from semseg.data import label_map
from semseg.errors import UserError


def test_identity_by_default_with_255_ignored(tmp_path):
    table = label_map.lookup_table(label_map.load(None, "train"), num_classes=3)
    assert table[[0, 1, 2, 3, 254, 255]].tolist() == [0, 1, 2, -1, -1, -1]


def test_scale_floors_as_documented():
    table = label_map.lookup_table({"scale": "3"}, num_classes=3)
    assert table[[0, 3, 6, 4, 8]].tolist() == [0, 1, 2, 1, 2]


def test_map_sends_encoded_values_to_classes_and_ignores_the_rest():
    table = label_map.lookup_table({"map": {"0": 5, "1": 0, "2": 2}}, num_classes=3)
    assert table[[5, 0, 2, 1, 255]].tolist() == [0, 1, 2, -1, -1]


def test_map_wins_over_scale():
    table = label_map.lookup_table({"scale": 2, "map": {"0": 4, "1": 8}}, num_classes=2)
    assert table[[4, 8, 2]].tolist() == [0, 1, -1]


def test_reads_the_channel_file(tmp_path):
    (tmp_path / "validation_label_map.json").write_text(json.dumps({"scale": 2}))
    assert label_map.load(tmp_path, "validation") == {"scale": 2}
    assert label_map.load(tmp_path, "train") == {"scale": 1}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        ('{"colours": 3}', "with a 'scale' or a 'map' entry"),
        ('["scale"]', "with a 'scale' or a 'map' entry"),
    ],
)
def test_unreadable_label_map_files(tmp_path, content, message):
    (tmp_path / "train_label_map.json").write_text(content)
    with pytest.raises(UserError, match=message):
        label_map.load(tmp_path, "train")


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"scale": "0"}, "positive number"),
        ({"scale": "x"}, "positive number"),
        ({"map": {"a": 1}}, "both integers"),
        ({"map": {"0": 300}}, "outside 0..255"),
        ({"map": [1, 2]}, "object"),
    ],
)
def test_invalid_label_map_values(spec, message):
    with pytest.raises(UserError, match=message):
        label_map.lookup_table(spec, num_classes=3)


def test_out_of_range_values_exclude_the_ignore_value():
    dropped = label_map.out_of_range_values({"scale": 1}, num_classes=3)
    assert np.flatnonzero(dropped)[:3].tolist() == [3, 4, 5] and not dropped[255] and not dropped[:3].any()
