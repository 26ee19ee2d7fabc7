"""The ``serve`` command: gunicorn in front of the Flask app of the ``serve`` package.

gunicorn replaces this process (``exec``), so SageMaker's SIGTERM reaches its master directly:
the master stops accepting, lets requests in flight finish for up to ``GRACEFUL_TIMEOUT_S`` and
exits, inside the 30 seconds SageMaker waits before SIGKILL.

Workers are ``gthread`` workers: a worker busy with a large image still answers ``/ping`` on
another thread (SageMaker's health check gives up after 2 seconds), while the forward pass itself
runs one image at a time per worker. The worker count is ``SAGEMAKER_MODEL_SERVER_WORKERS``, else
one per GPU, else one per ``CPU_CORES_PER_WORKER`` cores; on the CPU each worker's math library
gets its share of the cores (``OMP_NUM_THREADS``) so workers do not fight over them.
"""

from __future__ import annotations

import logging
import os
import sys

from . import logs
from .errors import UserError
from .inference.settings import ServingSettings, from_environment

log = logging.getLogger("semseg")

GRACEFUL_TIMEOUT_S = 20  # plus the master's own exit, well inside SageMaker's 30 s
THREADS_PER_WORKER = 4  # one image in the network at a time; the others decode, encode, answer /ping
KEEP_ALIVE_S = 60
CPU_CORES_PER_WORKER = 4


def count_gpus() -> int:
    import mxnet as mx  # only in this process, which exec replaces: the workers initialise CUDA themselves

    return mx.context.num_gpus()


def default_workers(gpus: int, cpus: int) -> int:
    return gpus if gpus else max(1, cpus // CPU_CORES_PER_WORKER)


def gunicorn_argv(settings: ServingSettings, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:serve.gunicorn_conf",
        "--no-control-socket",
        "--bind",
        f"0.0.0.0:{settings.port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(THREADS_PER_WORKER),
        "--timeout",
        str(settings.timeout_s),
        "--graceful-timeout",
        str(GRACEFUL_TIMEOUT_S),
        "--keep-alive",
        str(KEEP_ALIVE_S),
        "serve.app:create_app()",
    ]


def run_server() -> int:
    """Exec gunicorn with the settings of the environment; returns only on a configuration error."""
    logs.setup_logging()
    try:
        settings = from_environment()
    except UserError as exc:
        log.error("%s", exc)
        return 1
    gpus = count_gpus()
    cpus = os.cpu_count() or 1
    workers = settings.workers or default_workers(gpus, cpus)
    os.environ["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)  # the app reports it to batch transform
    if not gpus:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cpus // workers)))
    log.info(
        "Starting the model server on port %d with %d worker(s) on %s",
        settings.port,
        workers,
        f"{gpus} GPU(s)" if gpus else f"{cpus} CPU core(s)",
    )
    sys.stdout.flush()
    argv = gunicorn_argv(settings, workers)
    os.execv(argv[0], argv)
    return 0  # not reached: exec replaced this process
