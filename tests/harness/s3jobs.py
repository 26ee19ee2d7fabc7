"""Local jobs over S3 (``semseg job``) as the tests run them: one tiny dataset, one tiny request shape."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import boto3

from harness.trainjob import TINY, require_training_marker
from semseg.logs import METRIC_REGEXES
from semseg.sample_data import write_opt_ml_tree

SEMSEG = str(Path(sys.executable).parent / "semseg")
CHANNELS = ("train", "train_annotation", "validation", "validation_annotation")
JOB_TIMEOUT_S = 400


def upload_dataset(bucket: str, prefix: str, scratch: Path, train: int = 4, validation: int = 2) -> None:
    """The sample dataset's four File-mode channels under ``s3://bucket/prefix/<channel>/``."""
    root = write_opt_ml_tree(scratch, train=train, validation=validation)
    s3 = boto3.client("s3")
    for channel in CHANNELS:
        for path in sorted((root / "input" / "data" / channel).iterdir()):
            s3.upload_file(str(path), bucket, f"{prefix}/{channel}/{path.name}")


def file_channel(name: str, uri: str, content_type: str | None = None) -> dict:
    channel = {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}
        },
    }
    if content_type:
        channel["ContentType"] = content_type
    return channel


def request(name: str, bucket: str, channels: list[dict], checkpoints: str | None = None, **hyperparameters) -> dict:
    """A CreateTrainingJob request as boto3 takes it, with the fields a local job ignores left in."""
    body = {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        # the README's MetricDefinitions, as a notebook for the built-in passes them
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": name, "Regex": regex} for name, regex in METRIC_REGEXES.items()],
        },
        "HyperParameters": {
            "num_classes": "4",
            "use_pretrained_model": "False",
            **TINY,
            **{k: str(v) for k, v in hyperparameters.items()},
        },
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/jobs"},
        "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    if checkpoints:
        body["CheckpointConfig"] = {"S3Uri": checkpoints}
    return body


def sdk_file_mode_request(name: str, bucket: str, prefix: str, env: dict, scratch: Path, **spec) -> dict:
    """The request the SageMaker SDK builds for the built-in's image with the four channels under
    ``s3://bucket/prefix/`` (the hyperparameters of ``request``), as a notebook for the built-in sends it."""
    channels = {
        channel: {"s3_data": f"s3://{bucket}/{prefix}/{channel}", "content_type": content_type(channel)}
        for channel in CHANNELS
    }
    return sdk_built(name, bucket, channels, env, scratch, **spec)


def sdk_built(name: str, bucket: str, channels: dict, env: dict, scratch: Path, epochs: int = 1, **spec) -> dict:
    """The SDK's request for the built-in's image with ``channels`` (name -> TrainingInput arguments)."""
    from harness.sagemaker_sdk import sdk_request

    hyperparameters = {"num_classes": "4", "use_pretrained_model": "False", **TINY, "epochs": str(epochs)}
    spec = {"job_name": name, "bucket": bucket, "output_path": f"s3://{bucket}/jobs", "channels": channels, **spec}
    return sdk_request({**spec, "hyperparameters": hyperparameters}, env, scratch)


def content_type(channel: str) -> str:
    return "image/png" if "annotation" in channel else "image/jpeg"


def file_mode_channels(bucket: str, prefix: str) -> list[dict]:
    return [file_channel(name, f"s3://{bucket}/{prefix}/{name}", content_type(name)) for name in CHANNELS]


@dataclass
class JobRun:
    returncode: int
    log: str
    description: dict | None
    workdir: Path


def run_job(body: dict, workdir: Path, env: dict, timeout: float = JOB_TIMEOUT_S) -> JobRun:
    """``semseg job`` on ``body`` in ``workdir``, as a user runs it."""
    require_training_marker("semseg job")
    workdir.mkdir(parents=True, exist_ok=True)
    request_file = workdir.parent / f"{body['TrainingJobName']}.json"
    request_file.write_text(json.dumps(body))
    result = subprocess.run(
        [SEMSEG, "job", str(request_file), "--workdir", str(workdir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return JobRun(result.returncode, result.stdout, last_json_object(result.stdout), workdir)


def last_json_object(text: str) -> dict | None:
    """The description the job prints last (an indented JSON object starting on a line of its own)."""
    start = text.rfind("\n{\n")
    if start < 0:
        return None
    end = text.find("\n}", start)
    try:
        return json.loads(text[start + 1 : end + 2])
    except ValueError:
        return None


def tar_members(bucket: str, key: str, read: tuple[str, ...] = ("hyperparams.json",)) -> dict[str, bytes | None]:
    """The files of the archive at ``key``, streamed from S3; the content of those named in ``read``."""
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"]
    members = {}
    with tarfile.open(fileobj=body, mode="r|gz") as archive:
        for member in archive:
            if member.isfile():
                members[member.name] = archive.extractfile(member).read() if member.name in read else None
    return members


def keys(bucket: str, prefix: str) -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))
