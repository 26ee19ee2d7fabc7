"""``serve`` outside SageMaker: the model fetched from ``SEMSEG_MODEL_URI`` (S3 or a local tarball)."""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
import time
from pathlib import Path

import boto3
import numpy as np
import pytest
import requests
from harness.s3jobs import SEMSEG
from harness.serving_helpers import Server, encoded, mask_of, sample_image

from semseg.errors import UserError
from serve import model_fetch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_server(s3_first_job, aws_env, tmp_path_factory):
    """``serve`` with an empty model directory and SEMSEG_MODEL_URI naming the first job's model.tar.gz;
    yields it once /ping answers 200, with the first answer /ping gave."""
    _, _, job = s3_first_job
    assert job.returncode == 0, job.log[-3000:]
    uri = job.description["ModelArtifacts"]["S3ModelArtifacts"]
    root = tmp_path_factory.mktemp("served")
    (root / "model").mkdir()  # empty, as in an image run with no model mounted
    server = Server(root, root / "serve.log", **{**aws_env, "SEMSEG_MODEL_URI": uri})
    try:
        first = server.wait_until_up()
        deadline = time.monotonic() + 300
        while (status := requests.get(server.url + "/ping", timeout=60).status_code) != 200:
            assert status == 503 and time.monotonic() < deadline, server.log()
            time.sleep(0.3)
        yield server, first, uri, root
    finally:
        code, _ = server.stop()
    assert code == 0, server.log()


def test_serve_fetches_the_model_from_s3_answering_503_until_it_is_ready(model_server):
    server, first, uri, root = model_server
    assert first.status_code == 503, server.log()
    assert first.json() == {"error": f"The model is being fetched from {uri}"}
    answer = server.invoke(encoded(sample_image(50, 40)))
    assert answer.status_code == 200, answer.text
    assert mask_of(answer.content).shape == (40, 50)
    assert {"hyperparams.json", "model_best.params"} <= {p.name for p in (root / "model").iterdir()}


def _images(folder: Path) -> dict[str, tuple[int, int]]:
    """Three good images of different sizes and one corrupt one; name -> (height, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"a.jpg": (40, 50), "b.jpg": (33, 61), "sub/c.png": (24, 24)}
    for name, (height, width) in sizes.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        sample_image(width, height).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return sizes


def predict(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([SEMSEG, "predict", *args], env=env, capture_output=True, text=True, timeout=300)


def test_predict_from_a_folder_to_s3_through_a_server_lists_the_corrupt_image(
    model_server, aws_env, moto_server, tmp_path
):
    server = model_server[0]
    sizes = _images(tmp_path / "in")
    bucket = moto_server.new_bucket()
    target = f"s3://{bucket}/masks/"

    run = predict("--input", str(tmp_path / "in"), "--output", target, "--url", server.url, env=aws_env)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "3 predicted, 0 already there, 1 failed" in run.stdout
    assert re.search(r"FAILED broken.jpg: HTTP 400: \S", run.stdout), run.stdout
    s3 = boto3.client("s3")
    for name, shape in sizes.items():
        key = "masks/" + str(Path(name).with_suffix(".png"))
        assert mask_of(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).shape == shape
    again = predict("--input", str(tmp_path / "in"), "--output", target, "--url", server.url, env=aws_env)
    assert "0 predicted, 3 already there, 1 failed" in again.stdout  # a rerun resumes


def test_predict_from_s3_to_a_folder_through_boto3s_invoke_endpoint(model_server, aws_env, moto_server, tmp_path):
    server = model_server[0]
    sizes = _images(tmp_path / "in")
    bucket = moto_server.new_bucket()
    for path in (tmp_path / "in").rglob("*"):
        if path.is_file():
            boto3.client("s3").upload_file(str(path), bucket, f"images/{path.relative_to(tmp_path / 'in')}")
    # boto3's sagemaker-runtime client sends its real InvokeEndpoint request to our server's runtime route.
    env = {**aws_env, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": server.url}

    run = predict("--input", f"s3://{bucket}/images/", "--output", str(tmp_path / "out"), "--endpoint", "seg", env=env)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "3 predicted, 0 already there, 1 failed" in run.stdout
    assert "FAILED broken.jpg: the endpoint seg answered" in run.stdout
    for name, shape in sizes.items():
        assert mask_of((tmp_path / "out" / Path(name).with_suffix(".png")).read_bytes()).shape == shape


def _tarball(path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path.as_uri()


def test_a_local_tarball_is_unpacked_with_the_archive_checks(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    monkeypatch.setenv(model_fetch.MODEL_URI_VARIABLE, _tarball(tmp_path / "m.tar.gz", {"hyperparams.json": b"{}"}))
    assert model_fetch.wanted(model_dir)
    model_fetch.fetch(model_fetch.wanted(model_dir), model_dir)
    assert (model_dir / "hyperparams.json").read_bytes() == b"{}"
    assert model_fetch.wanted(model_dir) is None  # a model is there now: it is served as it is

    hostile = _tarball(tmp_path / "evil.tar.gz", {"../escape": b"x"})
    with pytest.raises(UserError, match="unsafe path '../escape'"):
        model_fetch.fetch(hostile, tmp_path / "other")
    assert not (tmp_path / "escape").exists()


def test_serve_exits_with_one_sentence_when_the_model_object_is_missing(aws_env, moto_server, tmp_path):
    bucket = moto_server.new_bucket()
    server = Server(tmp_path, tmp_path / "serve.log", **{**aws_env, "SEMSEG_MODEL_URI": f"s3://{bucket}/m.tar.gz"})
    assert server.process.wait(120) == 1
    assert f"There are no objects under s3://{bucket}/m.tar.gz" in server.log()
    np.testing.assert_equal(list((tmp_path / "model").glob("*")) if (tmp_path / "model").exists() else [], [])


def test_predict_in_process_from_a_jobs_root_lists_the_corrupt_image(s3_first_job, aws_env, tmp_path):
    """``--model`` takes what ``semseg serve --model`` takes: here the job's /opt/ml root, whose model/ it uses."""
    _, _, job = s3_first_job
    assert job.returncode == 0, job.log[-3000:]
    sizes = _images(tmp_path / "in")
    model = str(job.workdir)

    run = predict("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", model, env=aws_env)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "3 predicted, 0 already there, 1 failed" in run.stdout
    assert re.search(r"FAILED broken.jpg: \S", run.stdout), run.stdout
    for name, shape in sizes.items():
        assert mask_of((tmp_path / "out" / Path(name).with_suffix(".png")).read_bytes()).shape == shape
    assert not (tmp_path / "out" / "broken.png").exists()
