"""The ``train`` command: the SageMaker container contract around the training loop.

A ``UserError`` becomes one sentence in ``output/failure`` and exit code 1; anything else is an
internal error, logged with its traceback, summarised in the failure file, exit code 2. SIGTERM
stops training between iterations with exit code 143 (``exit_codes``). ``semseg train
--dataset`` (``local_train``) runs the same function in its own process.
"""

from __future__ import annotations

import logging
import os
import sys

from .. import cpu_threads, exit_codes, logs, sm_config
from ..errors import UserError, one_line
from .stop import STOP_DEADLINE_S, StopFlag, Stopped

log = logging.getLogger("semseg")


def train_main() -> int:
    """Run the training job described by the /opt/ml tree (``$SAGEMAKER_BASE_DIR``).

    With several hosts, ``distributed.start`` sets up the parameter server before mxnet is
    imported, and ``Cluster.finish`` ends the process so that every host ends together.
    """
    # before anything slow: a SIGTERM during start-up is noticed too
    stop = StopFlag().install(deadline=STOP_DEADLINE_S)
    logs.setup_logging()
    from . import distributed

    cluster, code, message = None, 0, ""
    try:
        threads = cpu_threads.set_math_threads()  # before mxnet is imported, by distributed.start or the loop
        log.info("MXNet computes on %s CPU thread(s) (%s)", threads, cpu_threads.VARIABLE)
        cluster = distributed.start()
        from .loop import train

        try:
            train(stop, cluster)
        except Stopped:
            log.warning("Received SIGTERM: training stopped before completion; model_best.params, if any, is kept")
            code = exit_codes.STOPPED
    except UserError as exc:
        log.error("%s", exc)
        sm_config.write_failure(str(exc))
        code, message = exit_codes.FAILED, str(exc)
    except Exception as exc:  # a bug of ours: full trace to the log, a short reason to SageMaker
        log.exception("Internal error")
        message = f"Internal error: {type(exc).__name__}: {one_line(exc)}"
        sm_config.write_failure(message)
        code = exit_codes.INTERNAL_ERROR
    if cluster is not None:
        cluster.finish(code, message)
    return _exit(code)


def _exit(code: int) -> int:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def train_command() -> None:
    """The ``train`` console script: the job, then an immediate exit with its code.

    Everything the job owes is written and flushed when ``train_main`` returns (its loader
    processes are already ended), so interpreter teardown has nothing left to do, and skipping
    it means no library finalizer or leftover thread can keep a finished job alive (and billed).
    """
    os._exit(train_main())
