"""The class table (classes.json): what a class id means to a person, and the fallback without it."""

import json

import pytest

from semseg import classes
from semseg.errors import UserError

TABLE = classes.ClassTable(("background", "car", "road"), ((0, 0, 0), (250, 50, 83), (128, 64, 128)))


def test_save_then_load_gives_the_same_table(tmp_path):
    path = classes.save(TABLE, tmp_path)
    assert path == tmp_path / "classes.json"
    assert classes.load(tmp_path, 3) == TABLE
    assert json.loads(path.read_text())["classes"][1] == {"id": 1, "name": "car", "color": [250, 50, 83]}
    assert not [p for p in tmp_path.iterdir() if p.name != "classes.json"]  # no temporary file left


def test_without_the_file_names_are_class_n_in_voc_colours(tmp_path):
    table = classes.load(tmp_path, 3)
    assert table.names == ("class_0", "class_1", "class_2")
    assert table.colors == ((0, 0, 0), (128, 0, 0), (0, 128, 0))  # PASCAL VOC's first colours


def test_palette_is_the_table_then_voc_and_names_beyond_the_table_are_numbered():
    palette = TABLE.palette()
    assert len(palette) == 768
    assert palette[:9] == [0, 0, 0, 250, 50, 83, 128, 64, 128]
    assert tuple(palette[9:12]) == classes.voc_colors()[3]
    assert TABLE.name(2) == "road" and TABLE.name(7) == "class_7"


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "is not valid JSON"),
        ('{"classes": []}', "non-empty 'classes' list"),
        ('["car"]', "non-empty 'classes' list"),
        ('{"classes": [{"id": 1, "name": "a", "color": [0, 0, 0]}]}', 'entry 0 must be an object with "id": 0'),
        ('{"classes": [{"id": 0, "name": "", "color": [0, 0, 0]}]}', "class 0 needs a non-empty 'name'"),
        ('{"classes": [{"id": 0, "name": "a", "color": [0, 0, 256]}]}', "needs a 'color' of three integers"),
        ('{"classes": [{"id": 0, "name": "a", "color": [0, 0]}]}', "needs a 'color' of three integers"),
    ],
)
def test_a_malformed_file_is_one_sentence_naming_it(tmp_path, text, message):
    (tmp_path / "classes.json").write_text(text)
    with pytest.raises(UserError, match=message) as error:
        classes.load(tmp_path, 1)
    assert str(tmp_path / "classes.json") in str(error.value) and "\n" not in str(error.value)


def test_a_table_of_another_size_than_the_model_is_refused(tmp_path):
    classes.save(TABLE, tmp_path)
    with pytest.raises(UserError, match="names 3 classes but the model has num_classes=4"):
        classes.load(tmp_path, 4)
