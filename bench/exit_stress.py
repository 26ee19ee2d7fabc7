"""Exit stress: many short ``train`` jobs beside CPU hogs, each required to exit soon after its last write.

Every job runs with loader processes (``_workers`` 2) on a small tree and ends one of four ways:
a normal end, early stopping, a user error raised inside a loader process (a cut-off image met
mid-epoch), or SIGTERM at a random moment from start-up to the last artifact. Hogs (busy
processes, one per core by default) make the timing vary from run to run. A job passes when it
exits with the expected code within ``--bound`` seconds of its end marker (the ``#metrics`` line,
the SIGTERM notice or the failure file); a job still alive ``--hang`` seconds after its marker, or
after ``--cap`` seconds in all, is counted as hung and killed with its process group.

    .venv/bin/python bench/exit_stress.py --runs 50 --parallel 2 --hogs 2

prints one line per run and a table per scenario: runs, exits within bound, hangs, wrong codes,
slowest exit after the marker. The suite runs a short form (``tests/test_exit_paths.py``).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness.exitjob import SCENARIOS, Outcome, cpu_hogs, passed, run_one  # noqa: E402
from harness.trainjob import TRAIN  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--bound", type=float, default=10.0, help="seconds from end marker to exit")
    parser.add_argument("--stop-bound", type=float, default=30.0, help="seconds from SIGTERM to exit")
    parser.add_argument("--hang", type=float, default=60.0, help="seconds after the marker counted as a hang")
    parser.add_argument("--cap", type=float, default=600.0, help="seconds a run may take in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", default=TRAIN, help="the command to run (default: this venv's train)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    plan = [SCENARIOS[i % len(SCENARIOS)] for i in range(args.runs)]
    seeds = [rng.randrange(2**31) for _ in plan]
    print(
        f"{args.runs} runs, {args.parallel} at a time, {args.hogs} CPU hogs, {os.cpu_count()} cores; "
        f"bound {args.bound:g} s after the end marker",
        flush=True,
    )

    def one(i: int) -> Outcome:
        with tempfile.TemporaryDirectory(prefix="exit-stress-") as scratch:
            outcome = run_one(plan[i], Path(scratch), random.Random(seeds[i]), args.hang, args.cap, args.train.split())
        after = "-" if outcome.seconds_after_marker is None else f"{outcome.seconds_after_marker:.1f}"
        sigterm = outcome.seconds_after_sigterm
        sigterm = "" if sigterm is None else f", {sigterm:.1f} s after SIGTERM"
        print(
            f"run {i:3d} {outcome.scenario:15s} code {outcome.code!s:5s} exit {after:>6s} s after marker, "
            f"{outcome.total_seconds:6.1f} s in all"
            f"{sigterm}"
            f"{'  HUNG' if outcome.hung else ''}"
            f"{'' if passed(outcome, args.bound, args.stop_bound) else '  FAIL'}",
            flush=True,
        )
        return outcome

    with cpu_hogs(args.hogs), ThreadPoolExecutor(args.parallel) as pool:
        outcomes = list(pool.map(one, range(args.runs)))
    print()
    print(f"{'scenario':15s} {'runs':>5s} {'in bound':>9s} {'hung':>5s} {'bad code':>9s} {'slowest exit (s)':>17s}")
    for scenario in (*SCENARIOS, "all"):
        chosen = [o for o in outcomes if scenario in ("all", o.scenario)]
        exits = [o.seconds_after_marker for o in chosen if o.seconds_after_marker is not None and not o.hung]
        print(
            f"{scenario:15s} {len(chosen):5d} {sum(passed(o, args.bound, args.stop_bound) for o in chosen):9d} "
            f"{sum(o.hung for o in chosen):5d} {sum(not o.hung and not o.right_code for o in chosen):9d} "
            f"{max(exits) if exits else float('nan'):17.1f}"
        )
    return 0 if all(passed(o, args.bound, args.stop_bound) for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
