"""Every gunicorn setting of the model server, in one place, derived from ``ServingSettings``.

gunicorn reads this module (``--config python:serve.gunicorn_conf``) in its master process.

Workers get a stable slot, 0 .. workers-1: a worker that dies is replaced in the slot it left, so
with one worker per GPU each GPU keeps exactly one worker (gunicorn's ``worker.age`` only grows,
and taking the GPU from it would put a replacement on a GPU another worker already uses).
"""

from __future__ import annotations

import os

from semseg.inference.settings import WORKER_SLOT_VARIABLE, from_environment

from . import metrics

GRACEFUL_TIMEOUT_S = 20  # plus the master's own exit, well inside SageMaker's 30 s
THREADS_PER_WORKER = 4  # one image in the network at a time; the others decode, encode, answer /ping
KEEP_ALIVE_S = 60
# Open connections per worker, each buffering at most one request of up to the payload limit.
WORKER_CONNECTIONS = 128

_settings = from_environment()

wsgi_app = "serve.app:create_app()"
bind = [_settings.bind]  # SEMSEG_BIND_HOST (default 0.0.0.0, as SageMaker expects) and the port
workers = _settings.workers or 1
worker_class = "serve.worker.BufferingWorker"  # gthread that reads whole requests before a thread sees them
threads = THREADS_PER_WORKER
worker_connections = WORKER_CONNECTIONS
timeout = _settings.timeout_s
graceful_timeout = GRACEFUL_TIMEOUT_S
keepalive = KEEP_ALIVE_S
control_socket_disable = True


def free_slot(used: set[int], count: int) -> int:
    """The lowest slot in 0 .. count-1 that no live worker holds (``count`` when all are held)."""
    return min(set(range(count + 1)) - used)


def pre_fork(server, worker):
    """In the master, before the fork: give the new worker the slot a dead one left free."""
    used = {getattr(other, "semseg_slot", -1) for other in server.WORKERS.values()}
    worker.semseg_slot = free_slot(used, server.num_workers)


def post_fork(server, worker):
    """In the new worker: publish its slot to ``ServingSettings`` before the app is loaded."""
    os.environ[WORKER_SLOT_VARIABLE] = str(worker.semseg_slot)


def child_exit(server, worker):
    """In the master, once a worker has exited: its live gauges (in flight, models, drift) stop counting."""
    metrics.worker_gone(worker.pid)


def on_exit(server):
    """The server's last step: the folder of the workers' figure files goes."""
    metrics.remove_own_multiprocess_dir()
