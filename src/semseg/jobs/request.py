"""A ``CreateTrainingJob`` request, as boto3 or the SageMaker SDK builds it, read for a local run.

Only what a job on this machine can honour is kept; every other field is accepted and named in
one log line saying it does not apply here, so a request made for SageMaker runs unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import UserError
from ..logs import METRIC_REGEXES
from ..names import shown
from . import builtin_image, request_schema
from .hosts import MAX_HOSTS
from .metric_log import MetricDefinition
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
    "EnableManagedSpotTraining",  # said by _say_what_applies
    "RetryStrategy",
    "ResourceConfig",  # InstanceCount, by _with_instances
}
INPUT_MODES = ("File", "Pipe", "FastFile")
DATA_TYPES = ("S3Prefix", "ManifestFile", "AugmentedManifestFile")


@dataclass(frozen=True)
class Bounds:
    """The range of an integer field of CreateTrainingJob."""

    low: int
    high: int


# The shapes checked here, as botocore's SageMaker service model (data/sagemaker/*/service-2.json) gives them.
MAX_RUNTIME = Bounds(1, 2**31 - 1)  # StoppingCondition.MaxRuntimeInSeconds: an integer (32 bits), min 1
SEED = Bounds(-(2**63), 2**63 - 1)  # ShuffleConfig.Seed: a long (64 bits)
MAX_CHANNELS = 20  # InputDataConfig: a list of at most 20 channels
S3_URI_MAX = 1024  # S3Uri and S3OutputPath: strings of at most 1024 characters, s3:// or https://
RECORD_WRAPPERS = ("None", "RecordIO")  # RecordWrapperType's enum
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")  # S3DataDistributionType's enum
COMPRESSIONS = ("None", "Gzip")  # CompressionType's enum
TEXT_MAX = 256  # ContentType and each of AttributeNames: strings of at most 256 characters
IMAGE_MAX = 255  # AlgorithmSpecification.TrainingImage
ENVIRONMENT_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")  # Environment's keys
ENVIRONMENT_MAX = 512  # Environment's keys and values: at most 512 characters each
METRIC_DEFINITIONS_MAX = 40  # MetricDefinitions: at most 40 entries
METRIC_NAME_MAX, METRIC_REGEX_MAX = 255, 500  # MetricDefinition.Name and .Regex
URI_SCHEMES = ("s3://", "file://")  # file:// stands for a local folder, as the SageMaker SDK's local mode allows


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
    compression: str = "None"  # Gzip: Pipe mode streams what the objects hold gunzipped

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
    builtin: bool = False  # the request named SageMaker's built-in Semantic Segmentation image
    metric_definitions: tuple[MetricDefinition, ...] = ()
    instance_count: int = 1

    def model_uri(self) -> S3Location:
        return self.output_path.child(self.name, "output", "model.tar.gz")

    def output_uri(self) -> S3Location:
        return self.output_path.child(self.name, "output", "output.tar.gz")


def _json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for a sentence about a field that has the wrong one."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _quoted(value: Any) -> str:
    """``value`` as the request wrote it (shortened), for a sentence."""
    text = value if isinstance(value, str) else json.dumps(value)
    return "'" + shown(text if len(text) <= 80 else text[:77] + "...") + "'"


def _dict(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a JSON object, not {_json_type(value)}")
    return value


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise UserError(f"{where} must be a JSON array, not {_json_type(value)}")
    return value


def _string(value: Any, where: str, longest: int) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where} must be a string, not {_json_type(value)}")
    if len(value) > longest:
        raise UserError(f"{where} is {len(value)} characters long; CreateTrainingJob takes at most {longest}")
    return value


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"{where} is {_quoted(value)}; use one of {', '.join(choices)}")
    return value


def _integer(value: Any, where: str, bounds: Bounds) -> int:
    """A JSON integer within ``bounds``: not a string, a boolean or a fraction (JSON reads 1.5e400 as infinity)."""
    if isinstance(value, bool) or not isinstance(value, int) or not bounds.low <= value <= bounds.high:
        raise UserError(f"{where} is {_quoted(value)}; it must be a whole number from {bounds.low} to {bounds.high}")
    return value


def _uri(value: Any, where: str) -> S3Location:
    """An S3 URI field: a string, an s3:// URI (or a file:// path), never a number read as a local folder."""
    uri = _string(value, where, S3_URI_MAX)
    if not uri.startswith(URI_SCHEMES):
        raise UserError(f"{where} is {_quoted(uri)}; it must be an s3:// URI (or a file:// path for a job run here)")
    return parse_uri(uri, where)


def _ignore(where: str, fields: dict, keep: set[str]) -> None:
    for key in sorted(set(fields) - keep):
        log.info("Ignoring %s%s: it does not apply to a job run on this machine", where, shown(key))


def _attributes(s3: dict, where: str) -> tuple[str, ...]:
    attributes = _list(s3.get("AttributeNames"), f"{where}'s AttributeNames")
    return tuple(_string(a, f"Each of {where}'s AttributeNames", TEXT_MAX) for a in attributes)


def _seed(raw: dict, where: str) -> int | None:
    if raw.get("ShuffleConfig") is None:
        return None
    shuffle = _dict(raw["ShuffleConfig"], f"{where}'s ShuffleConfig")
    if "Seed" not in shuffle:
        raise UserError(f"{where}'s ShuffleConfig needs a Seed")
    return _integer(shuffle["Seed"], f"{where}'s ShuffleConfig.Seed", SEED)


def _channel(raw: Any, default_mode: str) -> Channel:
    raw = _dict(raw, "Each InputDataConfig entry")
    if raw.get("ChannelName") is None:
        raise UserError("Every InputDataConfig entry needs a ChannelName")
    name = paths.check_channel_name(raw["ChannelName"])
    where = f"The '{name}' channel"
    data_source = _dict(raw.get("DataSource"), f"{where}'s DataSource")
    s3 = data_source.get("S3DataSource")
    if not isinstance(s3, dict) or s3.get("S3Uri") is None:
        kinds = ", ".join(sorted(shown(kind) for kind in data_source)) or "none"
        raise UserError(
            f"{where} needs DataSource.S3DataSource.S3Uri (found {kinds}); only S3 and file:// data sources run here"
        )
    source = _uri(s3["S3Uri"], f"{where}'s S3Uri")
    data_type = s3.get("S3DataType", "S3Prefix")
    if data_type not in DATA_TYPES:
        raise UserError(f"{where} has S3DataType {_quoted(data_type)}; a local job supports {' and '.join(DATA_TYPES)}")
    mode = _choice(raw.get("InputMode") or default_mode, f"{where}'s InputMode", INPUT_MODES)
    if mode == "FastFile":
        log.info("%s is in FastFile mode: a local job downloads it as in File mode", where)
        mode = "File"
    if data_type == "ManifestFile" and mode != "File":
        raise UserError(f"{where} is a ManifestFile, which a local job reads in File mode; give it InputMode File")
    if data_type == "AugmentedManifestFile" and mode != "Pipe":
        raise UserError(f"{where} is an AugmentedManifestFile, which this algorithm reads in Pipe mode only")
    attributes = _attributes(s3, where)
    if data_type == "AugmentedManifestFile" and not attributes:
        raise UserError(
            f"{where} is an AugmentedManifestFile and needs AttributeNames, such as ['source-ref', 'label-ref']"
        )
    distribution = _choice(
        s3.get("S3DataDistributionType", "FullyReplicated"), f"{where}'s S3DataDistributionType", DISTRIBUTIONS
    )
    compression = _choice(raw.get("CompressionType") or "None", f"{where}'s CompressionType", COMPRESSIONS)
    if compression == "Gzip" and mode != "Pipe":
        raise UserError(f"{where} has CompressionType Gzip, which SageMaker applies in Pipe mode only")
    content_type = raw.get("ContentType")
    _ignore(f"{where}'s ", raw, {"ChannelName", "DataSource", "InputMode", "ContentType", "RecordWrapperType",
                                  "ShuffleConfig", "CompressionType"})  # fmt: skip
    return Channel(
        name=name,
        source=source,
        data_type=data_type,
        input_mode=mode,
        attribute_names=attributes,
        content_type=None if content_type is None else _string(content_type, f"{where}'s ContentType", TEXT_MAX),
        record_wrapper=_choice(raw.get("RecordWrapperType") or "None", f"{where}'s RecordWrapperType", RECORD_WRAPPERS),
        distribution=distribution,
        shuffle_seed=_seed(raw, where),
        compression=compression,
    )


def _channels(raw: dict, default_mode: str) -> list[Channel]:
    entries = _list(raw.get("InputDataConfig"), "InputDataConfig")
    if len(entries) > MAX_CHANNELS:
        raise UserError(
            f"InputDataConfig lists {len(entries)} channels; CreateTrainingJob takes at most {MAX_CHANNELS}"
        )
    channels = [_channel(entry, default_mode) for entry in entries]
    names = [c.name for c in channels]
    if len(set(names)) != len(names):
        raise UserError(f"The channel names {names} repeat; each channel needs its own name")
    _check_fifo_names(channels)
    return channels


def _check_fifo_names(channels: list[Channel]) -> None:
    """A Pipe-mode channel's FIFOs are ``<name>_<epoch>`` in input/data, where a File channel's folder must not be."""
    piped = [c.name for c in channels if c.is_pipe]
    for channel in channels:
        for pipe in piped:
            suffix = channel.name.removeprefix(f"{pipe}_")
            if channel.name != pipe and suffix != channel.name and suffix.isdigit():
                raise UserError(
                    f"The channel '{channel.name}' has the name of a FIFO of the Pipe-mode channel '{pipe}'; rename it"
                )


def _environment(raw: dict) -> dict[str, str]:
    environment = _dict(raw.get("Environment"), "Environment")
    for key, value in environment.items():
        if len(key) > ENVIRONMENT_MAX or not ENVIRONMENT_KEY.fullmatch(key):
            raise UserError(
                f"The Environment variable {_quoted(key)} is not a valid name: letters, digits and '_', no digit first"
            )
        if not isinstance(value, str) or len(value) > ENVIRONMENT_MAX or "\0" in value:
            raise UserError(
                f"The Environment variable {key} must be a string of at most {ENVIRONMENT_MAX} characters without NUL"
            )
    return dict(environment)


def _say_what_applies(raw: dict, checkpoint: dict) -> None:
    """Spot training and retries, which a SageMaker job may be asked for: what of them holds here."""
    if raw.get("EnableManagedSpotTraining") is True:
        kept = (
            "its checkpoints are synced with CheckpointConfig.S3Uri as on SageMaker"
            if checkpoint.get("S3Uri")
            else ("without CheckpointConfig an interrupted spot job would start over, here as on SageMaker")
        )
        log.info("EnableManagedSpotTraining: a job run here is never interrupted for capacity; %s", kept)
    if raw.get("RetryStrategy"):
        log.info(
            "RetryStrategy: a job run here runs once; run it again in the same folder to resume from its checkpoints"
        )


def _metric_definitions(algorithm: dict, builtin: bool) -> tuple[MetricDefinition, ...]:
    """The request's MetricDefinitions; for the built-in's image without any, the algorithm's own."""
    entries = _list(algorithm.get("MetricDefinitions"), "AlgorithmSpecification.MetricDefinitions")
    if len(entries) > METRIC_DEFINITIONS_MAX:
        raise UserError(
            f"AlgorithmSpecification.MetricDefinitions lists {len(entries)} metrics; "
            f"CreateTrainingJob takes at most {METRIC_DEFINITIONS_MAX}"
        )
    if not entries and builtin:
        entries = [{"Name": name, "Regex": regex} for name, regex in METRIC_REGEXES.items()]
    definitions = []
    for entry in entries:
        entry = _dict(entry, "Each of AlgorithmSpecification.MetricDefinitions")
        name = _string(entry.get("Name"), "A MetricDefinition's Name", METRIC_NAME_MAX)
        regex = _string(entry.get("Regex"), f"The Regex of the metric {_quoted(name)}", METRIC_REGEX_MAX)
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise UserError(f"The Regex of the metric {_quoted(name)} is not a regular expression ({exc})") from None
        if compiled.groups < 1:
            raise UserError(f"The Regex of the metric {_quoted(name)} needs a group, (...), around the value")
        definitions.append(MetricDefinition(name, compiled))
    return tuple(definitions)


def _image(algorithm: dict) -> tuple[str | None, bool]:
    """(the image training runs in, None for this environment's ``train``; whether the request named the built-in's)."""
    image, note = builtin_image.standing_in(_image_name(algorithm.get("TrainingImage") or None), os.environ)
    if note:
        log.info("%s", note)
        return _image_name(image, f"${builtin_image.IMAGE_VARIABLE}"), True
    return image, False


def _image_name(image, where: str = "AlgorithmSpecification.TrainingImage") -> str | None:
    if image is not None and not isinstance(image, str):
        raise UserError(f"{where} must be an image name, not {type(image).__name__}")
    if image is None:
        return None
    image = _string(image, where, IMAGE_MAX)
    if image.startswith("-") or any(c.isspace() for c in image) or shown(image) != image:
        # the name is one argument of docker's command line, where a leading '-' would read as an option
        raise UserError(f"{where} {_quoted(image)} is not an image name")
    return image


def parse(raw: Any) -> JobRequest:
    if not isinstance(raw, dict):
        raise UserError(f"The request must be a JSON object (the fields of CreateTrainingJob), not {_json_type(raw)}")
    name = raw.get("TrainingJobName")
    if not isinstance(name, str) or not JOB_NAME.fullmatch(name):
        shown_name = _quoted(name) if isinstance(name, str) else _json_type(name)
        raise UserError(
            f"TrainingJobName {shown_name} is not a valid name: 1 to 63 letters, digits and hyphens, no hyphen first"
        )
    _ignore("", raw, HANDLED)
    algorithm = _dict(raw.get("AlgorithmSpecification"), "AlgorithmSpecification")
    image, builtin = _image(algorithm)
    _ignore("AlgorithmSpecification.", algorithm, {"TrainingInputMode", "TrainingImage", "MetricDefinitions"})
    default_mode = _choice(
        algorithm.get("TrainingInputMode") or "File", "AlgorithmSpecification.TrainingInputMode", INPUT_MODES
    )
    channels = _channels(raw, default_mode)
    output = _dict(raw.get("OutputDataConfig"), "OutputDataConfig")
    if not output.get("S3OutputPath"):
        raise UserError("OutputDataConfig.S3OutputPath is required: where model.tar.gz and output.tar.gz go")
    _ignore("OutputDataConfig.", output, {"S3OutputPath"})
    checkpoint = _dict(raw.get("CheckpointConfig"), "CheckpointConfig")
    _say_what_applies(raw, checkpoint)
    if checkpoint.get("LocalPath"):
        log.info("CheckpointConfig.LocalPath is the job folder's checkpoints/ on this machine")
    stopping = _dict(raw.get("StoppingCondition"), "StoppingCondition")
    _ignore("StoppingCondition.", stopping, {"MaxRuntimeInSeconds"})
    runtime = stopping.get("MaxRuntimeInSeconds")
    hyperparameters = _dict(raw.get("HyperParameters"), "HyperParameters")
    request = JobRequest(
        name=name,
        hyperparameters={str(k): str(v) for k, v in hyperparameters.items()},
        channels=channels,
        output_path=_uri(output["S3OutputPath"], "OutputDataConfig.S3OutputPath"),
        checkpoint_uri=_uri(checkpoint["S3Uri"], "CheckpointConfig.S3Uri") if checkpoint.get("S3Uri") else None,
        max_runtime_s=None
        if runtime is None
        else _integer(runtime, "StoppingCondition.MaxRuntimeInSeconds", MAX_RUNTIME),
        environment=_environment(raw),
        training_image=image,
        builtin=builtin,
        metric_definitions=_metric_definitions(algorithm, builtin),
    )
    request_schema.check(raw)  # after the checks above, whose sentences say more about the fields they know
    resources = _dict(raw.get("ResourceConfig"), "ResourceConfig")
    _ignore("ResourceConfig.", resources, {"InstanceCount"})
    return _with_instances(request, resources.get("InstanceCount", 1))


def _with_instances(request: JobRequest, count) -> JobRequest:
    """``ResourceConfig.InstanceCount`` hosts, each a process of this machine (``hosts``), in File mode."""
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_HOSTS:
        raise UserError(
            f"ResourceConfig.InstanceCount is {_quoted(count)}; a job run here has 1 to {MAX_HOSTS} instances, "
            "each a process of this machine"
        )
    if count > 1:
        problems = [
            (request.training_image, f"in TrainingImage {request.training_image}, which runs one container"),
            (any(c.is_pipe for c in request.channels), "with Pipe-mode channels; give them InputMode File"),
            (request.checkpoint_uri, "with CheckpointConfig, whose files each host would write"),
        ]
        for problem, what in problems:
            if problem:
                raise UserError(
                    f"ResourceConfig.InstanceCount is {count}, which a job run here does not support {what}"
                )
    for channel in request.channels:
        if channel.distribution == "ShardedByS3Key":
            log.info(
                "The '%s' channel is ShardedByS3Key: each of the %d host(s) gets its share of the objects",
                channel.name,
                count,
            )
    return dataclasses.replace(request, instance_count=count)


def load(path: Path) -> JobRequest:
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"The request {path} could not be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"The request {path} is not valid JSON ({exc})") from None
    return parse(raw)
