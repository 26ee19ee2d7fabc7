"""Hostile training input: each case trains correctly or ends with exit 1 and one sentence in
output/failure; never a traceback, exit 2 or a hang, and nothing already written is lost."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from conftest import save_image, save_mask
from harness.trainjob import make_tree, run_train
from PIL import Image

from semseg import paths

pytestmark = pytest.mark.slow  # every test here runs train


def assert_one_sentence_failure(job, *fragments: str) -> None:
    assert job.returncode == 1, job.log[-3000:]
    assert job.failure is not None, job.log[-3000:]
    assert "\n" not in job.failure and "Traceback" not in job.failure, job.failure
    for fragment in fragments:
        assert fragment in job.failure, job.failure


def assert_no_internal_error(job) -> None:
    assert job.returncode in (0, 1), job.log[-3000:]
    assert "Traceback" not in job.log and "Internal error" not in job.log, job.log[-3000:]
    if job.returncode == 1:
        assert_one_sentence_failure(job)


def data(root: Path, channel: str) -> Path:
    return root / "input" / "data" / channel


# ---- the model channel ---------------------------------------------------------------------------


def model_channel(root: Path) -> Path:
    channel = data(root, "model")
    channel.mkdir(parents=True, exist_ok=True)
    return channel


def test_model_channel_whose_hyperparameters_are_a_json_list(tmp_path):
    root = make_tree(tmp_path)
    (model_channel(root) / "hyperparams.json").write_text('["num_classes", 4]')
    assert_one_sentence_failure(run_train(root), "hyperparams.json", "must hold a JSON object")


def test_model_channel_with_damaged_weights(tmp_path):
    root = make_tree(tmp_path)
    channel = model_channel(root)
    hyperparameters = json.loads((root / "input" / "config" / "hyperparameters.json").read_text())
    (channel / "hyperparams.json").write_text(json.dumps(hyperparameters))
    weights = channel / "model_best.params"
    mx.nd.save(str(weights), {"conv0_weight": mx.nd.ones((64, 3, 7, 7))})
    weights.write_bytes(weights.read_bytes()[:20000])  # cut off, as by an interrupted copy
    assert_one_sentence_failure(run_train(root), "model_best.params", "could not be loaded")


def test_model_archive_that_is_not_a_tar_archive(tmp_path):
    root = make_tree(tmp_path)
    (model_channel(root) / "model.tar.gz").write_bytes(b"PK\x03\x04 this is a zip, not a tar.gz" * 20)
    assert_one_sentence_failure(run_train(root), "model.tar.gz", "is not a tar archive")


def test_model_archive_beyond_the_extraction_cap(tmp_path):
    root = make_tree(tmp_path)
    archive = model_channel(root) / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        member = tarfile.TarInfo("model_best.params")
        member.size = 3 * 2**20  # zeros compress to almost nothing: the archive is small, its content is not
        tar.addfile(member, io.BytesIO(bytes(member.size)))
    scratch = tmp_path / "scratch"  # where the job unpacks the model channel
    scratch.mkdir()
    job = run_train(root, env={"SEMSEG_MAX_EXTRACTED_BYTES": str(2**20), "TMPDIR": str(scratch)})
    assert_one_sentence_failure(job, "model.tar.gz", "would extract 3.0 MiB", "SEMSEG_MAX_EXTRACTED_BYTES")
    assert not [p for p in scratch.rglob("*") if p.is_file()], "the archive was extracted"


# ---- hyperparameters ------------------------------------------------------------------------------


def write_hyperparameters(root: Path, text: str) -> None:
    (root / "input" / "config" / "hyperparameters.json").write_text(text)


def test_hyperparameters_that_are_a_json_list(tmp_path):
    root = make_tree(tmp_path)
    write_hyperparameters(root, '["epochs", "1"]')
    assert_one_sentence_failure(run_train(root), "hyperparameters.json", "must hold a JSON object")


def test_hyperparameters_given_as_numbers_instead_of_strings(tmp_path):
    root = make_tree(tmp_path)
    path = root / "input" / "config" / "hyperparameters.json"
    values = json.loads(path.read_text())
    numbers = {
        key: (float(value) if "." in value else int(value)) if value.isdigit() or "." in value else value
        for key, value in values.items()
    }
    path.write_text(json.dumps(numbers))
    job = run_train(root)
    assert job.returncode == 0, job.log[-3000:]


def test_a_null_hyperparameter_is_refused_not_replaced_by_its_default(tmp_path):
    root = make_tree(tmp_path)
    path = root / "input" / "config" / "hyperparameters.json"
    values = json.loads(path.read_text())
    path.write_text(json.dumps({**values, "epochs": None}))
    assert_one_sentence_failure(run_train(root), "'epochs'", "null")


# ---- masks with nothing to learn ------------------------------------------------------------------


def fill_masks(directory: Path, value: int) -> None:
    for mask in directory.iterdir():
        with Image.open(mask) as image:
            size = image.size
        save_mask(mask, np.full((size[1], size[0]), value))


def test_train_masks_without_a_labelled_pixel_fail_the_job(tmp_path):
    root = make_tree(tmp_path)
    fill_masks(data(root, "train_annotation"), 255)
    assert_one_sentence_failure(run_train(root), "train", "no labelled pixel")


def test_validation_masks_without_a_labelled_pixel_are_warned_about(tmp_path):
    root = make_tree(tmp_path)
    fill_masks(data(root, "validation_annotation"), 255)
    job = run_train(root)
    assert job.returncode == 0, job.log[-3000:]
    assert "validation masks have no labelled pixel" in job.log


# ---- bad datasets, all at once --------------------------------------------------------------------


def test_a_dataset_of_odd_files_trains_on_what_it_can_read(tmp_path):
    root = make_tree(tmp_path, train=6)
    images, masks = data(root, "train"), data(root, "train_annotation")
    (images / "empty.jpg").write_bytes(b"")
    save_mask(masks / "empty.png", np.zeros((8, 8)))
    save_image(images / "emptymask.jpg", 8, 8)
    (masks / "emptymask.png").write_bytes(b"")
    (images / "folder.jpg").mkdir()
    (masks / "folder.png").mkdir()
    (images / "loop.jpg").symlink_to(images / "loop.jpg")
    os.symlink(b"loop-a.png", os.path.join(bytes(masks), b"loop-b.png"))
    os.symlink(b"loop-b.png", os.path.join(bytes(masks), b"loop-a.png"))
    (images / "subdir").mkdir()
    (images / "subdir" / "cycle").symlink_to(images)
    latin1 = b"caf\xe9"  # a name that is not UTF-8
    save_image(Path(os.fsdecode(bytes(images) + b"/" + latin1 + b".jpg")), 96, 96)
    save_mask(Path(os.fsdecode(bytes(masks) + b"/" + latin1 + b".png")), np.ones((96, 96)))
    job = run_train(root)
    assert_no_internal_error(job)
    assert job.returncode == 0, job.failure
    for odd in ("train/empty.jpg", "train/folder.jpg", "train/loop.jpg", "train_annotation/emptymask.png"):
        assert f"{odd} is not a readable image file" in job.log, odd


def test_a_jpeg_mask_is_refused_in_one_sentence(tmp_path):
    root = make_tree(tmp_path)
    mask = sorted(data(root, "train_annotation").iterdir())[0]
    with Image.open(mask) as image:
        image.convert("RGB").save(mask.with_suffix(".jpg"), format="JPEG")
    mask.unlink()
    mask.with_suffix(".jpg").rename(mask)  # a JPEG under a .png name, as an export tool might write it
    assert_one_sentence_failure(run_train(root), mask.name)


@pytest.mark.parametrize("width, height", [(65000, 10), (7300, 5480)])  # a strip; 40 megapixels
def test_very_long_and_very_large_images_train_or_fail_in_one_sentence(tmp_path, width, height):
    root = make_tree(tmp_path)
    image = sorted(data(root, "train").iterdir())[0]
    mask = data(root, "train_annotation") / (image.stem + ".png")
    Image.new("RGB", (width, height), (120, 90, 60)).save(image, quality=50)
    save_mask(mask, np.ones((height, width)))
    job = run_train(root, timeout=600)
    assert_no_internal_error(job)
    assert job.returncode == 0, job.failure  # resized to base_size and cropped like any other image


# ---- a full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_filesystem():
    """``mount(directory, megabytes)``: a tmpfs of that size on ``directory``, unmounted after the test.

    Mounting needs root; where the machine refuses it, the test is skipped.
    """
    mounted = []

    def mount(directory: Path, megabytes: int) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        command = ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(directory)]
        if subprocess.run(command, capture_output=True).returncode != 0:
            pytest.skip("this machine does not let the tests mount a small tmpfs")
        mounted.append(directory)
        return directory

    yield mount
    for directory in mounted:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def test_a_full_disk_while_writing_the_model_fails_in_one_sentence_and_keeps_earlier_files(tmp_path, small_filesystem):
    root = make_tree(tmp_path)
    model = small_filesystem(root / "model", 4)
    earlier = {paths.BEST_PARAMS: b"weights of an earlier run", paths.HYPERPARAMS_FILE: b'{"epochs": "1"}\n'}
    for name, content in earlier.items():
        (model / name).write_bytes(content)
    job = run_train(root)
    assert_one_sentence_failure(job, str(model / paths.BEST_PARAMS), "no space left")
    assert (model / paths.BEST_PARAMS).read_bytes() == earlier[paths.BEST_PARAMS]
    assert sorted(p.name for p in model.iterdir()) == sorted(earlier), "a half-written file was left behind"


def test_a_full_disk_while_writing_a_checkpoint_fails_in_one_sentence(tmp_path, small_filesystem):
    root = make_tree(tmp_path)
    checkpoints = small_filesystem(root / "checkpoints", 4)
    job = run_train(root)
    assert_one_sentence_failure(job, str(checkpoints), "no space left")
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")], "a half-written checkpoint was left"
