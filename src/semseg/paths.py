"""The /opt/ml layout of SageMaker containers, the single place that knows it.

The root is ``/opt/ml`` unless ``SAGEMAKER_BASE_DIR`` moves it (as the AWS training and inference
toolkits allow), which is how tests and local runs use a temporary tree. Every function reads the
environment when called, so a process can point somewhere else without re-importing; those that
take ``base`` lay out another root (``sample_data`` writes trees for other processes to run on).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UserError
from .names import relative_path, shown

DEFAULT_BASE_DIR = "/opt/ml"
HOST_MODEL_PREFIX = "model_"  # final weights are named model_<current_host>, e.g. model_algo-1
BEST_PARAMS = "model_best.params"
HYPERPARAMS_FILE = "hyperparams.json"
# The training masks' pixel count per class, beside the weights: what the server's drift gauge
# compares the predicted class mix with.
CLASS_PIXELS_FILE = "class_pixels.json"
DATASET_CHANNEL = "dataset"  # one dataset zip (CVAT or platform layout) instead of the four File-mode channels
MODEL_CHANNEL = "model"  # a model to continue from (incremental training): its model.tar.gz or its files
# CreateTrainingJob's ChannelName, as botocore's SageMaker service model gives it: this pattern, 1 to 64 characters.
CHANNEL_NAME = re.compile(r"[A-Za-z0-9\.\-_]+")
CHANNEL_NAME_MAX = 64


def check_channel_name(name: object) -> str:
    """``name`` if SageMaker takes it as a channel name and it names one folder of input/data; else one sentence.

    Channel names come from a request and from inputdataconfig.json, and each becomes a folder or a
    FIFO here, so every path made of one is made through this check. The pattern admits ``.`` and
    ``..``, which name no folder of their own; ``names.relative_path`` refuses those.
    """
    if not isinstance(name, str):
        raise UserError(f"A ChannelName must be a string, not {type(name).__name__}")
    if len(name) > CHANNEL_NAME_MAX or not CHANNEL_NAME.fullmatch(name):
        quoted = shown(name if len(name) <= CHANNEL_NAME_MAX else name[:CHANNEL_NAME_MAX] + "...")
        raise UserError(
            f"The ChannelName '{quoted}' is not a valid channel name: 1 to {CHANNEL_NAME_MAX} letters, digits, "
            "'.', '-' and '_'"
        )
    relative_path(name, "ChannelName")
    return name


def base_dir() -> Path:
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE_DIR))


def _root(base: str | Path | None) -> Path:
    return base_dir() if base is None else Path(base)


def config_dir(base: str | Path | None = None) -> Path:
    return _root(base) / "input" / "config"


def hyperparameters_file(base: str | Path | None = None) -> Path:
    return config_dir(base) / "hyperparameters.json"


def input_data_config_file(base: str | Path | None = None) -> Path:
    return config_dir(base) / "inputdataconfig.json"


def resource_config_file(base: str | Path | None = None) -> Path:
    return config_dir(base) / "resourceconfig.json"


def checkpoint_config_file(base: str | Path | None = None) -> Path:
    return config_dir(base) / "checkpointconfig.json"


def data_dir(base: str | Path | None = None) -> Path:
    return _root(base) / "input" / "data"


def channel_dir(channel: str, base: str | Path | None = None) -> Path:
    return data_dir(base) / check_channel_name(channel)


def prepared_dataset_dir(base: str | Path | None = None) -> Path:
    """Where the ``dataset`` channel is turned into the four File-mode directories (``<split>``,
    ``<split>_annotation``): inside the job's own tree, on the volume that holds its input, and not
    under ``input/data``, where a directory would read as one more channel."""
    return _root(base) / "input" / "prepared"


def pipe_name(channel: str, epoch: int | str) -> str:
    """The name of the FIFO SageMaker creates for ``channel`` in Pipe mode, one per epoch
    (``epoch="<epoch>"`` names them all, for messages)."""
    return f"{check_channel_name(channel)}_{epoch}"


def pipe_path(channel: str, epoch: int | str) -> Path:
    return data_dir() / pipe_name(channel, epoch)


def model_dir(base: str | Path | None = None) -> Path:
    return _root(base) / "model"


def output_dir(base: str | Path | None = None) -> Path:
    return _root(base) / "output"


def output_data_dir(base: str | Path | None = None) -> Path:
    return output_dir(base) / "data"


def failure_file() -> Path:
    return output_dir() / "failure"


def checkpoints_dir(base: str | Path | None = None) -> Path:
    return _root(base) / "checkpoints"


def host_model_file(current_host: str) -> str:
    return HOST_MODEL_PREFIX + current_host
