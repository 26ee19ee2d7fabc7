"""Per-worker training throughput: one host alone vs. two hosts on MXNet's parameter server.

Method: the real ``train`` command on synthetic File-mode data (semseg.sample_data), FCN ResNet-50
with random weights, ``--crop`` crops, ``--batch`` images per worker per iteration, ``--steps``
iterations per epoch, two epochs. The figure is the ``#throughput_metric ... train throughput``
line of the second epoch (this worker's images/s; the first epoch warms up). Two hosts run as two
``train`` processes on 127.0.0.1 (``SEMSEG_HOST_ADDRESSES``), each with its own /opt/ml tree, a
server, and (first host) the scheduler, with a global batch of 2 x ``--batch``.

Both workers share this machine's cores, so the table also shows one host limited to the same
number of threads per worker: that row isolates the cost of the parameter server (gradient sums
over TCP, the per-iteration stop vote) from the cost of sharing the CPU.

    .venv/bin/python bench/distributed.py [--steps 4] [--crop 64] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.ports import free_port  # noqa: E402

TRAIN = str(Path(sys.executable).parent / "train")
HOSTS = ("algo-1", "algo-2")
THROUGHPUT = r"#throughput_metric\. host: \S+, epoch: 1, train throughput: ([0-9.e+-]+) samples/sec"


def tree(root: Path, hosts: list[str], host: str, args, port: int) -> Path:
    from semseg.sample_data import write_opt_ml_tree

    batch = args.batch * len(hosts)
    write_opt_ml_tree(
        root,
        train=2 * args.steps * batch,
        validation=2,
        hyperparameters={
            "crop_size": args.crop,
            "base_size": args.crop * 3 // 2,
            "epochs": 2,
            "mini_batch_size": batch,
            "validation_mini_batch_size": 2,
            "num_training_samples": args.steps * batch,
            "_workers": 0,
            "_logging_frequency": 1000,
            "_ps_port": port,
        },
    )
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "lo"})
    )
    return root


def run_hosts(base: Path, hosts: list[str], args, threads: int | None) -> list[float]:
    port = free_port(2)
    env = {**os.environ, "SEMSEG_HOST_ADDRESSES": ",".join(f"{h}=127.0.0.1" for h in hosts)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    processes = []
    for host in hosts:
        root = tree(base / host, hosts, host, args, port)
        processes.append(
            subprocess.Popen(
                [TRAIN],
                env={**env, "SAGEMAKER_BASE_DIR": str(root)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    figures = []
    for process in processes:
        log = process.communicate()[0]
        if process.returncode != 0:
            raise SystemExit(f"train failed ({process.returncode}):\n{log[-3000:]}")
        figures.append(float(re.findall(THROUGHPUT, log)[-1]))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    from semseg import cpu_threads

    cores = os.cpu_count() or 1
    per_worker = cpu_threads.math_threads(len(HOSTS))  # each host's share, as tests/clusterjob.py gives it
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        one = run_hosts(base / "one", ["algo-1"], args, None)
        one_limited = run_hosts(base / "one-limited", ["algo-1"], args, per_worker)
        two = run_hosts(base / "two", list(HOSTS), args, per_worker)
    print(
        f"Machine: {platform.processor() or platform.machine()}, {cores} cores; FCN ResNet-50, crop {args.crop}, "
        f"{args.batch} images per worker per iteration, {args.steps} iterations, CPU"
    )
    print(f"{'configuration':<44}{'threads/worker':>15}{'images/s per worker':>21}{'ratio':>8}")
    rows = [("one host (dist off)", "all", one[0]), ("one host (dist off)", str(per_worker), one_limited[0])]
    rows += [(f"two hosts, dist_sync: {host}", str(per_worker), figure) for host, figure in zip(HOSTS, two)]
    for name, threads, figure in rows:
        print(f"{name:<44}{threads:>15}{figure:>21.3f}{figure / one_limited[0]:>8.2f}")
    print(
        f"per-worker ratio, two hosts / one host at {per_worker} thread(s) per worker: "
        f"{sum(two) / len(two) / one_limited[0]:.2f}; two hosts / one host with every core: "
        f"{sum(two) / len(two) / one[0]:.2f}"
    )


if __name__ == "__main__":
    main()
