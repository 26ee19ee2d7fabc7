"""``semseg job`` with ``AlgorithmSpecification.TrainingImage``: the channels come from S3 on the host,
training runs in the CPU image as SageMaker starts it (``IMAGE train``, the job folder at /opt/ml), and
the archives go back to S3 from the host."""

from __future__ import annotations

import json
import re
import time

import pytest
from harness.s3jobs import file_mode_channels, keys, request, run_job, tar_members, upload_dataset
from harness.trainjob import MODEL_FILES

from container.docker_harness import docker
from semseg.errors import UserError
from semseg.jobs.training_image import ensure_image

pytestmark = pytest.mark.container


def _container_events(since: float, name_prefix: str) -> list[tuple[str, str]]:
    """(action, image) of the engine's events since ``since`` for containers whose name starts so."""
    result = docker(
        "events",
        "--since",
        f"{since:.0f}",
        "--until",
        f"{time.time() + 1:.0f}",
        "--filter",
        "type=container",
        "--format",
        "{{json .}}",
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [
        (e["Action"], e["Actor"]["Attributes"].get("image", ""))
        for e in events
        if e["Actor"]["Attributes"].get("name", "").startswith(name_prefix)
    ]


def test_a_file_mode_job_from_s3_trains_in_the_training_image(cpu_image, aws_env, moto_server, tmp_path):
    bucket = moto_server.new_bucket()
    upload_dataset(bucket, "data", tmp_path / "dataset")
    body = request("in-image", bucket, file_mode_channels(bucket, "data"), checkpoints=f"s3://{bucket}/checkpoints")
    body["AlgorithmSpecification"]["TrainingImage"] = cpu_image
    started = time.time() - 1

    job = run_job(body, tmp_path / "job", aws_env)

    assert job.returncode == 0, job.log[-3000:]
    assert job.description["TrainingJobStatus"] == "Completed"
    assert keys(bucket, "jobs/") == ["jobs/in-image/output/model.tar.gz", "jobs/in-image/output/output.tar.gz"]
    model = tar_members(bucket, "jobs/in-image/output/model.tar.gz")
    assert MODEL_FILES <= set(model)
    assert json.loads(model["hyperparams.json"])["crop_size"] == "32"
    # checkpoints written in the container at /opt/ml/checkpoints reached S3 through the mount
    checkpoint_config = json.loads((job.workdir / "input" / "config" / "checkpointconfig.json").read_text())
    assert checkpoint_config["LocalPath"] == "/opt/ml/checkpoints"
    assert any(key.endswith("/MANIFEST.json") for key in keys(bucket, "checkpoints/"))
    # the engine's own record: one container of that image started, and removed at the end
    actions = _container_events(started, "semseg-job-in-image-")
    assert ("start", cpu_image) in actions, actions
    assert ("destroy", cpu_image) in actions, actions
    assert docker("ps", "-a", "-q", "--filter", "name=semseg-job-in-image-").stdout.strip() == ""


def test_an_image_the_engine_cannot_pull_is_one_sentence(engine):
    missing = "127.0.0.1:1/semseg-missing:none"  # a registry on loopback that refuses the connection
    sentence = f"^TrainingImage {re.escape(missing)} is not in the local Docker engine and could not be pulled: \\S"
    with pytest.raises(UserError, match=sentence):
        ensure_image(missing)
