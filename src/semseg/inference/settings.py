"""The model server's settings, read from the environment in one place.

SageMaker's own variables come first (``SAGEMAKER_*``, as the AWS inference toolkits name them);
the ``SEMSEG_*`` ones are this server's additions. Each is documented in the README's serving
section; a malformed value is a configuration error explained in one sentence. Nothing else
reads the environment for a serving setting: the HTTP server's configuration, its app and the
engines all take a ``ServingSettings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_S = 60
DEFAULT_MAX_PAYLOAD_MB = 10  # what the built-in answers to /execution-parameters
UNLIMITED_PAYLOAD_MB = 100  # MaxPayloadInMB=0 asks for "no limit"; batch transform's own maximum is 100
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # 8000x8000; a 50000x50000 decompression bomb is refused
DEFAULT_ACCEPT = "image/png"
DEFAULT_CLIENT_TIMEOUT_S = 30  # a request not fully received this long after its first byte is cut off
# Sliding windows when an image's longer side is more than this many times the inference size; 0
# turns them off. bench/onnx_size_mapping.py: at 1.67x resize-and-pad was slightly better (mIoU
# +0.005), from 2x on sliding windows far better (+0.09 to +0.29).
DEFAULT_SLIDING_WINDOW_FACTOR = 1.75
# At most this many forward passes per image (a larger image is scaled down until it needs no more;
# a flipped window counts twice): a 24-megapixel JPEG took 29 s through HTTP with an int8 FCN at 520
# on a loaded 2-core machine (bench/serving.py), inside SageMaker's 60 s.
DEFAULT_MAX_WINDOWS = 24
WORKERS_VARIABLE = "SAGEMAKER_MODEL_SERVER_WORKERS"
# Set by the HTTP server in each worker process it starts (0 .. workers-1, reused by a replacement
# worker), never by a user: which GPU the worker takes.
WORKER_SLOT_VARIABLE = "SEMSEG_WORKER_SLOT"
# The model to serve, when it is not $SAGEMAKER_BASE_DIR/model (set by ``semseg serve --model DIR``).
MODEL_DIR_VARIABLE = "SEMSEG_MODEL_DIR"


@dataclass(frozen=True)
class ServingSettings:
    port: int = DEFAULT_PORT
    workers: int | None = None  # None: one per GPU, else one per CPU core (decided by the serve command)
    timeout_s: int = DEFAULT_TIMEOUT_S
    max_payload_mb: int = DEFAULT_MAX_PAYLOAD_MB
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    inference_size: int | None = None  # None: the model's base_size
    inference_threads: int | None = None  # None: the available cores shared among the workers
    client_timeout_s: int = DEFAULT_CLIENT_TIMEOUT_S
    default_accept: str = DEFAULT_ACCEPT
    worker_slot: int = 0
    force_fp32: bool = False  # serve model.onnx even where an int8 model.int8.onnx exists
    sliding_window_factor: float = DEFAULT_SLIDING_WINDOW_FACTOR
    max_windows: int = DEFAULT_MAX_WINDOWS
    flip: bool = False  # also run each image mirrored left-right and average the two
    model_dir: Path | None = None  # None: the /opt/ml tree's model directory

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb * 1024 * 1024


def _integer(environ: Mapping[str, str], name: str, default: int | None, low: int) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"The environment variable {name} is '{raw}'; it must be a whole number") from None
    if value < low:
        raise UserError(f"The environment variable {name} is {value}; it must be at least {low}")
    return value


def _number(environ: Mapping[str, str], name: str, default: float, low: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"The environment variable {name} is '{raw}'; it must be a number") from None
    if not value >= low:  # also refuses nan
        raise UserError(f"The environment variable {name} is {raw}; it must be at least {low:g}")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    raise UserError(f"The environment variable {name} is '{raw}'; it must be true or false")


def from_environment(environ: Mapping[str, str] | None = None) -> ServingSettings:
    env = os.environ if environ is None else environ
    payload_mb = _integer(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB, 0)
    return ServingSettings(
        port=_integer(env, "SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, 1),
        workers=_integer(env, WORKERS_VARIABLE, None, 1),
        timeout_s=_integer(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", DEFAULT_TIMEOUT_S, 1),
        max_payload_mb=payload_mb or UNLIMITED_PAYLOAD_MB,
        max_image_pixels=_integer(env, "SEMSEG_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, 1),
        inference_size=_integer(env, "SEMSEG_INFERENCE_SIZE", None, 8),
        inference_threads=_integer(env, "SEMSEG_INFERENCE_THREADS", None, 1),
        client_timeout_s=_integer(env, "SEMSEG_CLIENT_TIMEOUT", DEFAULT_CLIENT_TIMEOUT_S, 1),
        default_accept=env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "").strip() or DEFAULT_ACCEPT,
        worker_slot=_integer(env, WORKER_SLOT_VARIABLE, 0, 0),
        force_fp32=_boolean(env, "SEMSEG_FORCE_FP32", False),
        sliding_window_factor=_number(env, "SEMSEG_SLIDING_WINDOW_FACTOR", DEFAULT_SLIDING_WINDOW_FACTOR, 0),
        max_windows=_integer(env, "SEMSEG_MAX_WINDOWS", DEFAULT_MAX_WINDOWS, 1),
        flip=_boolean(env, "SEMSEG_FLIP", False),
        model_dir=Path(env[MODEL_DIR_VARIABLE]) if env.get(MODEL_DIR_VARIABLE, "").strip() else None,
    )
