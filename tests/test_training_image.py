"""``TrainingImage`` without a usable Docker engine: one sentence, before any channel is downloaded."""

from __future__ import annotations

import shutil

import pytest

from semseg.errors import UserError
from semseg.jobs.request import parse
from semseg.jobs.training_image import container_name, ensure_image


def test_the_request_keeps_the_training_image():
    raw = {
        "TrainingJobName": "j",
        "AlgorithmSpecification": {"TrainingImage": "semseg:cpu"},
        "OutputDataConfig": {"S3OutputPath": "file:///tmp/out"},
    }
    assert parse(raw).training_image == "semseg:cpu"
    assert parse({**raw, "AlgorithmSpecification": {}}).training_image is None
    with pytest.raises(UserError, match="TrainingImage must be an image name, not list"):
        parse({**raw, "AlgorithmSpecification": {"TrainingImage": ["semseg:cpu"]}})


def test_no_docker_client_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match=r"^TrainingImage semseg:cpu needs the docker client, which is not on PATH$"):
        ensure_image("semseg:cpu")


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on this machine")
def test_no_engine_answering_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(UserError, match=r"^TrainingImage semseg:cpu needs a Docker engine, and none answers: \S"):
        ensure_image("semseg:cpu")


def test_each_job_folder_has_its_own_container_name(tmp_path):
    name = container_name("fcn-1", tmp_path / "a")
    assert name.startswith("semseg-job-fcn-1-")
    assert name == container_name("fcn-1", tmp_path / "a")
    assert name != container_name("fcn-1", tmp_path / "b")
