"""The /opt/ml layout of SageMaker containers, the single place that knows it.

The root is ``/opt/ml`` unless ``SAGEMAKER_BASE_DIR`` moves it (as the AWS training and inference
toolkits allow), which is how tests and local runs use a temporary tree. Every function reads the
environment when called, so a process can point somewhere else without re-importing.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_BASE_DIR = "/opt/ml"
HOST_MODEL_PREFIX = "model_"  # final weights are named model_<current_host>, e.g. model_algo-1
BEST_PARAMS = "model_best.params"
HYPERPARAMS_FILE = "hyperparams.json"


def base_dir() -> Path:
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE_DIR))


def config_dir() -> Path:
    return base_dir() / "input" / "config"


def hyperparameters_file() -> Path:
    return config_dir() / "hyperparameters.json"


def input_data_config_file() -> Path:
    return config_dir() / "inputdataconfig.json"


def resource_config_file() -> Path:
    return config_dir() / "resourceconfig.json"


def checkpoint_config_file() -> Path:
    return config_dir() / "checkpointconfig.json"


def data_dir() -> Path:
    return base_dir() / "input" / "data"


def channel_dir(channel: str) -> Path:
    return data_dir() / channel


def pipe_path(channel: str, epoch: int) -> Path:
    """The FIFO SageMaker creates for ``channel`` in Pipe mode, one per epoch."""
    return data_dir() / f"{channel}_{epoch}"


def model_dir() -> Path:
    return base_dir() / "model"


def output_dir() -> Path:
    return base_dir() / "output"


def output_data_dir() -> Path:
    return output_dir() / "data"


def failure_file() -> Path:
    return output_dir() / "failure"


def checkpoints_dir() -> Path:
    return base_dir() / "checkpoints"


def host_model_file(current_host: str) -> str:
    return HOST_MODEL_PREFIX + current_host
