"""Fixtures for the image tests: a real Docker engine and the CPU image built from this tree.

The engine is started by ``engine.sh`` when none answers, and stopped again at the end of the
session if these fixtures started it. Every container a test starts is removed afterwards.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from container.docker_harness import ENGINE, ENGINE_SOCKET, IMAGE, ROOT, Containers


def _answers(env: dict) -> bool:
    result = subprocess.run(
        ["docker", "info"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30
    )
    return result.returncode == 0


def _report(config, line: str) -> None:
    """Show set-up times in the test output, where CI's time budget is read."""
    with config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(line, flush=True)


@pytest.fixture(scope="session")
def engine(pytestconfig):
    """A Docker engine that answers; ``DOCKER_HOST`` points at it for the whole session."""
    already = _answers(dict(os.environ)) or _answers({**os.environ, "DOCKER_HOST": ENGINE_SOCKET})
    started = time.monotonic()
    result = subprocess.run([str(ENGINE), "start"], stdout=subprocess.PIPE, text=True, timeout=900)
    assert result.returncode == 0, "engine.sh start failed (its messages are above)"
    host = result.stdout.strip().rpartition("DOCKER_HOST=")[2]
    if host:
        os.environ["DOCKER_HOST"] = host
    _report(pytestconfig, f"\nDocker engine ready in {time.monotonic() - started:.1f} s")
    yield
    if not already:
        subprocess.run([str(ENGINE), "stop"], timeout=60)


@pytest.fixture(scope="session")
def cpu_image(engine, pytestconfig) -> str:
    """The CPU image, built from this working tree (without weights: the build has no network to them)."""
    started = time.monotonic()
    result = subprocess.run(
        [
            "docker",
            "build",
            "--network",
            "host",
            "-f",
            "Dockerfile.cpu",
            "--build-arg",
            "PRETRAINED_WEIGHTS=skip",
            "-t",
            IMAGE,
            ".",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    _report(pytestconfig, f"{IMAGE} built in {time.monotonic() - started:.1f} s")
    return IMAGE


@pytest.fixture
def containers(cpu_image):
    running = Containers(cpu_image)
    yield running
    running.remove_all()
