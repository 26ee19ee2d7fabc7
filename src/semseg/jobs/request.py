"""A ``CreateTrainingJob`` request, as boto3 or the SageMaker SDK builds it, read for a local run.

Only what a job on this machine can honour is kept; every other field is accepted and named in
one log line saying it does not apply here, so a request made for SageMaker runs unchanged.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .s3 import S3Location, parse_uri

log = logging.getLogger("semseg")

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # CreateTrainingJob's own pattern
HANDLED = {
    "TrainingJobName",
    "HyperParameters",
    "AlgorithmSpecification",
    "InputDataConfig",
    "OutputDataConfig",
    "CheckpointConfig",
    "StoppingCondition",
    "Environment",
}
INPUT_MODES = ("File", "Pipe", "FastFile")
DATA_TYPES = ("S3Prefix", "AugmentedManifestFile")


@dataclass(frozen=True)
class Channel:
    name: str
    source: S3Location
    data_type: str = "S3Prefix"
    input_mode: str = "File"
    attribute_names: tuple[str, ...] = ()
    content_type: str | None = None
    record_wrapper: str = "None"
    distribution: str = "FullyReplicated"
    shuffle_seed: int | None = None

    @property
    def is_pipe(self) -> bool:
        return self.input_mode == "Pipe"

    def input_data_config(self) -> dict[str, str]:
        """This channel's entry of inputdataconfig.json, as SageMaker writes it."""
        entry = {
            "TrainingInputMode": self.input_mode,
            "S3DistributionType": self.distribution,
            "RecordWrapperType": self.record_wrapper,
        }
        if self.content_type:
            entry["ContentType"] = self.content_type
        return entry


@dataclass(frozen=True)
class JobRequest:
    name: str
    hyperparameters: dict[str, str]
    channels: list[Channel]
    output_path: S3Location
    checkpoint_uri: S3Location | None = None
    max_runtime_s: int | None = None
    environment: dict[str, str] = field(default_factory=dict)
    training_image: str | None = None  # None: train in this environment

    def model_uri(self) -> S3Location:
        return self.output_path.child(self.name, "output", "model.tar.gz")

    def output_uri(self) -> S3Location:
        return self.output_path.child(self.name, "output", "output.tar.gz")


def _dict(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a JSON object, not {type(value).__name__}")
    return value


def _ignore(where: str, fields: dict, keep: set[str]) -> None:
    for key in sorted(set(fields) - keep):
        log.info("Ignoring %s%s: it does not apply to a job run on this machine", where, key)


def _channel(raw: Any, default_mode: str) -> Channel:
    raw = _dict(raw, "Each InputDataConfig entry")
    name = raw.get("ChannelName")
    if not name or not isinstance(name, str):
        raise UserError("Every InputDataConfig entry needs a ChannelName")
    where = f"The '{name}' channel"
    data_source = _dict(raw.get("DataSource"), f"{where}'s DataSource")
    s3 = data_source.get("S3DataSource")
    if not isinstance(s3, dict) or not s3.get("S3Uri"):
        kinds = ", ".join(sorted(data_source)) or "none"
        raise UserError(
            f"{where} needs DataSource.S3DataSource.S3Uri (found {kinds}); only S3 and file:// data sources run here"
        )
    data_type = s3.get("S3DataType", "S3Prefix")
    if data_type not in DATA_TYPES:
        raise UserError(f"{where} has S3DataType {data_type!r}; a local job supports {' and '.join(DATA_TYPES)}")
    mode = raw.get("InputMode") or default_mode
    if mode not in INPUT_MODES:
        raise UserError(f"{where} has InputMode {mode!r}; use one of {', '.join(INPUT_MODES)}")
    if mode == "FastFile":
        log.info("%s is in FastFile mode: a local job downloads it as in File mode", where)
        mode = "File"
    if data_type == "AugmentedManifestFile" and mode != "Pipe":
        raise UserError(f"{where} is an AugmentedManifestFile, which this algorithm reads in Pipe mode only")
    attributes = s3.get("AttributeNames") or []
    if data_type == "AugmentedManifestFile" and not attributes:
        raise UserError(
            f"{where} is an AugmentedManifestFile and needs AttributeNames, such as ['source-ref', 'label-ref']"
        )
    distribution = s3.get("S3DataDistributionType", "FullyReplicated")
    if distribution == "ShardedByS3Key":
        log.info("%s is ShardedByS3Key: a local job is one host, which gets every object", where)
    shuffle = _dict(raw.get("ShuffleConfig"), f"{where}'s ShuffleConfig")
    if raw.get("CompressionType") not in (None, "None"):
        raise UserError(f"{where} has CompressionType {raw['CompressionType']!r}, which a local job does not support")
    _ignore(f"{where}'s ", raw, {"ChannelName", "DataSource", "InputMode", "ContentType", "RecordWrapperType",
                                  "ShuffleConfig", "CompressionType"})  # fmt: skip
    return Channel(
        name=name,
        source=parse_uri(s3["S3Uri"], f"S3Uri of the '{name}' channel"),
        data_type=data_type,
        input_mode=mode,
        attribute_names=tuple(str(a) for a in attributes),
        content_type=raw.get("ContentType"),
        record_wrapper=raw.get("RecordWrapperType") or "None",
        distribution=distribution,
        shuffle_seed=int(shuffle["Seed"]) if "Seed" in shuffle else None,
    )


def parse(raw: Any) -> JobRequest:
    raw = _dict(raw, "The request")
    name = raw.get("TrainingJobName")
    if not isinstance(name, str) or not JOB_NAME.match(name):
        raise UserError(
            f"TrainingJobName {name!r} is not a valid name: 1 to 63 letters, digits and hyphens, no hyphen first"
        )
    _ignore("", raw, HANDLED)
    algorithm = _dict(raw.get("AlgorithmSpecification"), "AlgorithmSpecification")
    image = algorithm.get("TrainingImage") or None
    if image is not None and not isinstance(image, str):
        raise UserError(f"AlgorithmSpecification.TrainingImage must be an image name, not {type(image).__name__}")
    _ignore("AlgorithmSpecification.", algorithm, {"TrainingInputMode", "TrainingImage"})
    default_mode = algorithm.get("TrainingInputMode") or "File"
    channels = [_channel(entry, default_mode) for entry in raw.get("InputDataConfig") or []]
    names = [c.name for c in channels]
    if len(set(names)) != len(names):
        raise UserError(f"The channel names {names} repeat; each channel needs its own name")
    output = _dict(raw.get("OutputDataConfig"), "OutputDataConfig")
    if not output.get("S3OutputPath"):
        raise UserError("OutputDataConfig.S3OutputPath is required: where model.tar.gz and output.tar.gz go")
    _ignore("OutputDataConfig.", output, {"S3OutputPath"})
    checkpoint = _dict(raw.get("CheckpointConfig"), "CheckpointConfig")
    if checkpoint.get("LocalPath"):
        log.info("CheckpointConfig.LocalPath is the job folder's checkpoints/ on this machine")
    stopping = _dict(raw.get("StoppingCondition"), "StoppingCondition")
    _ignore("StoppingCondition.", stopping, {"MaxRuntimeInSeconds"})
    hyperparameters = _dict(raw.get("HyperParameters"), "HyperParameters")
    environment = _dict(raw.get("Environment"), "Environment")
    return JobRequest(
        name=name,
        hyperparameters={str(k): str(v) for k, v in hyperparameters.items()},
        channels=channels,
        output_path=parse_uri(output["S3OutputPath"], "S3OutputPath"),
        checkpoint_uri=parse_uri(checkpoint["S3Uri"], "CheckpointConfig.S3Uri") if checkpoint.get("S3Uri") else None,
        max_runtime_s=int(stopping["MaxRuntimeInSeconds"]) if stopping.get("MaxRuntimeInSeconds") else None,
        environment={str(k): str(v) for k, v in environment.items()},
        training_image=image,
    )


def load(path: Path) -> JobRequest:
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"The request {path} could not be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"The request {path} is not valid JSON ({exc})") from None
    return parse(raw)
