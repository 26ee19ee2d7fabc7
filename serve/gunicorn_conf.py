"""gunicorn hooks. The settings themselves come from the environment through ``semseg.server``,
which passes them on gunicorn's command line."""


def post_fork(server, worker):
    """Number the workers, so that each takes its own GPU when there are several."""
    import os

    os.environ["SEMSEG_WORKER_INDEX"] = str(worker.age - 1)
