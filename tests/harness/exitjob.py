"""Short ``train`` jobs that must exit soon after their last write, whichever way they end.

Each job runs with loader processes (``_workers`` 2) on a small tree and checkpoints on, and ends
one of four ways: a normal end, early stopping, a user error raised inside a loader process (a
cut-off image met mid-epoch), or SIGTERM at a random moment from start-up to the last artifact.
Used by ``tests/test_exit_paths.py`` (a few runs) and ``bench/exit_stress.py`` (many, beside CPU hogs).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.trainjob import SEVERAL_EPOCHS, TRAIN, require_training_marker
from semseg.sample_data import write_opt_ml_tree

SCENARIOS = ("normal", "early_stopping", "loader_error", "sigterm")
EXPECTED_CODE = {"normal": 0, "early_stopping": 0, "loader_error": 1, "sigterm": (0, 143)}
END_MARKERS = ("#metrics ", "Received SIGTERM: training stopped before completion")
STRESS_HYPERPARAMETERS = {**SEVERAL_EPOCHS, "_logging_frequency": "1", "validation_mini_batch_size": "2"}


@dataclass
class Outcome:
    scenario: str
    code: int | None
    seconds_after_marker: float | None  # None: no marker was seen
    hung: bool
    total_seconds: float
    seconds_after_sigterm: float | None = None  # None: no SIGTERM was sent

    @property
    def right_code(self) -> bool:
        expected = EXPECTED_CODE[self.scenario]
        return self.code in expected if isinstance(expected, tuple) else self.code == expected


def make_job_tree(root: Path, scenario: str) -> Path:
    hyperparameters = dict(STRESS_HYPERPARAMETERS)
    if scenario == "early_stopping":
        hyperparameters.update(
            epochs="6",
            early_stopping="True",
            early_stopping_min_epochs="1",
            early_stopping_patience="1",
            early_stopping_tolerance="1.0",
        )
    write_opt_ml_tree(root, train=8, validation=4, hyperparameters=hyperparameters)
    (root / "checkpoints").mkdir(exist_ok=True)  # checkpoints on: SIGTERM then also writes one
    if scenario == "loader_error":  # an image whose header reads but whose data is cut off
        image = sorted((root / "input" / "data" / "train").iterdir())[3]
        data = image.read_bytes()
        image.write_bytes(data[: len(data) // 3])
    return root


def marker_seen(root: Path, log_path: Path) -> bool:
    if (root / "output" / "failure").exists():
        return True
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return any(marker in text for marker in END_MARKERS)


def run_one(
    scenario: str, workdir: Path, rng: random.Random, hang: float, cap: float, command: list[str] | None = None
) -> Outcome:
    """One job; SIGTERM (scenario ``sigterm``) at a random moment of its expected life."""
    require_training_marker()
    root = make_job_tree(workdir / "ml", scenario)
    log_path = workdir / "train.log"
    sigterm_at = rng.uniform(0.5, 25.0) if scenario == "sigterm" else None
    start = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command or [TRAIN],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "SAGEMAKER_BASE_DIR": str(root)},
        )
    marker_at = sent_at = None
    hung = False
    while process.poll() is None:
        now = time.monotonic()
        if sigterm_at is not None and sent_at is None and now - start >= sigterm_at:
            process.send_signal(signal.SIGTERM)
            sent_at = now
        if marker_at is None and marker_seen(root, log_path):
            marker_at = now
        if (
            (marker_at is not None and now - marker_at > hang)
            or (sent_at is not None and now - sent_at > hang)
            or now - start > cap
        ):
            hung = True
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.05)
    end = time.monotonic()
    if marker_at is None and marker_seen(root, log_path):
        marker_at = end
    return Outcome(
        scenario,
        None if hung else process.returncode,
        None if marker_at is None else end - marker_at,
        hung,
        end - start,
        None if sent_at is None else end - sent_at,
    )


def passed(outcome: Outcome, bound: float, stop_bound: float) -> bool:
    """The right code, within ``bound`` of the end marker and, after SIGTERM, within ``stop_bound`` of it."""
    after_sigterm = outcome.seconds_after_sigterm
    return (
        not outcome.hung
        and outcome.right_code
        and outcome.seconds_after_marker is not None
        and outcome.seconds_after_marker <= bound
        and (after_sigterm is None or after_sigterm <= stop_bound)
    )


@contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """``count`` busy processes for the duration, so that timing is not that of an idle machine."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
