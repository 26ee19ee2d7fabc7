"""Driving the docker client from tests: containers run the way SageMaker runs them (host
network, the /opt/ml tree or the model as a volume), and removed when the test is done."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = Path(__file__).with_name("engine.sh")
IMAGE = "semseg:test-cpu"
ENGINE_SOCKET = "unix:///var/tmp/docker/docker.sock"


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Run the docker client; output is captured as text."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


class Containers:
    """Starts containers on the host network and removes them all when the test ends."""

    def __init__(self, image: str):
        self.image = image
        self.ids: list[str] = []

    def run(
        self, *command: str, ml: Path | None = None, env: dict | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """``docker run`` to completion; returns the exit code and the combined output."""
        name = f"semseg-test-{os.getpid()}-{len(self.ids)}"
        self.ids.append(name)
        args = ["run", "--name", name, "--network", "host", *self._options(ml, env), self.image, *command]
        result = subprocess.run(
            ["docker", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )
        return result

    def start(self, *command: str, ml: Path | None = None, model: Path | None = None, env: dict | None = None) -> str:
        """``docker run -d``; returns the container's id."""
        volumes = ["-v", f"{model}:/opt/ml/model"] if model else []
        args = ["run", "-d", "--network", "host", *volumes, *self._options(ml, env), self.image, *command]
        container = docker(*args).stdout.strip()
        self.ids.append(container)
        return container

    def wait_for_line(self, container: str, text: str, timeout: float = 300) -> None:
        """Follow the container's log until a line contains ``text``."""
        follow = subprocess.Popen(
            ["docker", "logs", "-f", container], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + timeout
        try:
            for line in follow.stdout:
                if text in line:
                    return
                if time.monotonic() > deadline:
                    break
            raise AssertionError(f"{text!r} not logged:\n{self.logs(container)[-3000:]}")
        finally:
            follow.kill()
            follow.wait()

    def stop(self, container: str, grace_s: int = 30) -> float:
        """``docker stop`` (SIGTERM, then SIGKILL after ``grace_s``); returns the seconds it took."""
        started = time.monotonic()
        docker("stop", "-t", str(grace_s), container, timeout=grace_s + 30)
        return time.monotonic() - started

    def state(self, container: str) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", container).stdout)

    def logs(self, container: str) -> str:
        result = docker("logs", container, check=False)
        return result.stdout + result.stderr

    def remove_all(self) -> None:
        for container in self.ids:
            docker("rm", "-f", container, check=False)

    @staticmethod
    def _options(ml: Path | None, env: dict | None) -> list[str]:
        options = ["-v", f"{ml}:/opt/ml"] if ml else []
        for key, value in (env or {}).items():
            options += ["-e", f"{key}={value}"]
        return options
