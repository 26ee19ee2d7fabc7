"""Shared fixtures: synthetic images and masks written the way users' datasets are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def pytest_runtest_setup(item):
    """Before the test's fixtures: its markers, for the harness helpers that start training jobs."""
    from harness import trainjob

    trainjob.RUNNING_TEST_MARKERS = {marker.name for marker in item.iter_markers()}


def save_mask(path: Path, values: np.ndarray, mode: str = "P") -> Path:
    mask = Image.fromarray(values.astype(np.uint8), mode="L")
    if mode == "P":
        mask = mask.convert("P")
        mask.putpalette([i % 256 for i in range(768)])
    mask.save(path)
    return path


def save_image(path: Path, width: int, height: int, colour=(120, 80, 40), mode: str = "RGB") -> Path:
    image = Image.new("RGB", (width, height), colour)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


@pytest.fixture(scope="session")
def learnt_model(tmp_path_factory):
    """The demo's training run (a task it learns, about 0.8 mIoU; int8 copy included), run once per
    session for the tests that need a network that has learnt something (a ``trainjob.Job``)."""
    from harness.trainjob import run_train

    from semseg.demo import DEMO_HYPERPARAMETERS
    from semseg.sample_data import write_opt_ml_tree

    root = write_opt_ml_tree(
        tmp_path_factory.mktemp("learnt"), train=32, validation=16, hyperparameters=DEMO_HYPERPARAMETERS
    )
    (root / "checkpoints").rmdir()  # no checkpoints: they would cost 8 writes of three model sizes
    return run_train(root, timeout=1500)


@pytest.fixture
def split_dirs(tmp_path):
    images, masks = tmp_path / "train", tmp_path / "train_annotation"
    images.mkdir()
    masks.mkdir()
    return images, masks


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto's standalone S3-protocol server on 127.0.0.1, one for the session, stopped at its end."""
    from harness import s3server

    server = s3server.start(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    s3server.stop(server)


@pytest.fixture
def s3(moto_server, tmp_path, monkeypatch):
    """This test's environment points boto3 (here and in child processes) at the moto server only."""
    from harness import s3server

    config_dir = tmp_path / "aws"
    config_dir.mkdir()
    for name, value in s3server.aws_environment(moto_server.endpoint, config_dir).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    from semseg.jobs import s3 as s3_module

    s3_module.reset_clients()  # a client made for an earlier test's environment is not reused
    return moto_server


@pytest.fixture(scope="session")
def aws_env(moto_server, tmp_path_factory):
    """For the session's S3 jobs: boto3 here and in child processes reaches the moto server only."""
    from harness import s3server

    from semseg.jobs.s3 import reset_clients

    config_dir = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3server.aws_environment(moto_server.endpoint, config_dir).items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        reset_clients()
        # The jobs' archives are stored, not compressed: gzip level 1 would cost ~25 s per tiny job's
        # 370 MB of random-initialised weights on a loaded machine (test_job_archives covers the default).
        yield {**s3server.env_for(moto_server, config_dir), "SEMSEG_JOB_GZIP_LEVEL": "0"}


@pytest.fixture(scope="session")
def s3_first_job(aws_env, moto_server, tmp_path_factory):
    """One tiny File-mode job from S3 channels, with checkpoints synced, run once for the session's S3 tests:
    its request built by the SageMaker SDK for the built-in algorithm's image, as a user's notebook builds it."""
    from harness import s3jobs

    tmp = tmp_path_factory.mktemp("first-job")
    bucket = moto_server.new_bucket()
    s3jobs.upload_dataset(bucket, "data", tmp / "dataset")
    checkpoints = f"s3://{bucket}/checkpoints/run"
    body = s3jobs.sdk_file_mode_request("first", bucket, "data", aws_env, tmp, checkpoint_s3_uri=checkpoints)
    return bucket, body, s3jobs.run_job(body, tmp / "first", aws_env)
