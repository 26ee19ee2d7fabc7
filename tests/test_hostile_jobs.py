"""``semseg job`` and the S3 side of serving given hostile names and field values.

Every name from outside (a ChannelName, an S3 key) stays a name: it never reaches a folder outside
the job, never removes what the job did not make, and a bad one, or a field of the wrong type or
out of its CreateTrainingJob bounds, is refused in one sentence before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import stat
import subprocess
from pathlib import Path

import boto3
import pytest
from harness.s3jobs import SEMSEG, request

from semseg import paths, sm_config
from semseg.errors import UserError
from semseg.jobs import request as job_request
from semseg.jobs import transfer
from semseg.jobs.s3 import parse_uri
from serve import model_fetch

JOB_TIMEOUT_S = 300  # refusals come before training; a job that gets further must still end


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with what it is (folder, FIFO, or a file's digest): a snapshot to compare."""
    found = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            kind = "folder"
        elif stat.S_ISREG(mode):
            kind = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            kind = "FIFO" if stat.S_ISFIFO(mode) else "other"
        found[str(path.relative_to(root))] = kind
    return found


def victim(folder: Path) -> Path:
    """A folder of someone else's, with a file in it."""
    folder.mkdir(parents=True)
    (folder / "precious.txt").write_text("not the job's to touch\n")
    return folder


def run_cli(body: dict, request_file: Path, workdir: Path, env: dict) -> subprocess.CompletedProcess:
    request_file.write_text(json.dumps(body))
    return subprocess.run(
        [SEMSEG, "job", str(request_file), "--workdir", str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
    )


def assert_one_sentence(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 1, no traceback, and the last line says every fragment."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in last, output[-3000:]


def channel(name: str, uri: str, mode: str = "File") -> dict:
    return {
        "ChannelName": name,
        "InputMode": mode,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
    }


@pytest.fixture
def bucket_with_data(moto_server):
    """A bucket with one small object under data/, as a channel's S3Uri would name it."""
    bucket = moto_server.new_bucket()
    boto3.client("s3", endpoint_url=moto_server.endpoint).put_object(Bucket=bucket, Key="data/x.jpg", Body=b"jpeg")
    return bucket


# ChannelName: SageMaker's pattern, and neither '.' nor '..'


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("{outside}", "is not a valid channel name"),
        ("../../../escape-rel", "is not a valid channel name"),
        ("..", "'..'"),
        (".", "'.'"),
    ],
)
def test_a_channel_name_that_leaves_the_job_is_refused_before_anything_is_written(
    aws_env, bucket_with_data, tmp_path, name, fragment
):
    outside = victim(tmp_path / "srv" / "shared" / "victim")
    victim(tmp_path / "escape-rel")  # where the staging of "../../../escape-rel" lands
    victim(tmp_path / "jobs" / "escape-rel")  # where its channel folder lands
    workdir = tmp_path / "jobs" / "job"
    workdir.mkdir()
    name = name.format(outside=outside)
    body = request("hostile", bucket_with_data, [channel(name, f"s3://{bucket_with_data}/data/")])
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(body))
    before = tree(tmp_path)

    result = run_cli(body, request_file, workdir, aws_env)

    assert_one_sentence(result, "ChannelName", fragment)
    assert tree(tmp_path) == before


def test_a_pipe_mode_channel_name_never_turns_a_file_outside_the_job_into_a_fifo(aws_env, tmp_path):
    shared = victim(tmp_path / "shared")
    target = shared / "victim_0"  # the FIFO of epoch 0 of a channel named .../victim
    target.write_text("a regular file\n")
    source = victim(tmp_path / "pipe-source")
    workdir = tmp_path / "job"
    workdir.mkdir()
    body = request("hostile-pipe", "unused", [channel(str(shared / "victim"), source.as_uri(), mode="Pipe")])
    body["OutputDataConfig"] = {"S3OutputPath": (tmp_path / "out").as_uri()}
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(body))
    before = tree(tmp_path)

    result = run_cli(body, request_file, workdir, aws_env)

    assert_one_sentence(result, "ChannelName", "is not a valid channel name")
    assert tree(tmp_path) == before


def test_a_file_channel_named_like_the_fifo_of_a_pipe_channel_is_refused():
    body = request("fifo-clash", "b", [channel("train", "s3://b/t/", mode="Pipe"), channel("train_0", "s3://b/u/")])
    with pytest.raises(UserError, match=r"'train_0'.*'train'"):
        job_request.parse(body)


@pytest.mark.parametrize("name", ["/srv/shared/victim", "../x", "..", ".", "a/b", "x" * 65, "", "two words", "tab\t"])
def test_the_layout_refuses_a_bad_channel_name_wherever_it_comes_from(name, tmp_path):
    for make_path in (
        lambda: paths.channel_dir(name, tmp_path),
        lambda: paths.pipe_path(name, 0),
        lambda: paths.pipe_name(name, "<epoch>"),
    ):
        with pytest.raises(UserError) as caught:
            make_path()
        assert "\n" not in str(caught.value)


def test_the_layout_keeps_every_name_sagemaker_allows(tmp_path):
    name = "Train.v2-final_" + "x" * 49  # 64 characters, every kind the pattern allows
    assert paths.channel_dir(name, tmp_path) == tmp_path / "input" / "data" / name
    assert paths.pipe_name(name, 3) == f"{name}_3"


def test_training_refuses_a_bad_channel_name_in_inputdataconfig(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    config = paths.input_data_config_file()
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"train": {"TrainingInputMode": "File"}, "../../etc": {"TrainingInputMode": "Pipe"}}))
    with pytest.raises(UserError, match=r"inputdataconfig\.json.*'\.\./\.\./etc' is not a valid channel name"):
        sm_config.read_input_data_config()


def test_a_folder_that_is_not_a_job_folder_is_never_emptied(aws_env, tmp_path):
    workdir = tmp_path / "home"
    victim(workdir / "model")
    victim(workdir / "output")
    body = request("not-mine", "unused", [channel("train", victim(tmp_path / "data").as_uri())])
    body["OutputDataConfig"] = {"S3OutputPath": (tmp_path / "out").as_uri()}
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(body))
    before = tree(tmp_path)

    result = run_cli(body, request_file, workdir, aws_env)

    assert_one_sentence(result, str(workdir), "not a job folder")
    assert tree(tmp_path) == before


# S3 keys: one file each, or a refusal naming both


def test_a_key_that_is_also_the_folder_of_another_is_refused_naming_both_before_downloading(s3, tmp_path):
    bucket = s3.new_bucket()
    client = boto3.client("s3")
    client.put_object(Bucket=bucket, Key="clash/a", Body=b"a file")
    client.put_object(Bucket=bucket, Key="clash/a/b.jpg", Body=b"a file in the folder a")
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(UserError) as caught:
        transfer.download(parse_uri(f"s3://{bucket}/clash/"), work / "channel", work / "staging")

    assert "'clash/a'" in str(caught.value) and "'clash/a/b.jpg'" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert list(work.iterdir()) == []


def test_a_file_that_cannot_be_put_in_place_fails_the_download(s3, tmp_path):
    bucket = s3.new_bucket()
    client = boto3.client("s3")
    for key in ("data/a.jpg", "data/b.jpg"):
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())
    destination = tmp_path / "channel"
    in_the_way = victim(destination / "a.jpg")  # a folder where the object a.jpg must go

    with pytest.raises(UserError) as caught:
        transfer.download(parse_uri(f"s3://{bucket}/data/"), destination, tmp_path / "staging")

    assert "data/a.jpg" in str(caught.value) and "\n" not in str(caught.value)
    assert (in_the_way / "precious.txt").read_text() == "not the job's to touch\n"


def test_a_staging_folder_the_download_did_not_make_is_never_removed(s3, tmp_path):
    bucket = s3.new_bucket()
    boto3.client("s3").put_object(Bucket=bucket, Key="data/a.jpg", Body=b"a")
    staging = victim(tmp_path / "staging")

    with pytest.raises(UserError, match="staging"):
        transfer.download(parse_uri(f"s3://{bucket}/data/"), tmp_path / "channel", staging)

    assert (staging / "precious.txt").is_file()
    assert not (tmp_path / "channel").exists()


# Request fields: the types and bounds of CreateTrainingJob


def _with(change) -> dict:
    body = request("typed", "b", [channel("train", "s3://b/train/")])
    change(body)
    return body


def _set(path: str, value):
    """A change to the request: ``value`` at the dotted ``path`` (``InputDataConfig.0.X``)."""

    def change(body: dict) -> None:
        *parents, last = path.split(".")
        node = body
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[int(last) if last.isdigit() else last] = value

    return change


@pytest.mark.parametrize(
    ("path", "value", "fragments"),
    [
        ("StoppingCondition.MaxRuntimeInSeconds", "abc", ("MaxRuntimeInSeconds", "whole number", "from 1 to")),
        ("StoppingCondition.MaxRuntimeInSeconds", math.inf, ("MaxRuntimeInSeconds", "whole number")),
        ("StoppingCondition.MaxRuntimeInSeconds", 1.5, ("MaxRuntimeInSeconds", "whole number")),
        ("StoppingCondition.MaxRuntimeInSeconds", 0, ("MaxRuntimeInSeconds", f"from 1 to {2**31 - 1}")),
        ("StoppingCondition.MaxRuntimeInSeconds", True, ("MaxRuntimeInSeconds", "whole number")),
        ("StoppingCondition.MaxRuntimeInSeconds", 2**31, ("MaxRuntimeInSeconds", str(2**31 - 1))),
        ("InputDataConfig.0.ShuffleConfig", {"Seed": "x"}, ("Seed", "whole number")),
        ("InputDataConfig.0.ShuffleConfig", {"Seed": 2**63}, ("Seed", str(2**63 - 1))),
        ("InputDataConfig.0.ShuffleConfig", {}, ("ShuffleConfig", "Seed")),
        ("OutputDataConfig.S3OutputPath", 7, ("S3OutputPath", "must be a string")),
        ("OutputDataConfig.S3OutputPath", "7", ("S3OutputPath", "s3://")),
        ("OutputDataConfig.S3OutputPath", "s3://b/" + "k" * 1024, ("S3OutputPath", "1024")),
        ("CheckpointConfig.S3Uri", ["s3://b/c"], ("CheckpointConfig.S3Uri", "must be a string")),
        ("InputDataConfig.0.DataSource.S3DataSource.S3Uri", 7, ("S3Uri", "must be a string")),
        ("InputDataConfig.0.ChannelName", 7, ("ChannelName", "must be a string")),
        ("InputDataConfig.0.InputMode", ["File"], ("InputMode",)),
        ("InputDataConfig.0.DataSource.S3DataSource.AttributeNames", "source-ref", ("AttributeNames", "array")),
        ("InputDataConfig.0.ContentType", 3, ("ContentType", "must be a string")),
        ("InputDataConfig.0.RecordWrapperType", "Protobuf", ("RecordWrapperType", "None", "RecordIO")),
        ("InputDataConfig", {"ChannelName": "train"}, ("InputDataConfig", "array")),
        ("AlgorithmSpecification.TrainingInputMode", 1, ("TrainingInputMode",)),
        ("AlgorithmSpecification.TrainingImage", "--privileged", ("TrainingImage", "not an image name")),
        ("AlgorithmSpecification.TrainingImage", "x" * 256, ("TrainingImage", "255")),
        ("Environment", {"A=B": "c"}, ("Environment", "'A=B'")),
        ("TrainingJobName", "job\n", ("TrainingJobName", "'job\\n'")),
        ("Environment", {"A": 1}, ("Environment variable A", "string")),
    ],
)
def test_a_field_of_the_wrong_type_or_out_of_bounds_is_one_sentence(path, value, fragments):
    with pytest.raises(UserError) as caught:
        job_request.parse(_with(_set(path, value)))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_a_runtime_json_reads_as_infinite_is_refused_from_the_file(tmp_path):
    body = json.dumps(_with(lambda b: None)).replace('"MaxRuntimeInSeconds": 3600', '"MaxRuntimeInSeconds": 1.5e400')
    assert "1.5e400" in body
    path = tmp_path / "request.json"
    path.write_text(body)
    with pytest.raises(UserError, match="MaxRuntimeInSeconds"):
        job_request.load(path)


@pytest.mark.parametrize("text", ["null", "[]", '"TrainingJobName"', "7"])
def test_a_request_that_is_not_an_object_is_said_to_be_so(tmp_path, text):
    path = tmp_path / "request.json"
    path.write_text(text)
    with pytest.raises(UserError, match=r"^The request must be a JSON object") as caught:
        job_request.load(path)
    assert "TrainingJobName" not in str(caught.value)


def test_good_values_are_kept_and_fields_that_do_not_apply_are_named_in_a_log_line(caplog):
    body = _with(_set("InputDataConfig.0.ShuffleConfig", {"Seed": 2**63 - 1}))
    body["StoppingCondition"]["MaxRuntimeInSeconds"] = 1
    body["OutputDataConfig"]["S3OutputPath"] = "s3://b/jobs/"
    body["Tags"] = [{"Key": "team", "Value": "vision"}]
    with caplog.at_level("INFO", logger="semseg"):
        parsed = job_request.parse(body)
    assert (parsed.max_runtime_s, parsed.channels[0].shuffle_seed) == (1, 2**63 - 1)
    assert parsed.output_path.uri == "s3://b/jobs/"
    assert any("Ignoring Tags: it does not apply" in r.getMessage() for r in caplog.records)
    with pytest.raises(UserError, match='Unknown parameter in input: "SomeNewField"'):  # as boto3 refuses it
        job_request.parse({**body, "SomeNewField": {"x": 1}})


def test_the_bounds_checked_are_those_of_sagemakers_own_api_model():
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    shapes = model.operation_model("CreateTrainingJob").input_shape
    channel_shape = shapes.members["InputDataConfig"].member
    runtime = shapes.members["StoppingCondition"].members["MaxRuntimeInSeconds"]
    s3_uri = channel_shape.members["DataSource"].members["S3DataSource"].members["S3Uri"]
    name = channel_shape.members["ChannelName"]
    assert (name.metadata["pattern"], name.metadata["max"]) == (paths.CHANNEL_NAME.pattern, paths.CHANNEL_NAME_MAX)
    assert (runtime.type_name, runtime.metadata["min"]) == ("integer", job_request.MAX_RUNTIME.low)
    assert channel_shape.members["ShuffleConfig"].members["Seed"].type_name == "long"
    assert s3_uri.metadata["max"] == job_request.S3_URI_MAX
    assert shapes.members["OutputDataConfig"].members["S3OutputPath"].metadata["max"] == job_request.S3_URI_MAX
    assert set(channel_shape.members["RecordWrapperType"].enum) == set(job_request.RECORD_WRAPPERS)


# SEMSEG_MODEL_URI: one object, never a bucket or a folder


@pytest.mark.parametrize("uri", ["s3://{bucket}", "s3://{bucket}/", "s3://{bucket}/models", "s3://{bucket}/models/"])
def test_a_model_uri_naming_a_bucket_or_folder_is_refused_before_downloading(s3, tmp_path, uri):
    bucket = s3.new_bucket()
    boto3.client("s3").put_object(Bucket=bucket, Key="models/model.tar.gz", Body=b"not read")
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(UserError) as caught:
        model_fetch.fetch(uri.format(bucket=bucket), work / "model")

    assert str(caught.value).startswith(f"{model_fetch.MODEL_URI_VARIABLE} must name the model.tar.gz object")
    assert list(work.iterdir()) == []


def test_a_model_uri_naming_nothing_says_so(s3, tmp_path):
    bucket = s3.new_bucket()
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(UserError, match=rf"^There are no objects under s3://{bucket}/none/model.tar.gz$"):
        model_fetch.fetch(f"s3://{bucket}/none/model.tar.gz", work / "model")
    assert list(work.iterdir()) == []


@pytest.mark.parametrize(
    "changes, sentence",
    [
        ({"ResourceConfig.InstanceCount": 9}, "ResourceConfig.InstanceCount is '9'; a job run here has 1 to 8"),
        ({"ResourceConfig.InstanceCount": 2, "AlgorithmSpecification.TrainingImage": "semseg:cpu"}, "in TrainingImage"),
        ({"ResourceConfig.InstanceCount": 2, "InputDataConfig.0.InputMode": "Pipe"}, "with Pipe-mode channels"),
        ({"ResourceConfig.InstanceCount": 2, "CheckpointConfig": {"S3Uri": "s3://b/c"}}, "with CheckpointConfig"),
        ({"InputDataConfig.0.CompressionType": "Gzip"}, "has CompressionType Gzip, which SageMaker applies in Pipe"),
        ({"InputDataConfig.0.CompressionType": "Zip"}, "CompressionType is 'Zip'; use one of None, Gzip"),
    ],
)
def test_what_several_instances_and_compression_cannot_do_here_is_one_sentence(changes, sentence):
    def change(body):
        for path, value in changes.items():
            _set(path, value)(body)

    with pytest.raises(UserError, match=re.escape(sentence)):
        job_request.parse(_with(change))


def test_several_instances_and_gzip_in_pipe_mode_are_kept():
    def change(body):
        _set("ResourceConfig.InstanceCount", 3)(body)
        _set("InputDataConfig.0.DataSource.S3DataSource.S3DataDistributionType", "ShardedByS3Key")(body)

    parsed = job_request.parse(_with(change))
    assert parsed.instance_count == 3 and parsed.channels[0].distribution == "ShardedByS3Key"
    piped = job_request.parse(
        _with(lambda body: [_set(p, v)(body) for p, v in (("InputDataConfig.0.InputMode", "Pipe"),
                                                          ("InputDataConfig.0.CompressionType", "Gzip"))])
    )  # fmt: skip
    assert piped.channels[0].compression == "Gzip"
