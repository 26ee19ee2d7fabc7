"""The hyperparameter table: SageMaker's string values in, typed values out, clear errors."""

import pytest

from semseg import hyperparameters
from semseg.errors import UserError

REQUIRED = {"num_classes": "4", "num_training_samples": "100"}


def parse(**values):
    return hyperparameters.parse({**REQUIRED, **values})


def test_defaults_are_those_of_the_built_in():
    hp = parse()
    assert hp["algorithm"] == "fcn" and hp["backbone"] == "resnet-50"
    assert hp["crop_size"] == 240 and hp["base_size"] == 520 and hp["epochs"] == 10
    assert hp["learning_rate"] == 0.001 and hp["optimizer"] == "sgd" and hp["lr_scheduler"] == "poly"
    assert hp["mini_batch_size"] == 16 and hp["validation_mini_batch_size"] == 16
    assert hp["use_pretrained_model"] is True and hp["early_stopping"] is False
    assert (hp["early_stopping_min_epochs"], hp["early_stopping_patience"]) == (5, 4)
    assert hp["_aux_weight"] == 0.5


def test_every_public_name_of_the_built_in_is_in_the_table():
    public = {
        "backbone",
        "use_pretrained_model",
        "algorithm",
        "num_classes",
        "num_training_samples",
        "base_size",
        "crop_size",
        "epochs",
        "learning_rate",
        "lr_scheduler",
        "lr_scheduler_factor",
        "lr_scheduler_step",
        "mini_batch_size",
        "validation_mini_batch_size",
        "optimizer",
        "momentum",
        "weight_decay",
        "gamma1",
        "gamma2",
        "early_stopping",
        "early_stopping_min_epochs",
        "early_stopping_patience",
        "early_stopping_tolerance",
        "syncbn",
    }
    assert public <= set(hyperparameters.TABLE)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("True", True),
        ("true", True),
        ("1", True),
        ("False", False),
        ("false", False),
        ("0", False),
        ('"True"', True),
        ("TRUE", True),
    ],
)
def test_booleans_in_every_spelling(raw, expected):
    assert parse(early_stopping=raw)["early_stopping"] is expected


@pytest.mark.parametrize("raw, expected", [("1e-05", 1e-05), ("0.0001", 0.0001), ('"0.01"', 0.01), ("1E-3", 0.001)])
def test_numbers_in_scientific_notation_and_json_encoded(raw, expected):
    assert parse(learning_rate=raw)["learning_rate"] == pytest.approx(expected)


def test_json_encoded_strings_from_framework_estimators():
    hp = parse(algorithm='"psp"', num_classes="21", num_training_samples='"1464"')
    assert hp["algorithm"] == "psp" and hp["num_training_samples"] == 1464


@pytest.mark.parametrize(
    "raw, expected",
    [("resnet-50", "resnet-50"), ("resnet50", "resnet-50"), ("resnet-101", "resnet-101"), ("ResNet101", "resnet-101")],
)
def test_backbone_spellings(raw, expected):
    assert parse(backbone=raw)["backbone"] == expected


@pytest.mark.parametrize("raw, expected", [("240", 240), ("241", 248), ("350", 352), ("17", 24)])
def test_crop_size_rounds_up_to_a_multiple_of_8(raw, expected):
    assert parse(crop_size=raw)["crop_size"] == expected


def test_invalid_enum_reads_like_the_built_in():
    with pytest.raises(UserError) as error:
        parse(optimizer="adadelta")
    assert str(error.value) == (
        "The value 'adadelta' is not valid for the 'optimizer' hyperparameter which accepts one of the "
        "following: 'sgd', 'adam', 'rmsprop', 'adagrad', 'nag'"
    )


@pytest.mark.parametrize(
    "name, raw",
    [
        ("num_classes", "1"),
        ("num_classes", "255"),
        ("num_classes", "2.5"),
        ("learning_rate", "0"),
        ("learning_rate", "1.5"),
        ("mini_batch_size", "0"),
        ("epochs", "ten"),
        ("crop_size", "16"),
        ("weight_decay", "1"),
        ("momentum", "nan"),
        ("use_pretrained_model", "maybe"),
    ],
)
def test_out_of_range_values_name_the_hyperparameter(name, raw):
    with pytest.raises(UserError, match=f"The value '{raw}' is not valid for the '{name}' hyperparameter"):
        parse(**{name: raw})


@pytest.mark.parametrize("missing", ["num_classes", "num_training_samples"])
def test_required_hyperparameters(missing):
    values = dict(REQUIRED)
    del values[missing]
    with pytest.raises(UserError, match=f"The '{missing}' hyperparameter is required"):
        hyperparameters.parse(values)


def test_step_schedule_needs_its_epochs_and_tolerates_spaces():
    with pytest.raises(UserError, match="lr_scheduler_step"):
        parse(lr_scheduler="step")
    assert parse(lr_scheduler="step", lr_scheduler_step="20, 10")["lr_scheduler_step"] == (10, 20)


def test_unknown_and_service_keys_are_tolerated_and_logged(caplog):
    caplog.set_level("INFO")
    hp = parse(_tuning_objective_metric="validation:mIOU", sagemaker_region='"us-east-1"', _workers="4", colour="blue")
    assert hp["_workers"] == 4 and "colour" not in hp
    assert "_tuning_objective_metric" in caplog.text and "sagemaker_region" in caplog.text


def test_readme_metric_definitions_are_the_ones_the_code_matches():
    from pathlib import Path

    from semseg.logs import METRIC_REGEXES

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name, regex in METRIC_REGEXES.items():
        assert f"| `{name}` | `{regex}` |" in readme


def test_readme_defaults_are_the_table_defaults():
    """Every default the README's Hyperparameters section states is the table's, and every public
    hyperparameter with a default is stated there."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Hyperparameters", 1)[1].split("\n#", 1)[0]
    stated = {}
    for names, inside in re.findall(r"((?:`\w+`/)*`\w+`)\s+\(([^)]*)\)", section):  # `name` (default, ...)
        if not inside.startswith("e.g.") and ".." not in inside:
            default = inside.split("default ")[1] if "default " in inside else re.split(r"[,;]", inside)[0]
            stated.update({name: default.strip() for name in re.findall(r"`(\w+)`", names)})
    stated.update(dict(re.findall(r"`(_\w+)` (\d[\d.]*)", section)))  # internal keys: `_name` default
    for name, default in stated.items():
        assert hyperparameters.to_string(hyperparameters.TABLE[name].default) == default, name
    public = {name for name, spec in hyperparameters.TABLE.items() if not name.startswith("_")}
    with_default = {name for name in public if hyperparameters.TABLE[name].default is not None}
    assert with_default - {"precision_dtype"} <= set(stated)
