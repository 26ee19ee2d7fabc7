"""Running the real ``train`` command on a fake /opt/ml tree, as SageMaker would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from semseg.logs import METRIC_REGEXES
from semseg.sample_data import write_opt_ml_tree

TRAIN = str(Path(sys.executable).parent / "train")

# Small enough for a CPU: one epoch of two iterations at crop 32.
TINY = {
    "crop_size": "32",
    "base_size": "48",
    "epochs": "1",
    "mini_batch_size": "2",
    "validation_mini_batch_size": "4",
    "num_training_samples": "4",
    "_workers": "0",
    "_int8": "False",  # the int8 copy costs half a minute a job; tests/test_quantize.py makes it
    "_onnx": "False",  # the export costs ~6 s a job; the tests of what reads it turn it on (WITH_EXPORT)
    "_native_validation": "False",  # about 2.5 s a job; the report tests and the test-subset jobs make it
}
WITH_EXPORT = {"_onnx": "True"}  # for a TINY job whose model.onnx a test reads
# What every finished job leaves in model/ (the ONNX export and int8 copy come on top, when made).
MODEL_FILES = {"hyperparams.json", "model_best.params", "model_algo-1"}
TWO_DEVICES = {"SEMSEG_CPU_CONTEXTS": "2"}  # two CPU contexts stand in for two GPUs
# SyncBatchNorm over CPU stand-ins is run by `make test-long` only: now and then one device's
# SyncBatchNorm waits at its barrier for good while the other's never becomes ready (seen in gdb).
# MXNet's CPU contexts share one pool of temporary workspace, where GPUs have one each, the likely
# link; the GPU path GluonCV trains with is not affected by it.
SYNCBN_ON_STAND_INS = pytest.mark.long
# Long enough to be stopped, killed or resumed in the middle: three epochs of four iterations, loader processes.
SEVERAL_EPOCHS = {**TINY, "epochs": "3", "_workers": "2", "num_training_samples": "8"}


@dataclass
class Job:
    root: Path
    returncode: int
    log: str

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def failure(self) -> str | None:
        path = self.root / "output" / "failure"
        return path.read_text().strip() if path.exists() else None

    def lines(self, pattern: str) -> list[str]:
        return re.findall(pattern, self.log)


def quality(log: str) -> dict[str, list[float]]:
    """Every value of each metric the README's MetricDefinitions extract from ``log``, in order."""
    return {name: [float(v) for v in re.findall(regex, log)] for name, regex in METRIC_REGEXES.items()}


def make_tree(root: Path, train: int = 6, validation: int = 4, checkpoints: bool = False, **hyperparameters) -> Path:
    """A TINY job's tree; without ``checkpoints`` it has no checkpoints/ folder, so the job writes none
    (each costs about 3 s; the tests of checkpoints, resuming and several hosts ask for them)."""
    root = write_opt_ml_tree(root, train=train, validation=validation, hyperparameters={**TINY, **hyperparameters})
    if not checkpoints:
        (root / "checkpoints").rmdir()
    return root


BARE_ENV = {"PATH": "/usr/bin:/bin"}  # little more than SageMaker gives a container
# The markers of the test running now (conftest sets them before its fixtures): tests that train are
# left out of `make test-fast` by their marker, so a helper that starts a training job checks for it.
RUNNING_TEST_MARKERS: set[str] = set()
TRAINING_MARKERS = {"slow", "long", "container"}


def require_training_marker(what: str = "train") -> None:
    """Under pytest, refuse to start ``what`` for a test not marked slow (or long, or container)."""
    if "PYTEST_CURRENT_TEST" in os.environ and not RUNNING_TEST_MARKERS & TRAINING_MARKERS:
        raise AssertionError(
            f"{os.environ['PYTEST_CURRENT_TEST'].split(' ')[0]} runs {what} but is not marked slow: "
            "add @pytest.mark.slow, so that make test-fast leaves it out"
        )


def start_train(root: Path, env: dict | None = None) -> subprocess.Popen:
    """``train`` started on ``root``, its log to be read line by line from ``stdout``; ``env``, when
    given, replaces the inherited environment."""
    require_training_marker()
    return subprocess.Popen(
        [TRAIN],
        env={**(os.environ if env is None else env), "SAGEMAKER_BASE_DIR": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_train(root: Path, timeout: float = 300, env: dict | None = None) -> Job:
    require_training_marker()
    result = subprocess.run(
        [TRAIN],
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(root), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return Job(root, result.returncode, result.stdout)
