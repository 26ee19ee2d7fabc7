"""Kill and rerun: ``train`` jobs SIGKILLed mid-write (or at random), then run again, beside CPU hogs.

Each run kills a job at one of the moments of ``tests/killjob.py`` (a checkpoint being written, a
model file being written, the ONNX export, or a random time) and reruns it on the same tree.

    .venv/bin/python bench/kill_rerun.py --runs 20 --hogs 2

prints one line per run and a table per moment: runs, kills that met their moment, processes left
behind by the killed job, files of model/ found broken, reruns that finished, reruns that resumed
from a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

from harness.exitjob import cpu_hogs  # noqa: E402
from harness.killjob import MOMENTS, KillOutcome, make_kill_tree, run_killed_then_rerun  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"{args.runs} kill-and-rerun runs, {args.hogs} CPU hogs, {os.cpu_count()} cores", flush=True)
    outcomes: list[KillOutcome] = []
    with cpu_hogs(args.hogs):
        for i in range(args.runs):
            moment = MOMENTS[i % len(MOMENTS)]
            with tempfile.TemporaryDirectory(prefix="kill-rerun-") as scratch:
                outcome = run_killed_then_rerun(make_kill_tree(Path(scratch) / "ml"), moment, rng)
            outcomes.append(outcome)
            killed = "not reached" if outcome.killed_after is None else f"killed at {outcome.killed_after:5.1f} s"
            print(
                f"run {i:3d} {moment:11s} {killed}, {outcome.leftover_processes} left, "
                f"{len(outcome.broken_model_files)} broken, rerun exit {outcome.rerun.returncode}, "
                f"resumed from {outcome.resumed_from or '-'}",
                flush=True,
            )
    print()
    print(f"{'moment':11s} {'runs':>5s} {'killed':>7s} {'left':>5s} {'broken':>7s} {'rerun ok':>9s} {'resumed':>8s}")
    for moment in (*MOMENTS, "all"):
        chosen = [o for o in outcomes if moment in ("all", o.moment)]
        print(
            f"{moment:11s} {len(chosen):5d} {sum(o.killed_after is not None for o in chosen):7d} "
            f"{sum(o.leftover_processes for o in chosen):5d} {sum(len(o.broken_model_files) for o in chosen):7d} "
            f"{sum(o.rerun.returncode == 0 for o in chosen):9d} {sum(o.resumed_from is not None for o in chosen):8d}"
        )
    good = all(o.leftover_processes == 0 and not o.broken_model_files and o.rerun.returncode == 0 for o in outcomes)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
