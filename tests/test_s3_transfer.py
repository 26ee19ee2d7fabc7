"""Prefix downloads through boto3's transfer manager against a real S3-protocol server (moto)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import boto3
import pytest

from semseg.errors import UserError
from semseg.jobs import transfer
from semseg.jobs.s3 import S3Location, parse_uri

COUNT = 40


def put_objects(bucket: str, prefix: str, count: int = COUNT, size: int = 20_000) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    objects = {}
    for i in range(count):
        body = bytes([i % 251]) * size + f"object {i}".encode()
        key = f"{prefix}/sub{i % 3}/{i:03d}.bin"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        objects[key] = body
    return objects


def local_files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_prefix_downloads_whole_and_a_second_run_fetches_nothing(s3, tmp_path):
    bucket = s3.new_bucket()
    objects = put_objects(bucket, "data/train")
    put_objects(bucket, "data/train_annotation", count=3)  # shares the key prefix "data/train", not the folder
    destination = tmp_path / "train"

    first = transfer.download(parse_uri(f"s3://{bucket}/data/train"), destination, tmp_path / "staging")

    assert (first.files, first.skipped) == (COUNT, 0)
    assert local_files(destination) == {key.removeprefix("data/train/"): body for key, body in objects.items()}
    assert not (tmp_path / "staging").exists()
    second = transfer.download(parse_uri(f"s3://{bucket}/data/train/"), destination, tmp_path / "staging")
    assert (second.files, second.skipped) == (0, COUNT)


def test_a_download_killed_half_way_resumes_without_fetching_finished_files(s3, tmp_path):
    bucket = s3.new_bucket()
    objects = put_objects(bucket, "train")
    destination, staging = tmp_path / "train", tmp_path / "staging"
    # The child is SIGKILLed from inside boto3's own event hooks once half the files are in place,
    # with transfers still in flight: a real kill at a known point, nothing mocked.
    child = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from semseg.jobs import s3, transfer
        destination = Path({str(destination)!r})
        def kill_when_half_done(**kwargs):
            if destination.exists() and sum(1 for p in destination.rglob("*") if p.is_file()) >= {COUNT // 2}:
                os.kill(os.getpid(), signal.SIGKILL)
        s3.client().meta.events.register("after-call.s3.GetObject", kill_when_half_done)
        transfer.download(s3.parse_uri("s3://{bucket}/train/"), destination, Path({str(staging)!r}))
        """
    )
    killed = subprocess.run([sys.executable, "-c", child], env=os.environ, timeout=120, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    finished = local_files(destination)
    assert COUNT // 2 <= len(finished) < COUNT
    assert all(objects[f"train/{name}"] == body for name, body in finished.items())  # no partial file in place

    resumed = transfer.download(parse_uri(f"s3://{bucket}/train/"), destination, staging)

    assert resumed.skipped == len(finished)
    assert resumed.files == COUNT - len(finished)
    assert local_files(destination) == {key.removeprefix("train/"): body for key, body in objects.items()}


def test_a_changed_object_is_fetched_again(s3, tmp_path):
    bucket = s3.new_bucket()
    put_objects(bucket, "train", count=3)
    destination = tmp_path / "train"
    transfer.download(parse_uri(f"s3://{bucket}/train/"), destination, tmp_path / "staging")
    boto3.client("s3").put_object(Bucket=bucket, Key="train/sub0/000.bin", Body=b"changed")

    again = transfer.download(parse_uri(f"s3://{bucket}/train/"), destination, tmp_path / "staging")

    assert (again.files, again.skipped) == (1, 2)
    assert (destination / "sub0" / "000.bin").read_bytes() == b"changed"


@pytest.mark.parametrize(
    ("uri", "sentence"),
    [
        ("s3://no-such-bucket-x/train/", "Could not list s3://no-such-bucket-x/train/: the bucket does not exist"),
        ("s3://{bucket}/nothing/", "There are no objects under s3://{bucket}/nothing/"),
    ],
)
def test_download_errors_name_the_bucket_and_what_failed(s3, tmp_path, uri, sentence):
    bucket = s3.new_bucket()
    with pytest.raises(UserError) as caught:
        transfer.download(parse_uri(uri.format(bucket=bucket)), tmp_path / "d", tmp_path / "staging")
    assert str(caught.value) == sentence.format(bucket=bucket)


def test_no_credentials_is_one_sentence(s3, tmp_path, monkeypatch):
    bucket = s3.new_bucket()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    from semseg.jobs.s3 import reset_clients

    reset_clients()
    with pytest.raises(UserError, match=rf"^Could not list s3://{bucket}/x/: no AWS credentials were found"):
        transfer.download(parse_uri(f"s3://{bucket}/x/"), tmp_path / "d", tmp_path / "staging")


def test_file_uris_are_linked_into_the_channel(tmp_path):
    source = tmp_path / "source"
    (source / "a").mkdir(parents=True)
    (source / "a" / "x.jpg").write_bytes(b"x")
    summary = transfer.download(S3Location("", "", source), tmp_path / "channel", tmp_path / "staging")
    assert summary.files == 1
    assert (tmp_path / "channel" / "a" / "x.jpg").read_bytes() == b"x"
