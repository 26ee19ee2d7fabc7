"""``semseg predict`` on hostile names and careless flags: no answer lands outside ``--output``, no
answer overwrites another, an output inside the input is refused, and every flag is checked before
the model loads. The command runs as users run it, against a stand-in server on 127.0.0.1 whose
answer to a body is that body's digest, so a test can tell whose answer a file holds."""

from __future__ import annotations

import hashlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import boto3
import pytest
from harness.stand_in_http import predict, serving


def answer_to(body: bytes) -> bytes:
    return hashlib.sha256(body).hexdigest().encode()


class _Answering(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = answer_to(body)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server_url():
    with serving(_Answering) as url:
        yield url


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("hostile", ["prefix/../../escape.jpg", "prefix/a/../../../x.jpg", "prefix//srv/out/ABS.jpg"])
def test_an_s3_key_that_would_be_written_outside_the_output_is_refused_before_anything_is_written(
    hostile, server_url, aws_env, moto_server, tmp_path
):
    bucket = moto_server.new_bucket()
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    s3.put_object(Bucket=bucket, Key="prefix/good.jpg", Body=b"good")
    s3.put_object(Bucket=bucket, Key=hostile, Body=b"hostile")
    assert hostile in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]  # stored as given
    output = tmp_path / "deep" / "er" / "out"

    run = predict("--input", f"s3://{bucket}/prefix/", "--output", str(output), "--url", server_url, env=aws_env)

    assert run.returncode == 1, run.stdout + run.stderr
    sentence = run.stdout.strip().splitlines()[-1]
    assert hostile[len("prefix/") :] in sentence and f"s3://{bucket}/prefix/" in sentence, run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert files(tmp_path) == set()  # nothing written, inside the output or above it


def test_each_answer_is_written_under_the_name_of_the_object_it_answers(server_url, aws_env, moto_server, tmp_path):
    bucket = moto_server.new_bucket()
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    bodies = {"prefix/a.jpg": b"first", "prefix/sub/a.jpg": b"second", "prefix/b c.jpg": b"third"}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    run = predict("--input", f"s3://{bucket}/prefix/", "--output", str(tmp_path), "--url", server_url, env=aws_env)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 predicted, 0 already there, 0 failed" in run.stdout
    for key, body in bodies.items():
        assert (tmp_path / Path(key[len("prefix/") :]).with_suffix(".png")).read_bytes() == answer_to(body)


def test_inputs_that_would_share_an_answer_each_keep_their_own(server_url, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(6):
        (inputs / f"img{index}.jpg").write_bytes(b"image %d" % index)
    (inputs / "dup.jpg").write_bytes(b"the JPEG")
    (inputs / "dup.png").write_bytes(b"the PNG")

    run = predict("--input", str(inputs), "--output", str(tmp_path / "out"), "--url", server_url)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "8 predicted, 0 already there, 0 failed" in run.stdout and len(files(tmp_path / "out")) == 8
    assert (tmp_path / "out" / "dup.jpg.png").read_bytes() == answer_to(b"the JPEG")
    assert (tmp_path / "out" / "dup.png.png").read_bytes() == answer_to(b"the PNG")
    again = predict("--input", str(inputs), "--output", str(tmp_path / "out"), "--url", server_url)
    assert "0 predicted, 8 already there, 0 failed" in again.stdout


@pytest.mark.parametrize("output", [".", "out", "sub/out"])
def test_an_output_inside_the_input_is_refused(output, server_url, tmp_path):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "a.jpg").write_bytes(b"a")
    (inputs / "sub" / "b.jpg").write_bytes(b"b")
    before = files(inputs)

    run = predict("--input", str(inputs), "--output", str(inputs / output), "--url", server_url)

    assert run.returncode == 1, run.stdout
    assert "is inside --input" in run.stdout and "Traceback" not in run.stdout + run.stderr, run.stdout
    assert files(inputs) == before


def test_an_s3_output_prefix_inside_the_input_prefix_is_refused(server_url, aws_env, moto_server):
    bucket = moto_server.new_bucket()
    boto3.client("s3", endpoint_url=moto_server.endpoint).put_object(Bucket=bucket, Key="images/a.jpg", Body=b"a")

    run = predict(
        "--input", f"s3://{bucket}/images", "--output", f"s3://{bucket}/images/masks/", "--url", server_url, env=aws_env
    )

    assert run.returncode == 1 and "is inside --input" in run.stdout, run.stdout
    assert [o["Key"] for o in boto3.client("s3", endpoint_url=moto_server.endpoint).list_objects_v2(
        Bucket=bucket)["Contents"]] == ["images/a.jpg"]  # fmt: skip


@pytest.mark.parametrize(
    "flags, sentence",
    [
        (["--concurrency", "0"], "--concurrency is 0; give 1 to 32"),
        (["--concurrency", "1000"], "--concurrency is 1000; give 1 to 32"),
        (["--accept", "text/html"], "The Accept type 'text/html' is not supported"),
    ],
)
def test_flags_are_checked_before_the_model_loads(flags, sentence, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"a")

    run = predict("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", "no-model", *flags)

    assert run.returncode == 1
    assert sentence in run.stdout and "no-model" not in run.stdout, run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "out").exists()


def test_an_accept_wildcard_asks_the_server_for_the_default_type(server_url, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"a")

    run = predict("--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--url", server_url, "--accept",
                  "image/*")  # fmt: skip

    assert run.returncode == 0, run.stdout + run.stderr
    assert files(tmp_path / "out") == {"a.png"}
