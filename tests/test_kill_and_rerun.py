"""SIGKILL in the middle of the writes that matter, then a rerun: nothing half-written is ever taken
for whole, no process of the killed job lives on, and the rerun resumes or starts clean and finishes.

The short form of ``bench/kill_rerun.py`` (many kills at random moments beside CPU hogs)."""

from __future__ import annotations

import random

import pytest
from harness.killjob import make_kill_tree, run_killed_then_rerun

pytestmark = pytest.mark.slow  # every test here runs train


@pytest.mark.parametrize("moment", ["checkpoint", "model_file", "export"])
def test_a_job_killed_while_writing_is_rerun_cleanly(tmp_path, moment):
    root = make_kill_tree(tmp_path / "ml")
    outcome = run_killed_then_rerun(root, moment, random.Random(0))
    assert outcome.killed_after is not None, f"the job ended before its {moment} write was seen"
    assert outcome.leftover_processes == 0, "a process of the killed job outlived it"
    assert outcome.broken_model_files == [], outcome.broken_model_files
    assert outcome.rerun.returncode == 0, outcome.rerun.log[-3000:]
    assert "#metrics" in outcome.rerun.log
    leftovers = [p.name for d in ("model", "checkpoints") for p in (root / d).iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"the rerun left partial files: {leftovers}"
    if moment == "checkpoint":  # the half-written checkpoint is never the one resumed from
        assert outcome.resumed_from is None or ".tmp" not in outcome.resumed_from
