"""``AlgorithmSpecification.TrainingImage``: training run in that image through the local Docker engine.

SageMaker starts a training image as ``IMAGE train`` with the job's /opt/ml mounted; so does this,
with the job folder as /opt/ml. Everything else stays with ``semseg job`` on the host: channels are
downloaded (or, in Pipe mode, fed into FIFOs that are files of the mounted tree, so they work across
the mount), checkpoints synced, results packaged and uploaded. The container gets only what SageMaker
gives one: the request's ``Environment`` and ``TRAINING_JOB_NAME``, never the host's credentials.

``docker run`` stays attached, so the container's log is the job's log and its exit code the
training's. A stop (SIGTERM, ``MaxRuntimeInSeconds``) is ``docker stop`` with the grace period;
the container is removed at the end whatever the way out, and one left behind by a ``semseg job``
that was SIGKILLed is removed when the same job runs again in the same folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import UserError, one_line
from ..names import shown
from ..processes import die_with_parent

log = logging.getLogger("semseg")

CONTAINER_ML = "/opt/ml"
DOCKER_TIMEOUT_S = 60  # one docker client call that is not the training itself (inspect, kill, rm)
PULL_TIMEOUT_S = 1800


def _docker(*args: str, timeout: float = DOCKER_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    return one_line(lines[-1]) if lines else f"exit code {result.returncode}"


def ensure_image(image: str) -> None:
    """Before anything is downloaded: the engine answers and has ``image`` (pulled if it must be)."""
    shown_image = shown(image)
    if shutil.which("docker") is None:
        raise UserError(f"TrainingImage {shown_image} needs the docker client, which is not on PATH")
    try:
        if _docker("image", "inspect", image).returncode == 0:
            return
        version = _docker("version", "--format", "{{.Server.Version}}")
        if version.returncode != 0:
            raise UserError(
                f"TrainingImage {shown_image} needs a Docker engine, and none answers: {_last_line(version)}"
            )
        log.info("Pulling TrainingImage %s", shown_image)
        pulled = _docker("pull", image, timeout=PULL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"The Docker engine did not answer within {exc.timeout:.0f} s about {shown_image}") from None
    if pulled.returncode != 0:
        raise UserError(f"TrainingImage {shown_image} is not in the local Docker engine and could not be pulled: "
                        f"{_last_line(pulled)}")  # fmt: skip


def container_name(job_name: str, root: Path) -> str:
    """One name per job folder: a rerun in that folder finds the container an earlier run left."""
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    return f"semseg-job-{job_name}-{digest}"


class ContainerTraining:
    """``docker run IMAGE train`` on the job folder, driven like the ``subprocess.Popen`` of ``train``:
    ``poll``/``wait`` give its exit code, ``terminate`` stops it with a grace period, ``kill`` at once.
    As a context manager it removes the container on the way out."""

    def __init__(self, image: str, root: Path, job_name: str, environment: dict[str, str], grace_s: int):
        self.name = container_name(job_name, root)
        self.grace_s = grace_s
        self._stopping: subprocess.Popen | None = None
        self.remove()  # left by an earlier run of this job that could not clean up (SIGKILL)
        variables = {**environment, "TRAINING_JOB_NAME": job_name}
        command = ["docker", "run", "--name", self.name, "--network", "host"]
        command += ["--user", f"{os.getuid()}:{os.getgid()}"]  # files on the host stay the user's
        command += ["-v", f"{root}:{CONTAINER_ML}"]
        for key, value in variables.items():
            command += ["-e", f"{key}={value}"]
        command += [image, "train"]
        log.info("Training in TrainingImage %s (container %s)", shown(image), self.name)
        self.client = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        self.stdout = self.client.stdout  # the container's log, as the training process's output

    def poll(self) -> int | None:
        return self.client.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.client.wait(timeout)

    def terminate(self) -> None:
        """``docker stop``: SIGTERM to the training, SIGKILL ``grace_s`` later; returns at once."""
        if self._stopping is None:
            self._stopping = subprocess.Popen(
                ["docker", "stop", "-t", str(self.grace_s), self.name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

    def kill(self) -> None:
        _docker("kill", self.name)
        try:
            self.client.wait(DOCKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.client.kill()

    def remove(self) -> None:
        try:
            _docker("rm", "-f", self.name)
        except subprocess.TimeoutExpired:
            log.warning("The Docker engine did not remove container %s within %d s", self.name, DOCKER_TIMEOUT_S)

    def __enter__(self) -> ContainerTraining:
        return self

    def __exit__(self, *exc) -> None:
        if self.client.poll() is None:
            self.kill()
        self.client.wait()
        if self._stopping is not None:
            try:
                self._stopping.wait(DOCKER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._stopping.kill()
                self._stopping.wait()
        self.remove()
