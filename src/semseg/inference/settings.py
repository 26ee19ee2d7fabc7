"""The model server's settings, read from the environment in one place.

SageMaker's own variables come first (``SAGEMAKER_*``, as the AWS inference toolkits name them);
the ``SEMSEG_*`` ones are this server's additions. Each is documented in docs/serving.md
("Settings (environment)"); a malformed value is a configuration error explained in one sentence. Nothing else
reads the environment for a serving setting: the HTTP server's configuration, its app and the
engines all take a ``ServingSettings``.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..bounds import shown_value, whole_number
from ..errors import UserError

# Each numeric setting's default beside its bound: a value past the bound is refused at start-up in
# one sentence, instead of starting a server that crashes later (a client timeout of 1e20 s broke
# every connection in struct.pack; an inference size of 100000 asked for 112 GiB at warm-up).
DEFAULT_PORT = 8080
MIN_PORT, MAX_PORT = 1, 65535  # TCP's ports
# SageMaker's contract: the container answers on every interface. ``semseg serve`` sets LOCAL_HOST
# instead, so a model served on a laptop is not offered to its whole network.
HOST_VARIABLE = "SEMSEG_BIND_HOST"
DEFAULT_HOST = "0.0.0.0"
LOCAL_HOST = "127.0.0.1"
DEFAULT_TIMEOUT_S = 60
MAX_TIMEOUT_S = 3600  # batch transform's longest InvocationsTimeoutInSeconds (a real-time endpoint waits 60 s)
DEFAULT_MAX_PAYLOAD_MB = 10  # what the built-in answers to /execution-parameters
MAX_PAYLOAD_MB = 100  # SageMaker's largest MaxPayloadInMB; MaxPayloadInMB=0 asks for "no limit", which is this
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000  # 8000x8000; a 50000x50000 decompression bomb is refused
# 16000x16000: a worker decodes up to this many pixels at once, at up to 16 bytes a pixel (4 GB).
MAX_IMAGE_PIXELS_BOUND = 256_000_000
# The inference size S: forward memory grows with S^2 (100000 asked for 112 GiB); 2048 is 15 times
# the pixels of the default 520, and larger images are better served by sliding windows at S.
MIN_INFERENCE_SIZE, MAX_INFERENCE_SIZE = 8, 2048
MAX_INFERENCE_THREADS = 256  # above the 192 vCPUs of SageMaker's largest instances
DEFAULT_ACCEPT = "image/png"
DEFAULT_CLIENT_TIMEOUT_S = 30  # a request not fully received this long after its first byte is cut off
MAX_CLIENT_TIMEOUT_S = 3600  # an hour: 100 MB at 28 KB/s; also the kernel send/receive timeout of a socket
# Sliding windows when an image's longer side is more than this many times the inference size; 0
# turns them off. Just below 2x resize-and-pad scores as well, from 2x on sliding windows score far
# better (bench/onnx_size_mapping.py; the figures are in docs/performance.md).
DEFAULT_SLIDING_WINDOW_FACTOR = 1.75
# 100 already leaves images up to 100 S long (52 000 pixels at 520) to resize-and-pad; 0 turns windows off.
MAX_SLIDING_WINDOW_FACTOR = 100
# At most this many forward passes per image (a larger image is scaled down until it needs no more;
# a flipped window counts twice), so that the largest image is answered inside a real-time endpoint's
# 60 s even on a small CPU (measured: docs/performance.md, "A 24-megapixel JPEG through HTTP").
DEFAULT_MAX_WINDOWS = 24
# 256 windows take ten times the default's time, past what an endpoint (60 s) or most batch jobs wait.
MAX_WINDOWS_BOUND = 256
WORKERS_VARIABLE = "SAGEMAKER_MODEL_SERVER_WORKERS"
# Each worker loads its own copy of the model (its memory: docs/performance.md): 128
# covers one per GPU on any instance and one per core on all but the very largest CPU ones (where
# the default stops at 128 too), while a typo such as 1000 is refused instead of exhausting memory.
MAX_WORKERS = 128
# Set by the HTTP server in each worker process it starts (0 .. workers-1, reused by a replacement
# worker), never by a user: which GPU the worker takes.
WORKER_SLOT_VARIABLE = "SEMSEG_WORKER_SLOT"
# The model to serve, when it is not $SAGEMAKER_BASE_DIR/model (set by ``semseg serve --model DIR``).
MODEL_DIR_VARIABLE = "SEMSEG_MODEL_DIR"
# Models one worker holds at once when the model directory holds several (``repository``): each
# loaded model holds its engine's memory, so the budget bounds a worker's memory to this many models.
MAX_LOADED_MODELS_VARIABLE = "SEMSEG_MAX_LOADED_MODELS"
DEFAULT_MAX_LOADED_MODELS = 2  # two models side by side on the page without reloading either
MAX_LOADED_MODELS_BOUND = 64
DEFAULT_MODEL_VARIABLE = "SEMSEG_DEFAULT_MODEL"  # the model answering requests that name none
# The drift gauge compares the class mix of a worker's last this-many images with training's: a
# few minutes of traffic on a busy endpoint, long enough that one odd image barely moves it.
DEFAULT_DRIFT_WINDOW = 200
MAX_DRIFT_WINDOW = 100_000
# Seconds between the summary log lines of the server's figures (the only way to see them on
# SageMaker, which routes no /metrics); 0 turns them off.
DEFAULT_METRICS_LOG_INTERVAL_S = 60
MAX_METRICS_LOG_INTERVAL_S = 86_400
# A host name as RFC 1123 allows: dot-separated labels of letters, digits and inner hyphens.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


@dataclass(frozen=True)
class ServingSettings:
    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
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
    max_loaded_models: int = DEFAULT_MAX_LOADED_MODELS
    default_model: str | None = None  # None: the first model name in sorted order
    drift_window: int = DEFAULT_DRIFT_WINDOW
    metrics_log_interval_s: int = DEFAULT_METRICS_LOG_INTERVAL_S

    @property
    def max_payload_bytes(self) -> int:
        return self.max_payload_mb * 1024 * 1024

    @property
    def bind(self) -> str:
        """The address gunicorn listens on, ``host:port`` (an IPv6 host in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _integer(environ: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    raw = environ.get(name, "").strip()
    return whole_number(raw, f"The environment variable {name}", low, high) if raw else default


def _number(environ: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    rule = f"it must be a number from {low:g} to {high:g}"
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"The environment variable {name} is '{shown_value(raw)}'; {rule}") from None
    if not low <= value <= high:  # also refuses nan and inf
        raise UserError(f"The environment variable {name} is {shown_value(raw)}; {rule}")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    raise UserError(f"The environment variable {name} is '{shown_value(raw)}'; it must be true or false")


def checked_host(raw: str, what: str) -> str:
    """``raw`` if it is an IP address or a host name gunicorn can listen on; ``what`` names it if not."""
    try:
        ipaddress.ip_address(raw)
        return raw
    except ValueError:
        pass
    if _HOST_NAME.fullmatch(raw):
        return raw
    raise UserError(
        f"{what} is '{shown_value(raw)}'; it must be an IP address (such as 127.0.0.1 or ::1) or a host name"
    )


def _default_accept(environ: Mapping[str, str]) -> str:
    """The answer type for a request without Accept: one of the response types, in any case (as Accept is read)."""
    from .codecs import RESPONSE_TYPES  # here: codecs reaches this module through the predictor

    raw = environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "").strip()
    if not raw:
        return DEFAULT_ACCEPT
    if raw.lower() not in RESPONSE_TYPES:
        raise UserError(
            f"The environment variable SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT is '{shown_value(raw)}'; it must be "
            f"one of {', '.join(RESPONSE_TYPES)}"
        )
    return raw.lower()


def from_environment(environ: Mapping[str, str] | None = None) -> ServingSettings:
    """Every serving setting, each checked against its bounds: a bad one is a ``UserError`` sentence."""
    env = os.environ if environ is None else environ
    payload_mb = _integer(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB, 0, MAX_PAYLOAD_MB)
    host = env.get(HOST_VARIABLE, "").strip()
    return ServingSettings(
        port=_integer(env, "SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, MIN_PORT, MAX_PORT),
        host=checked_host(host, f"The environment variable {HOST_VARIABLE}") if host else DEFAULT_HOST,
        workers=_integer(env, WORKERS_VARIABLE, None, 1, MAX_WORKERS),
        timeout_s=_integer(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", DEFAULT_TIMEOUT_S, 1, MAX_TIMEOUT_S),
        max_payload_mb=payload_mb or MAX_PAYLOAD_MB,
        max_image_pixels=_integer(env, "SEMSEG_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, 1, MAX_IMAGE_PIXELS_BOUND),
        inference_size=_integer(env, "SEMSEG_INFERENCE_SIZE", None, MIN_INFERENCE_SIZE, MAX_INFERENCE_SIZE),
        inference_threads=_integer(env, "SEMSEG_INFERENCE_THREADS", None, 1, MAX_INFERENCE_THREADS),
        client_timeout_s=_integer(env, "SEMSEG_CLIENT_TIMEOUT", DEFAULT_CLIENT_TIMEOUT_S, 1, MAX_CLIENT_TIMEOUT_S),
        default_accept=_default_accept(env),
        worker_slot=_integer(env, WORKER_SLOT_VARIABLE, 0, 0, MAX_WORKERS),
        force_fp32=_boolean(env, "SEMSEG_FORCE_FP32", False),
        sliding_window_factor=_number(
            env, "SEMSEG_SLIDING_WINDOW_FACTOR", DEFAULT_SLIDING_WINDOW_FACTOR, 0, MAX_SLIDING_WINDOW_FACTOR
        ),
        max_windows=_integer(env, "SEMSEG_MAX_WINDOWS", DEFAULT_MAX_WINDOWS, 1, MAX_WINDOWS_BOUND),
        flip=_boolean(env, "SEMSEG_FLIP", False),
        model_dir=Path(env[MODEL_DIR_VARIABLE]) if env.get(MODEL_DIR_VARIABLE, "").strip() else None,
        max_loaded_models=_integer(
            env, MAX_LOADED_MODELS_VARIABLE, DEFAULT_MAX_LOADED_MODELS, 1, MAX_LOADED_MODELS_BOUND
        ),
        default_model=env.get(DEFAULT_MODEL_VARIABLE, "").strip() or None,
        drift_window=_integer(env, "SEMSEG_DRIFT_WINDOW", DEFAULT_DRIFT_WINDOW, 1, MAX_DRIFT_WINDOW),
        metrics_log_interval_s=_integer(
            env, "SEMSEG_METRICS_LOG_INTERVAL", DEFAULT_METRICS_LOG_INTERVAL_S, 0, MAX_METRICS_LOG_INTERVAL_S
        ),
    )
