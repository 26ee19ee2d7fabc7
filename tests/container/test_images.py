"""The CPU image under a real Docker engine, started as SageMaker starts it: `IMAGE train` with the
job's /opt/ml tree mounted, `IMAGE serve` with the model mounted, SIGTERM from `docker stop`."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from harness.ports import free_port
from harness.trainjob import MODEL_FILES, make_tree
from PIL import Image

from container.docker_harness import Containers, docker
from semseg.sample_data import make_pair

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def trained(cpu_image, tmp_path_factory):
    """One tiny training job run in the container: (its /opt/ml tree on the host, its exit code and log)."""
    root = make_tree(tmp_path_factory.mktemp("job"), train=6, validation=4)
    runner = Containers(cpu_image)
    try:
        result = runner.run("train", ml=root)
    finally:
        runner.remove_all()
    return root, result


def test_train_writes_the_three_artifacts_on_the_host(trained):
    root, result = trained
    assert result.returncode == 0, result.stdout[-3000:]
    assert MODEL_FILES <= {p.name for p in (root / "model").iterdir()}
    assert json.loads((root / "model" / "hyperparams.json").read_text())["num_classes"] == "4"
    assert "#quality_metric. host: algo-1, epoch: 0, validation mIOU:" in result.stdout
    assert not (root / "output" / "failure").exists()


def test_a_bad_hyperparameter_fails_the_job_with_a_failure_file(containers, tmp_path):
    root = make_tree(tmp_path, optimizer="adadelta")
    result = containers.run("train", ml=root)
    assert result.returncode == 1, result.stdout[-3000:]
    failure = (root / "output" / "failure").read_text()
    assert "The value 'adadelta' is not valid for the 'optimizer' hyperparameter" in failure
    assert not (root / "model" / "model_algo-1").exists()


def test_pretrained_weights_not_staged_is_a_clear_failure(containers, tmp_path):
    """The test image is built with PRETRAINED_WEIGHTS=skip: asking for them must say so, not train from scratch."""
    root = make_tree(tmp_path, use_pretrained_model="True")
    result = containers.run("train", ml=root)
    assert result.returncode == 1, result.stdout[-3000:]
    failure = (root / "output" / "failure").read_text()
    assert (
        "use_pretrained_model is True but the ImageNet weights for resnet-50 are not staged at "
        "/opt/semseg/mxnet/models/resnet50_v1s-25a187fa.params" in failure
    )


def test_docker_stop_ends_training_cleanly_and_promptly(containers, tmp_path):
    root = make_tree(tmp_path, epochs="50", _logging_frequency="1")
    container = containers.start("train", ml=root)
    containers.wait_for_line(container, "#progress_notice")
    seconds = containers.stop(container)
    state = containers.state(container)
    log = containers.logs(container)
    assert seconds < 20, f"docker stop took {seconds:.1f} s"
    assert state["ExitCode"] == 143 and not state["OOMKilled"], log[-3000:]
    assert "Received SIGTERM: training stopped before completion" in log


def test_serve_answers_ping_and_segments_a_jpeg_then_stops_cleanly(containers, trained):
    root, result = trained
    assert result.returncode == 0, result.stdout[-3000:]
    port = free_port()
    container = containers.start("serve", model=root / "model", env={"SAGEMAKER_BIND_TO_PORT": port})
    base = f"http://127.0.0.1:{port}"
    _wait_for_ping(containers, container, base)

    picture, _ = make_pair(np.random.RandomState(7), 83, 61)
    body = io.BytesIO()
    picture.save(body, format="JPEG")
    request = urllib.request.Request(
        f"{base}/invocations", data=body.getvalue(), headers={"Content-Type": "image/jpeg", "Accept": "image/png"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/png"
        mask = Image.open(io.BytesIO(response.read()))
    assert mask.format == "PNG" and mask.size == (83, 61)

    seconds = containers.stop(container)
    state = containers.state(container)
    assert seconds < 20, f"docker stop took {seconds:.1f} s"
    assert state["ExitCode"] == 0, containers.logs(container)[-3000:]


def test_entrypoint_makes_tini_pid_1_and_the_command_its_child(containers):
    result = containers.run("python3", "-c", "import os; print(open('/proc/1/comm').read().strip(), os.getppid())")
    assert result.returncode == 0, result.stdout
    assert result.stdout.split() == ["tini", "1"]


def test_orphaned_children_are_reaped(containers):
    """A grandchild whose parent is gone is reparented to PID 1, which must collect it when it exits."""
    script = (
        "import glob, subprocess, time\n"
        "subprocess.run(['sh', '-c', 'sleep 0.3 &'])\n"
        "time.sleep(2)\n"
        "states = [open(p).read().rsplit(')', 1)[1].split()[0] for p in glob.glob('/proc/[0-9]*/stat')]\n"
        "print('zombies', states.count('Z'))\n"
    )
    result = containers.run("python3", "-c", script)
    assert result.returncode == 0, result.stdout
    assert "zombies 0" in result.stdout


def test_without_a_command_the_entrypoint_prints_its_usage(containers):
    result = containers.run()
    assert result.returncode == 2
    assert "usage: IMAGE train | IMAGE serve" in result.stdout


def test_image_metadata_follows_the_sagemaker_conventions(cpu_image, containers):
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", cpu_image).stdout)
    assert config["Entrypoint"] == ["/usr/local/bin/entrypoint"]
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONUNBUFFERED"] == "1" and env["MXNET_HOME"] == "/opt/semseg/mxnet"
    result = containers.run(
        "sh", "-c", "stat -c %a /opt/semseg/mxnet/models; for tool in gcc cc make g++; do command -v $tool; done; true"
    )
    assert result.stdout.split() == ["1777"], "models dir not writable for all, or build tools left in the image"


def _wait_for_ping(containers: Containers, container: str, base: str, timeout: float = 240) -> None:
    """SageMaker waits up to 4 minutes for the first healthy /ping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if not containers.state(container)["Running"]:
            break
        time.sleep(0.5)
    raise AssertionError(f"/ping never answered 200:\n{containers.logs(container)[-3000:]}")
