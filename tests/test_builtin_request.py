"""A request written for SageMaker's built-in algorithm: its image name means this product, and its
MetricDefinitions (or, for the built-in's image without any, the algorithm's own) are read."""

from __future__ import annotations

import logging

import pytest

from semseg.errors import UserError
from semseg.jobs import builtin_image
from semseg.jobs.request import parse
from semseg.logs import METRIC_REGEXES

US_EAST_1 = "811284229777.dkr.ecr.us-east-1.amazonaws.com/semantic-segmentation:1"  # image_uris.retrieve's answer


def request(**algorithm) -> dict:
    return {
        "TrainingJobName": "builtin",
        "AlgorithmSpecification": {"TrainingInputMode": "File", **algorithm},
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/jobs"},
    }


@pytest.mark.parametrize(
    "image",
    [
        US_EAST_1,
        "811284229777.dkr.ecr.us-east-1.amazonaws.com/semantic-segmentation:latest",
        "811284229777.dkr.ecr.us-east-1.amazonaws.com/semantic-segmentation",
        "390948362332.dkr.ecr.cn-north-1.amazonaws.com.cn/semantic-segmentation:1",
        "685385470294.dkr.ecr.eu-west-1.amazonaws.com/semantic-segmentation@sha256:" + "ab" * 32,
    ],
)
def test_the_builtin_image_of_any_region_and_tag_runs_this_environments_train(image, monkeypatch, caplog):
    monkeypatch.delenv(builtin_image.IMAGE_VARIABLE, raising=False)
    with caplog.at_level(logging.INFO, logger="semseg"):
        parsed = parse(request(TrainingImage=image))
    assert parsed.training_image is None and parsed.builtin
    assert f"TrainingImage {image} is SageMaker's built-in Semantic Segmentation image" in caplog.text
    assert "this product trains in its place, with this environment's train" in caplog.text


def test_an_image_setting_stands_in_for_the_builtin_image(monkeypatch, caplog):
    monkeypatch.setenv(builtin_image.IMAGE_VARIABLE, "semseg:cpu")
    with caplog.at_level(logging.INFO, logger="semseg"):
        parsed = parse(request(TrainingImage=US_EAST_1))
    assert parsed.training_image == "semseg:cpu" and parsed.builtin
    assert "with the image semseg:cpu (SEMSEG_BUILTIN_IMAGE)" in caplog.text
    monkeypatch.setenv(builtin_image.IMAGE_VARIABLE, "-v /:/host")
    with pytest.raises(UserError, match=r"^\$SEMSEG_BUILTIN_IMAGE '-v /:/host' is not an image name$"):
        parse(request(TrainingImage=US_EAST_1))


@pytest.mark.parametrize(
    "image",
    [
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/semantic-segmentation:1",  # another account: someone's own
        "811284229777.dkr.ecr.us-west-2.amazonaws.com/semantic-segmentation:1",  # us-east-1's account elsewhere
        "811284229777.dkr.ecr.us-east-1.amazonaws.com/object-detection:1",
        "semseg:cpu",
    ],
)
def test_other_images_are_run_as_they_are(image, monkeypatch):
    monkeypatch.setenv(builtin_image.IMAGE_VARIABLE, "semseg:cpu")
    parsed = parse(request(TrainingImage=image))
    assert parsed.training_image == image and not parsed.builtin


def test_the_builtin_image_without_metric_definitions_gets_the_algorithms_own(monkeypatch):
    monkeypatch.delenv(builtin_image.IMAGE_VARIABLE, raising=False)
    definitions = parse(request(TrainingImage=US_EAST_1)).metric_definitions
    assert {d.name: d.regex.pattern for d in definitions} == METRIC_REGEXES
    assert parse(request()).metric_definitions == ()  # this environment's train, named by no image: none asked for
    given = parse(request(MetricDefinitions=[{"Name": "loss", "Regex": "train loss: ([0-9.]+)"}])).metric_definitions
    assert [(d.name, d.regex.pattern) for d in given] == [("loss", "train loss: ([0-9.]+)")]


@pytest.mark.parametrize(
    "definitions, sentence",
    [
        ([{"Name": "loss", "Regex": "train loss: [0-9.]+"}], "The Regex of the metric 'loss' needs a group, (...)"),
        ([{"Name": "loss", "Regex": "train loss: ([0-9.]+"}], "The Regex of the metric 'loss' is not a regular"),
        ([{"Regex": "(x)"}], "A MetricDefinition's Name must be a string, not null"),
        ({"Name": "loss"}, "AlgorithmSpecification.MetricDefinitions must be a JSON array, not an object"),
        ([{"Name": "m", "Regex": "(x)"}] * 41, "AlgorithmSpecification.MetricDefinitions lists 41 metrics; Create"),
    ],
)
def test_bad_metric_definitions_are_one_sentence(definitions, sentence):
    with pytest.raises(UserError, match="^" + sentence.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        parse(request(MetricDefinitions=definitions))


@pytest.mark.parametrize(
    "change, sentence",
    [
        ({"HyperParameters": {"epochs": 10}}, "Invalid type for parameter HyperParameters.epochs, value: 10"),
        ({"Tagz": []}, 'Unknown parameter in input: "Tagz", must be one of: TrainingJobName'),
        ({"VpcConfig": {"Subnets": ["subnet-1"]}}, 'Missing required parameter in VpcConfig: "SecurityGroupIds"'),
        ({"EnableManagedSpotTraining": "yes"}, "Invalid type for parameter EnableManagedSpotTraining, value: yes"),
    ],
)
def test_what_botocore_refuses_is_refused_in_one_sentence_naming_the_field(change, sentence):
    with pytest.raises(UserError) as refused:
        parse({**request(), **change})
    message = str(refused.value)
    assert message.startswith("The request does not fit CreateTrainingJob's input, as botocore checks it: ")
    assert sentence in message and "\n" not in message


def test_the_fields_that_find_machines_may_be_left_out_here_and_are_checked_when_given():
    parse(request())  # no RoleArn, ResourceConfig or StoppingCondition: nothing to find here
    full = {
        **request(),
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "ResourceConfig": {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "EnableManagedSpotTraining": True,
        "RetryStrategy": {"MaximumRetryAttempts": 2},
        "Environment": {"SEED": "1"},
    }
    assert parse(full).environment == {"SEED": "1"}
    with pytest.raises(UserError, match=r"ResourceConfig\.InstanceCount, value: one"):
        parse({**full, "ResourceConfig": {**full["ResourceConfig"], "InstanceCount": "one"}})


def test_spot_training_and_retries_say_what_holds_here(caplog):
    with caplog.at_level(logging.INFO, logger="semseg"):
        parse({**request(), "EnableManagedSpotTraining": True, "CheckpointConfig": {"S3Uri": "s3://b/ckpt"}})
        parse({**request(), "EnableManagedSpotTraining": True, "RetryStrategy": {"MaximumRetryAttempts": 3}})
    assert "never interrupted for capacity; its checkpoints are synced with CheckpointConfig.S3Uri" in caplog.text
    assert "without CheckpointConfig an interrupted spot job would start over" in caplog.text
    assert "RetryStrategy: a job run here runs once" in caplog.text


def _within(filled, skeleton, where="request") -> None:
    """Every key of ``filled`` is one the skeleton has, at the same place (lists: their one member's keys)."""
    if isinstance(filled, dict) and not (set(skeleton) == {"KeyName"}):  # a map's keys are the user's own
        for key, value in filled.items():
            assert key in skeleton, f"{where}.{key} is not in the skeleton"
            _within(value, skeleton[key], f"{where}.{key}")
    elif isinstance(filled, list):
        for item in filled:
            _within(item, skeleton[0], f"{where}[]")


def test_a_filled_in_cli_skeleton_is_read_as_a_request_here(monkeypatch):
    """What ``aws sagemaker create-training-job --generate-cli-skeleton`` prints (botocore's ArgumentGenerator,
    which the AWS CLI uses), filled in for the built-in algorithm, the fields that do not apply deleted."""
    import botocore.session
    from botocore.utils import ArgumentGenerator

    monkeypatch.delenv(builtin_image.IMAGE_VARIABLE, raising=False)
    model = botocore.session.get_session().get_service_model("sagemaker")
    skeleton = ArgumentGenerator(use_member_names=True).generate_skeleton(
        model.operation_model("CreateTrainingJob").input_shape
    )
    channel = {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/train/"}},
        "ContentType": "image/jpeg",
        "InputMode": "File",
    }
    filled = {
        "TrainingJobName": "from-skeleton",
        "HyperParameters": {"num_classes": "4", "epochs": "1"},
        "AlgorithmSpecification": {"TrainingImage": US_EAST_1, "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "InputDataConfig": [{"ChannelName": name, **channel} for name in ("train", "train_annotation")],
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/jobs"},
        "ResourceConfig": {"InstanceType": "ml.p3.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": "s3://bucket/checkpoints", "LocalPath": "/opt/ml/checkpoints"},
        "Tags": [{"Key": "team", "Value": "vision"}],
    }
    _within(filled, skeleton)
    parsed = parse(filled)
    assert parsed.builtin and parsed.training_image is None and parsed.max_runtime_s == 3600
    assert [channel.name for channel in parsed.channels] == ["train", "train_annotation"]
    assert parsed.checkpoint_uri.uri == "s3://bucket/checkpoints"
