"""``ResourceConfig.InstanceCount`` > 1: the job's hosts as processes of this machine.

Each host gets what a SageMaker instance gets: its own /opt/ml tree (``<workdir>/hosts/algo-<k>``),
its own ``resourceconfig.json`` naming every host, its own copy of the File-mode channels (or, for a
``ShardedByS3Key`` channel, its share of the objects) and its share of the cores. The host names
resolve to 127.0.0.1 (``SEMSEG_HOST_ADDRESSES``) and the parameter server listens on a free port
pair (``_ps_port``), so training takes exactly the path it takes on several instances. The first
host's output is the job's log and its model the job's model, as on SageMaker.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import cpu_threads
from ..train.distributed import HOST_ADDRESSES_ENV

MAX_HOSTS = 8  # several hosts share this machine's cores and memory: a few are a test, more a slowdown
HOSTS_FOLDER = "hosts"


@dataclass(frozen=True)
class Host:
    name: str  # algo-1, algo-2, ...
    rank: int
    root: Path  # this host's /opt/ml


def hosts_of(root: Path, count: int) -> list[Host]:
    """One host: the job folder itself; several: a folder each under ``hosts/``."""
    if count == 1:
        return [Host("algo-1", 0, root)]
    return [Host(f"algo-{k + 1}", k, root / HOSTS_FOLDER / f"algo-{k + 1}") for k in range(count)]


def resource_config(host: Host, hosts: list[Host]) -> dict:
    return {"current_host": host.name, "hosts": [h.name for h in hosts], "network_interface_name": "lo"}


def free_port_pair() -> int:
    """A port p such that p and p + 1 are free on 127.0.0.1 now (the scheduler's and the control channel's)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise OSError("no two consecutive free ports on 127.0.0.1")


def host_environment(host: Host, hosts: list[Host]) -> dict[str, str]:
    """What each host's ``train`` gets beyond the job's environment."""
    return {
        "SAGEMAKER_BASE_DIR": str(host.root),
        HOST_ADDRESSES_ENV: ",".join(f"{h.name}=127.0.0.1" for h in hosts),
        cpu_threads.VARIABLE: str(cpu_threads.math_threads(len(hosts))),
    }


class HostGroup:
    """Several hosts' ``train`` processes, driven like one ``subprocess.Popen``: ``poll`` is None while
    any runs, then the first host's exit code (or the first failure's); ``stdout`` is the first host's."""

    def __init__(self, processes: list[subprocess.Popen]):
        self.processes = processes
        self.stdout = processes[0].stdout

    def poll(self) -> int | None:
        codes = [process.poll() for process in self.processes]
        if any(code is None for code in codes):
            return None
        return next((code for code in codes if code), 0)

    def wait(self, timeout: float | None = None) -> int:
        for process in self.processes:
            process.wait(timeout)
        return self.poll()

    def terminate(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()

    def __enter__(self) -> HostGroup:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        for process in self.processes:
            process.wait()
            if process.stdout is not None:
                process.stdout.close()


def environ_for(request_environment: dict[str, str], host: Host, hosts: list[Host], job_name: str) -> dict[str, str]:
    return {
        **os.environ,
        **request_environment,
        **(host_environment(host, hosts) if len(hosts) > 1 else {"SAGEMAKER_BASE_DIR": str(host.root)}),
        "TRAINING_JOB_NAME": job_name,
        "PYTHONUNBUFFERED": "1",
    }
