"""A ``train`` job killed with SIGKILL at a chosen moment, then run again on the same /opt/ml tree.

The moments are the writes that must never be seen half-done: a checkpoint (its hidden temporary
directory appears), a model file (its hidden temporary file appears in ``model/``) and the ONNX
export (its temporary file appears), or a random time. After the kill no process of the job may be
left, every file in ``model/`` under its own name must be whole, and the rerun must resume from the
newest complete checkpoint (or start clean) and finish. Used by ``tests/test_kill_and_rerun.py``
and ``bench/kill_rerun.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness.trainjob import SEVERAL_EPOCHS, TRAIN, WITH_EXPORT, Job, require_training_marker
from semseg import paths
from semseg.sample_data import write_opt_ml_tree

MOMENTS = ("checkpoint", "model_file", "export", "random")
KILL_HYPERPARAMETERS = {**SEVERAL_EPOCHS, **WITH_EXPORT}  # a kill may come while the export is written


@dataclass
class KillOutcome:
    moment: str
    killed_after: float | None  # seconds from start; None: the job ended before the moment came
    leftover_processes: int
    broken_model_files: list[str]
    rerun: Job
    resumed_from: str | None  # the checkpoint the rerun resumed from, None if it started clean


def make_kill_tree(root: Path) -> Path:
    write_opt_ml_tree(root, train=8, validation=4, hyperparameters=KILL_HYPERPARAMETERS)
    (root / "checkpoints").mkdir(exist_ok=True)
    return root


def moment_arrived(root: Path, moment: str, deadline: float) -> bool:
    if moment == "checkpoint":
        return any(p.name.startswith(".") for p in (root / "checkpoints").iterdir())
    if moment == "model_file":
        return any(p.name.startswith(".") and ".params" in p.name for p in (root / "model").iterdir())
    if moment == "export":
        return any(p.name.startswith(".") and "onnx" in p.name for p in (root / "model").iterdir())
    return time.monotonic() >= deadline


def job_processes(root: Path) -> list[int]:
    """Processes whose environment names this tree (the job and any child it started)."""
    marker = f"SAGEMAKER_BASE_DIR={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def broken_model_files(model_dir: Path) -> list[str]:
    """Files of ``model/`` under their own names that are not whole."""
    import mxnet as mx
    import onnx

    broken = []
    for path in sorted(model_dir.iterdir()):
        if path.name.startswith("."):
            continue
        try:
            if path.name == paths.HYPERPARAMS_FILE:
                json.loads(path.read_text())
            elif path.suffix == ".onnx":
                onnx.checker.check_model(onnx.load(str(path)))
            else:
                mx.nd.load(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure to read back is a broken file
            broken.append(f"{path.name}: {exc}")
    return broken


def run_killed_then_rerun(root: Path, moment: str, rng: random.Random, timeout: float = 600) -> KillOutcome:
    require_training_marker()
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root)}
    start = time.monotonic()
    deadline = start + rng.uniform(2.0, 30.0)
    with open(root / "killed.log", "w") as log:
        process = subprocess.Popen([TRAIN], env=env, stdout=log, stderr=subprocess.STDOUT)
    killed_after = None
    while process.poll() is None and time.monotonic() - start < timeout:
        if moment_arrived(root, moment, deadline):
            process.kill()
            killed_after = time.monotonic() - start
            break
        time.sleep(0.005)
    process.wait()
    leftover_deadline = time.monotonic() + 10
    while job_processes(root) and time.monotonic() < leftover_deadline:
        time.sleep(0.1)
    leftover = job_processes(root)
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    broken = broken_model_files(root / "model")
    result = subprocess.run(
        [TRAIN], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    rerun = Job(root, result.returncode, result.stdout)
    resumed = rerun.lines(r"Resuming from checkpoint (\S+):")
    return KillOutcome(moment, killed_after, len(leftover), broken, rerun, resumed[0] if resumed else None)
