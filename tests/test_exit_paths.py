"""Every way ``train`` ends, with loader processes, exits within seconds of its last write.

The short form of ``bench/exit_stress.py``: each ending once (early stopping, which ends the loop as
a normal end does, in ``make test-long``), beside one CPU hog so the timing is not that of an idle
machine. The long form (50 runs beside a hog per core) is in docs/performance.md.
"""

from __future__ import annotations

import random

import pytest
from harness.exitjob import Outcome, cpu_hogs, passed, run_one

pytestmark = pytest.mark.slow  # every test here runs train

BOUND_S = 10.0  # from the end marker (the #metrics line, the SIGTERM notice, the failure file) to exit
STOP_BOUND_S = 60.0  # from SIGTERM to exit, one training step and a checkpoint included, on a loaded machine


@pytest.fixture(scope="module")
def cpu_hog():
    with cpu_hogs(1):
        yield


def describe(outcome: Outcome) -> str:
    return (
        f"{outcome.scenario}: exit code {outcome.code}, {outcome.seconds_after_marker} s after its end marker, "
        f"{outcome.seconds_after_sigterm} s after SIGTERM, hung: {outcome.hung}"
    )


@pytest.mark.parametrize(
    "scenario, seed",
    [
        ("normal", 0),
        # the same end of the loop as a normal end, one epoch sooner; `make test-long` and the benchmark run it
        pytest.param("early_stopping", 0, marks=pytest.mark.long),
        ("loader_error", 0),
        ("sigterm", 3),
        ("sigterm", 11),
    ],
)
def test_train_exits_within_its_bound(scenario, seed, tmp_path, cpu_hog):
    outcome = run_one(scenario, tmp_path, random.Random(seed), hang=120, cap=600)
    assert passed(outcome, BOUND_S, STOP_BOUND_S), describe(outcome)
