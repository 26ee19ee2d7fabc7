"""Hostile dataset archives: each is refused with one sentence before anything is written, and
nothing appears outside the job's directories. Two cases go through the real job
(``semseg train --dataset``) to show the failure file; the others read the channel directly."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from harness.cvat_export import LABELMAP, cvat_members, write_tree, write_zip

from semseg import paths
from semseg.data import dataset_channel
from semseg.errors import UserError

SEMSEG = str(Path(sys.executable).parent / "semseg")
HP = {"num_classes": 4, "validation_fraction": 0.2, "_seed": 0}


def files_under(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() or p.is_symlink()}


def hostile_zip(path: Path, extra: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    """A valid CVAT export with ``extra`` members added after it."""
    write_zip(path, cvat_members({"default": 3})[0])
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        for info, data in extra:
            archive.writestr(info, data)
    return path


def link_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: external_attr holds the mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


@pytest.fixture
def channel(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "ml"))
    directory = paths.channel_dir("dataset")
    directory.mkdir(parents=True)
    return directory


def refused(message: str) -> str:
    """The sentence ``prepare`` refuses with; asserts nothing was prepared or written to model/."""
    with pytest.raises(UserError, match=message) as error:
        dataset_channel.prepare(HP)
    written = {name for name in files_under(paths.base_dir()) if not name.startswith("input/data/")}
    assert written == set() and not paths.prepared_dataset_dir().exists()
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize(
    "name, message",
    [
        (
            "task_1/../../../escape.txt",
            "holds the member 'task_1/../../../escape.txt', which has an empty, '.' or '..' part",
        ),
        ("/tmp/escape.txt", "holds the member '/tmp/escape.txt', which is an absolute path"),
        ("C:\\escape.txt", "which is an absolute path"),
        ("task_1\\..\\..\\escape.txt", "which has an empty, '.' or '..' part"),
    ],
)
def test_members_outside_the_tree(channel, tmp_path, name, message):
    hostile_zip(channel / "export.zip", [(name, b"escaped")])
    refused(message)
    assert not [p for p in tmp_path.parent.rglob("escape.txt")] and not Path("/tmp/escape.txt").exists()


def test_a_link_member(channel):
    hostile_zip(channel / "export.zip", [link_member("task_1/JPEGImages/passwd.jpg", "/etc/passwd")])
    refused("holds the link 'task_1/JPEGImages/passwd.jpg'")


def test_a_link_in_an_unzipped_tree(channel):
    write_tree(channel, cvat_members({"default": 3})[0])
    os.symlink("/etc", channel / "task_1" / "JPEGImages" / "etc")
    refused("The dataset channel holds the link .*JPEGImages/etc")


@pytest.mark.parametrize("duplicate", ["task_1/./labelmap.txt", "task_1//labelmap.txt"])
def test_two_members_with_one_name_after_normalisation(channel, duplicate):
    hostile_zip(channel / "export.zip", [(duplicate, b"background:0,0,0::\nother:1,1,1::\n")])
    refused("holds two members named 'task_1/labelmap.txt'")


def test_a_zip_bomb_by_compression_ratio(channel):
    hostile_zip(channel / "export.zip", [("task_1/JPEGImages/bomb.jpg", bytes(32 << 20))])
    assert (channel / "export.zip").stat().st_size < 200_000
    refused("would expand .* bytes to 33554432 \\(more than 100 times\\): a zip bomb, not a dataset")


def test_more_than_the_extraction_limit(channel, monkeypatch):
    write_zip(channel / "export.zip", cvat_members({"default": 3})[0])
    monkeypatch.setenv("SEMSEG_MAX_EXTRACTED_BYTES", "10000")
    refused("would extract .* MiB, more than the 0.0 MiB allowed; raise SEMSEG_MAX_EXTRACTED_BYTES")


def test_a_truncated_zip(channel):
    path = write_zip(channel / "export.zip", cvat_members({"default": 3})[0])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused("is not a readable zip file .*; it may be cut short, so upload it again")


def test_a_damaged_member(channel):
    path = write_zip(channel / "export.zip", cvat_members({"default": 3})[0])
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("task_1/JPEGImages/default_000.jpg")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 100
    data[start : start + 50] = bytes(50)
    path.write_bytes(bytes(data))
    refused("The member 'task_1/JPEGImages/default_000.jpg' of the dataset archive .* could not be read")


def test_a_mask_colour_with_two_names(channel):
    members = cvat_members({"default": 3})[0]
    members["task_1/labelmap.txt"] = (LABELMAP + "lorry:250,50,83::\n").encode()
    write_zip(channel / "export.zip", members)
    refused("gives the colour 250,50,83 two names \\('disc' and 'lorry' on line 6\\)")


def run_semseg_train(dataset: Path, output: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SEMSEG, "train", "--dataset", str(dataset), "--output", str(output), "--use_pretrained_model", "False"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


BAD_LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:250,50\n"  # a colour of two channels


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            {"task_1/../../escape.txt": b"escaped"},
            "holds the member 'task_1/../../escape.txt', which has an empty, '.' or '..' part; refusing",
        ),
        ({"task_1/labelmap.txt": BAD_LABELMAP.encode()}, "Line 3 of task_1/labelmap.txt ('car:250,50') does not parse"),
    ],
    ids=["dot-dot member", "labelmap line"],
)
def test_the_job_ends_with_one_sentence_in_the_failure_file(tmp_path, extra, message):
    work = tmp_path / "work"
    export = write_zip(work / "export.zip", {**cvat_members({"default": 3})[0], **extra})
    result = run_semseg_train(export, work / "job")
    assert result.returncode == 1, result.stdout[-3000:]
    failure = (work / "job" / "output" / "failure").read_text()
    assert message in failure and failure.count("\n") == 1 and "Traceback" not in result.stdout
    assert f"The job failed: {failure.strip()}" in result.stdout
    expected = {"export.zip", "job/input/data/dataset/export.zip", "job/output/failure"}
    expected |= {f"job/input/config/{name}.json" for name in ("hyperparameters", "inputdataconfig", "resourceconfig")}
    assert files_under(work) == expected
    assert not [p for p in tmp_path.parent.rglob("escape.txt")]
