"""Reading the three SageMaker configuration files and writing the failure file.

``hyperparameters.json``, ``inputdataconfig.json`` and ``resourceconfig.json`` are parsed
leniently: a missing file means "nothing configured" (a plain ``docker run`` has no
inputdataconfig), unknown keys are ignored. A file that exists but is not JSON is a user error.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .errors import UserError
from .names import shown

log = logging.getLogger(__name__)

FAILURE_LIMIT = 1024  # SageMaker shows the first 1024 characters as FailureReason


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"The configuration file {path} is not valid JSON ({exc})") from None


def read_hyperparameters() -> dict[str, Any]:
    data = _read_json(paths.hyperparameters_file(), {})
    if not isinstance(data, dict):
        raise UserError(f"The configuration file {paths.hyperparameters_file()} must hold a JSON object")
    return data


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    input_mode: str = "File"
    content_type: str | None = None
    record_wrapper: str = "None"

    @property
    def is_pipe(self) -> bool:
        return self.input_mode == "Pipe"


def read_input_data_config() -> dict[str, ChannelConfig]:
    """Channel settings by name. Without the file, every directory under input/data is File mode."""
    data = _read_json(paths.input_data_config_file(), None)
    if data is None:
        return {name: ChannelConfig(name) for name in _channel_folders()}
    if not isinstance(data, dict):
        raise UserError(f"The configuration file {paths.input_data_config_file()} must hold a JSON object")
    channels = {}
    for name, cfg in data.items():
        _check_listed_channel(name)
        cfg = cfg if isinstance(cfg, dict) else {}
        channels[name] = ChannelConfig(
            name=name,
            input_mode=cfg.get("TrainingInputMode", "File"),
            content_type=cfg.get("ContentType"),
            record_wrapper=cfg.get("RecordWrapperType", "None"),
        )
    return channels


def _check_listed_channel(name: str) -> None:
    """A channel name of inputdataconfig.json becomes a folder or FIFO path: one SageMaker never writes is refused."""
    try:
        paths.check_channel_name(name)
    except UserError as exc:
        reason = str(exc)
        raise UserError(
            f"The configuration file {paths.input_data_config_file()} is not one SageMaker writes: "
            f"{reason[:1].lower()}{reason[1:]}"
        ) from None


def _channel_folders() -> list[str]:
    """The folders of input/data that can be channels (a plain ``docker run`` has no inputdataconfig.json)."""
    root = paths.data_dir()
    folders = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    channels = []
    for name in folders:
        try:
            channels.append(paths.check_channel_name(name))
        except UserError as exc:
            log.info("The folder %s of %s is not a channel: %s", shown(name), root, exc)
    return channels


@dataclass(frozen=True)
class ResourceConfig:
    current_host: str = "algo-1"
    hosts: list[str] = field(default_factory=lambda: ["algo-1"])


def read_resource_config() -> ResourceConfig:
    data = _read_json(paths.resource_config_file(), {})
    if not isinstance(data, dict):
        data = {}
    host = data.get("current_host") or "algo-1"
    hosts = data.get("hosts") or [host]
    return ResourceConfig(
        current_host=str(host),
        hosts=sorted(str(h) for h in hosts),
    )


def write_config_files(
    base: Path,
    hyperparameters: dict[str, str],
    input_data_config: dict[str, dict],
    resource_config: dict[str, Any],
    checkpoint_config: dict[str, str] | None = None,
) -> None:
    """Write the configuration files SageMaker gives a job under ``base`` (``semseg job`` plays the platform)."""
    files = {
        paths.hyperparameters_file(base): hyperparameters,
        paths.input_data_config_file(base): input_data_config,
        paths.resource_config_file(base): resource_config,
    }
    if checkpoint_config is not None:
        files[paths.checkpoint_config_file(base)] = checkpoint_config
    else:
        paths.checkpoint_config_file(base).unlink(missing_ok=True)
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")


def write_failure(message: str) -> None:
    """Write ``message`` on one line where SageMaker reads FailureReason; the most useful text goes first.

    A failure file that cannot be written (the disk that failed the job is full) is logged, not
    raised: the exit code still tells SageMaker the job failed.
    """
    path = paths.failure_file()
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    tmp = path.with_name(f".failure.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(line[:FAILURE_LIMIT] + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        log.error("The failure file %s could not be written (%s)", path, exc)
