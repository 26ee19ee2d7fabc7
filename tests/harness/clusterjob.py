"""Running several "hosts" of one training job as separate ``train`` processes on 127.0.0.1.

Each host has its own /opt/ml root and resourceconfig.json; ``SEMSEG_HOST_ADDRESSES`` maps the
host names to 127.0.0.1, and the job's ``_ps_port`` is a free port of this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from harness.trainjob import TRAIN, Job, make_tree
from semseg import cpu_threads

HOSTS = ("algo-1", "algo-2")


def make_cluster(base: Path, port: int, **hyperparameters) -> list[Path]:
    roots = []
    for host in HOSTS:
        root = make_tree(base / host, checkpoints=True, _ps_port=str(port), **hyperparameters)
        (root / "input" / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": list(HOSTS), "network_interface_name": "lo"})
        )
        roots.append(root)
    return roots


def start_host(root: Path, env: dict | None = None) -> subprocess.Popen:
    """One host's ``train``, with its share of this machine's cores (real hosts each have their own)."""
    addresses = ",".join(f"{host}=127.0.0.1" for host in HOSTS)
    threads = {cpu_threads.VARIABLE: str(cpu_threads.math_threads(len(HOSTS)))}
    return subprocess.Popen(
        [TRAIN],
        env={
            **os.environ,
            **threads,
            "SAGEMAKER_BASE_DIR": str(root),
            "SEMSEG_HOST_ADDRESSES": addresses,
            **(env or {}),
        },
        stdout=open(root / "train.log", "w"),
        stderr=subprocess.STDOUT,
    )


def finish(root: Path, process: subprocess.Popen, timeout: float) -> Job:
    """The host's job once it exits; a host still running after ``timeout`` is killed, failing the test."""
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        log = (root / "train.log").read_text()[-3000:]
        raise AssertionError(f"{root.name} did not exit within {timeout} s: {log}") from None
    return Job(root, code, (root / "train.log").read_text())
