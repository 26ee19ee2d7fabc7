"""Names from outside (S3 keys, file names, zip members, list entries) stay names: they never place a
file outside its folder, never overwrite another's answer, and never start a line of the log."""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
from argparse import Namespace
from pathlib import Path

import boto3
import pytest
from s3jobs import SEMSEG

from semseg import logs, names
from semseg.errors import UserError
from semseg.jobs import predict
from semseg.jobs.s3 import parse_uri

UNUSED_URL = "http://127.0.0.1:9"  # the discard port: nothing may be sent when the batch is refused


# --- the two helpers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "is empty"),
        ("/srv/out/ABS.jpg", "absolute path"),
        ("C:/x.jpg", "absolute path"),
        ("../escape.jpg", "'..' part"),
        ("a/../../x.jpg", "'..' part"),
        ("a//b.jpg", "empty, '.' or '..' part"),
        ("./a.jpg", "empty, '.' or '..' part"),
        ("a\nb.jpg", "control characters"),
        ("x" * 256 + ".jpg", "longer than 255 bytes"),
    ],
)
def test_an_outside_name_that_could_leave_its_folder_is_refused_in_one_sentence(name, reason):
    with pytest.raises(UserError, match=reason) as refused:
        names.relative_path(name, "object key")
    assert "\n" not in str(refused.value)


def test_a_plain_relative_name_is_kept_as_it_is():
    assert str(names.relative_path("sub/dir/img 1.jpg", "object key")) == "sub/dir/img 1.jpg"


def test_a_name_that_is_the_folder_of_another_clashes():
    with pytest.raises(UserError, match="'clash/a' and 'clash/a/b.jpg' clash"):
        names.relative_paths(["clash/a", "clash/a/b.jpg"], "object key")


def test_shown_writes_line_breaks_bidi_controls_and_the_metric_mark_as_visible_escapes():
    assert names.shown("a\nb\r\x1b[31m\u2028\u202egnp.exe") == "a\\nb\\r\\x1b[31m\\u2028\\u202egnp.exe"
    assert names.shown("#quality_metric") == "\\x23quality_metric"
    assert names.shown("plain name-1.png") == "plain name-1.png"


FORGED = "a\n#quality_metric. host: algo-1, epoch: 0, validation mIOU: 0.999"


def _formatted(message: str, *args) -> str:
    record = logging.LogRecord("semseg", logging.INFO, __file__, 1, message, args, None)
    return logs.OneLineFormatter(logs.LOG_FORMAT, logs.DATE_FORMAT).format(record)


def test_no_log_record_forges_a_metric_line_whatever_its_arguments_hold():
    line = _formatted("%d names are skipped (first: %s)", 1, FORGED)
    assert line.endswith(
        "1 names are skipped (first: a\\n\\x23quality_metric. host: algo-1, epoch: 0, validation mIOU: 0.999)"
    )
    assert not any(re.search(regex, line) for regex in logs.METRIC_REGEXES.values())


def test_a_message_made_before_logging_still_stays_on_one_line():
    assert "\n" not in _formatted(f"skipped {FORGED}")


def test_the_real_metric_lines_are_untouched():
    line = _formatted("#quality_metric. host: %s, epoch: %d, validation mIOU: %s .", "algo-1", 3, 0.5)
    assert re.search(logs.METRIC_REGEXES["validation:mIOU"], line).group(1) == "0.5"


# --- semseg predict ----------------------------------------------------------------------------------------


def _answer(body: bytes, content_type: str) -> bytes:
    """A stand-in for the model that says which input it was given, so a test sees whose answer a file holds."""
    return hashlib.sha256(body).hexdigest().encode()


def _run(source: str, target: str, accept: str = "image/png") -> predict.BatchSummary:
    source_location, target_location = parse_uri(source), parse_uri(target)
    batch = predict.plan(source_location, target_location, accept)
    return predict.run_batch(source_location, target_location, batch, _answer, concurrency=2)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SEMSEG, "predict", *args], capture_output=True, text=True, timeout=120, env=env)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("hostile", ["prefix/../../escape.jpg", "prefix/a/../../../x.jpg", "prefix//srv/out/ABS.jpg"])
def test_predict_refuses_an_s3_key_that_would_be_written_outside_the_output(hostile, aws_env, moto_server, tmp_path):
    bucket = moto_server.new_bucket()
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint)
    s3.put_object(Bucket=bucket, Key="prefix/good.jpg", Body=b"good")
    s3.put_object(Bucket=bucket, Key=hostile, Body=b"hostile")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert hostile in listed  # the store kept the key as it was given
    output = tmp_path / "deep" / "er" / "out"

    run = _cli("--input", f"s3://{bucket}/prefix/", "--output", str(output), "--url", UNUSED_URL, env=aws_env)

    assert run.returncode == 1, run.stdout + run.stderr
    message = run.stdout.strip().splitlines()[-1]
    assert hostile[len("prefix/") :] in message and f"s3://{bucket}/prefix/" in message, message
    assert "Traceback" not in run.stdout + run.stderr
    assert not output.exists() and _files(tmp_path) == set()  # nothing written, inside or above the output


def test_predict_reads_and_writes_the_same_object_name(s3, tmp_path):
    bucket = s3.new_bucket()
    client = boto3.client("s3")
    bodies = {"prefix/a.jpg": b"first", "prefix/sub/a.jpg": b"second", "prefix/b c.jpg": b"third"}
    for key, body in bodies.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)

    summary = _run(f"s3://{bucket}/prefix/", str(tmp_path / "out"))

    assert (summary.done, summary.skipped, summary.failures) == (3, 0, {})
    for key, body in bodies.items():
        written = tmp_path / "out" / Path(key[len("prefix/") :]).with_suffix(".png")
        assert written.read_bytes() == _answer(body, "")


def test_inputs_that_would_share_an_answer_each_keep_their_own(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(6):
        (inputs / f"img{index}.jpg").write_bytes(b"image %d" % index)
    (inputs / "dup.jpg").write_bytes(b"the JPEG")
    (inputs / "dup.png").write_bytes(b"the PNG")

    summary = _run(str(inputs), str(tmp_path / "out"))

    written = _files(tmp_path / "out")
    assert summary.done == len(written) == 8 and not summary.failures
    assert (tmp_path / "out" / "dup.jpg.png").read_bytes() == _answer(b"the JPEG", "")
    assert (tmp_path / "out" / "dup.png.png").read_bytes() == _answer(b"the PNG", "")
    again = _run(str(inputs), str(tmp_path / "out"))
    assert (again.done, again.skipped) == (0, 8)


@pytest.mark.parametrize("output", [".", "out", "sub/out"])
def test_predict_refuses_an_output_inside_its_input(output, tmp_path):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "a.jpg").write_bytes(b"a")
    before = _files(inputs)

    run = _cli("--input", str(inputs), "--output", str(inputs / output), "--url", UNUSED_URL)

    assert run.returncode == 1
    assert "is inside --input" in run.stdout and "Traceback" not in run.stdout + run.stderr, run.stdout
    assert _files(inputs) == before


def test_predict_refuses_an_s3_output_prefix_inside_its_input(s3):
    bucket = s3.new_bucket()
    with pytest.raises(UserError, match="is inside --input"):
        predict.plan(parse_uri(f"s3://{bucket}/images"), parse_uri(f"s3://{bucket}/images/masks/"), "image/png")


def _flags(**given) -> Namespace:
    defaults = {"url": None, "endpoint": None, "model": None, "accept": "image/png", "concurrency": 4}
    return Namespace(**{**defaults, **given})


@pytest.mark.parametrize(
    "flags, sentence",
    [
        (["--concurrency", "0"], "--concurrency is 0; give 1 to 32"),
        (["--concurrency", "1000"], "--concurrency is 1000; give 1 to 32"),
        (["--accept", "text/html"], "The Accept type 'text/html' is not supported"),
    ],
)
def test_predict_checks_its_flags_before_loading_the_model(flags, sentence, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"a")
    missing_model = tmp_path / "no-model-here"

    run = _cli(
        "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--model", str(missing_model), *flags
    )

    assert run.returncode == 1
    assert sentence in run.stdout and "no-model-here" not in run.stdout, run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "out").exists()


def test_an_accept_wildcard_answers_in_the_default_type():
    assert predict._checked_flags(_flags(url=UNUSED_URL, accept="image/*")) == "image/png"
