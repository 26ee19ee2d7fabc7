"""The ``serve`` command: gunicorn, configured by ``serve.gunicorn_conf``, in front of the Flask app.

gunicorn replaces this process (``exec``), so SageMaker's SIGTERM reaches its master directly:
the master stops accepting, lets requests in flight finish for up to its graceful timeout and
exits, inside the 30 seconds SageMaker waits before SIGKILL.

Before anything slow, it checks every setting the server will read (``checked_settings``): a bad
one ends the command with exit code 1 and its one sentence on stderr. Then it does the one thing
the gunicorn configuration cannot: it counts the GPUs (importing MXNet here, in a process that exec
replaces, so the workers initialise CUDA themselves) to choose the worker count, and passes it on in
``SAGEMAKER_MODEL_SERVER_WORKERS``. On the CPU each worker's math library gets its share of the
cores (``semseg.cpu_threads``) so workers do not fight over them.
"""

from __future__ import annotations

import logging
import os
import sys

from semseg import cpu_threads, exit_codes, logs
from semseg.archives import max_extracted_bytes
from semseg.errors import UserError
from semseg.inference.settings import MAX_WORKERS, WORKERS_VARIABLE, ServingSettings, from_environment

from . import metrics

log = logging.getLogger("semseg")

# One worker per core, each with one ONNX Runtime thread: more throughput than one worker on every
# core, and as much as oversubscribing the cores with more workers at a fraction of the memory
# (bench/serving.py; the figures are in docs/performance.md).
CPU_CORES_PER_WORKER = 1


def count_gpus() -> int:
    import mxnet as mx

    return mx.context.num_gpus()


def default_workers(gpus: int, cpus: int) -> int:
    return min(MAX_WORKERS, gpus if gpus else max(1, cpus // CPU_CORES_PER_WORKER))


def gunicorn_argv() -> list[str]:
    """Every setting is in the configuration module; the command line only names it."""
    return [sys.executable, "-m", "gunicorn", "--config", "python:serve.gunicorn_conf"]


def fetch_model(host: str, port: int) -> bool:
    """Outside SageMaker, the model named by SEMSEG_MODEL_URI into an empty model directory (``model_fetch``)."""
    from semseg import paths

    from . import model_fetch

    uri = model_fetch.wanted(paths.model_dir())
    if uri:
        try:
            model_fetch.fetch_while_answering_503(uri, paths.model_dir(), host, port)
        except UserError as exc:
            log.error("%s", exc)
            return False
    return True


def checked_settings() -> ServingSettings:
    """Every setting the server will read, checked before anything slow starts (MXNet, a worker, a
    model): a bad one ends the command with its sentence, never a worker's traceback later."""
    settings = from_environment()
    cpu_threads.check_user_value()  # before count_gpus imports mxnet, which aborts on a bad value
    max_extracted_bytes()  # read by each worker that unpacks a model.tar.gz
    return settings


def main() -> int:
    """Exec gunicorn with the settings of the environment; returns only on a configuration error."""
    logs.setup_logging()
    try:
        settings = checked_settings()
    except UserError as exc:
        print(f"serve: {exc}", file=sys.stderr, flush=True)
        return exit_codes.FAILED
    if not fetch_model(settings.host, settings.port):
        return exit_codes.FAILED
    gpus = count_gpus()
    cpus = cpu_threads.usable_cpu_count()
    workers = settings.workers or default_workers(gpus, cpus)
    os.environ[WORKERS_VARIABLE] = str(workers)  # read back by gunicorn_conf and the app
    metrics.fresh_multiprocess_dir()  # before gunicorn and its workers import prometheus_client
    if not gpus:
        cpu_threads.set_math_threads(workers)
    log.info(
        "Starting the model server on %s with %d worker(s) on %s",
        settings.bind,
        workers,
        f"{gpus} GPU(s)" if gpus else f"{cpus} CPU core(s)",
    )
    sys.stdout.flush()
    argv = gunicorn_argv()
    os.execv(argv[0], argv)
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
