"""Every user-caused training failure: one clear sentence in output/failure, a non-zero exit, and
nothing already in model/ lost or half-written."""

from __future__ import annotations

import io
import json
import shutil
import signal
import tarfile
import time

import numpy as np
import pytest
from conftest import save_mask
from harness.trainjob import BARE_ENV, make_tree, run_train, start_train

pytestmark = pytest.mark.slow  # every test here runs train


def assert_user_failure(job, message: str) -> None:
    assert job.returncode == 1, job.log[-2000:]
    assert job.failure is not None and message in job.failure, job.failure
    assert "\n" not in job.failure and "Traceback" not in job.failure


def test_invalid_enum_value(tmp_path):
    job = run_train(make_tree(tmp_path, optimizer="adadelta"))
    assert_user_failure(
        job,
        "The value 'adadelta' is not valid for the 'optimizer' hyperparameter which accepts "
        "one of the following: 'sgd', 'adam', 'rmsprop', 'adagrad', 'nag'",
    )


def test_missing_required_hyperparameter(tmp_path):
    root = make_tree(tmp_path)
    path = root / "input" / "config" / "hyperparameters.json"
    values = json.loads(path.read_text())
    del values["num_classes"]
    path.write_text(json.dumps(values))
    assert_user_failure(run_train(root), "The 'num_classes' hyperparameter is required")


def test_hyperparameters_file_that_is_not_json(tmp_path):
    root = make_tree(tmp_path)
    (root / "input" / "config" / "hyperparameters.json").write_text("{num_classes: 4")
    assert_user_failure(run_train(root), "hyperparameters.json is not valid JSON")


def test_missing_channel(tmp_path):
    root = make_tree(tmp_path)
    shutil.rmtree(root / "input" / "data" / "validation_annotation")
    assert_user_failure(run_train(root), "The 'validation_annotation' channel is missing")


def test_no_image_mask_pairs(tmp_path):
    root = make_tree(tmp_path)
    for mask in (root / "input" / "data" / "train_annotation").iterdir():
        mask.rename(mask.with_name("other-" + mask.name))
    assert_user_failure(run_train(root), "No image/mask pairs found")


def test_mask_and_image_of_different_sizes(tmp_path):
    root = make_tree(tmp_path)
    save_mask(root / "input" / "data" / "train_annotation" / "0001.png", np.zeros((10, 10)))
    assert_user_failure(run_train(root), "a mask must have the size of its image")


def test_unreadable_label_map(tmp_path):
    root = make_tree(tmp_path)
    (root / "input" / "data" / "label_map").mkdir()
    (root / "input" / "data" / "label_map" / "train_label_map.json").write_text('{"scale": ')
    assert_user_failure(run_train(root), "train_label_map.json is not valid JSON")


def test_corrupt_files_are_skipped_with_a_warning(tmp_path):
    root = make_tree(tmp_path)
    (root / "input" / "data" / "train" / "0002.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    job = run_train(root)
    assert job.returncode == 0, job.log[-2000:]
    assert "0002.jpg is not a readable image file" in job.log and "1 masks in" in job.log


def test_pretrained_weights_not_staged(tmp_path):
    root = make_tree(tmp_path, use_pretrained_model="True")
    job = run_train(root, env={"MXNET_HOME": str(tmp_path / "empty-mxnet-home")})
    assert_user_failure(job, "use_pretrained_model is True but the ImageNet weights for resnet-50 are not staged")
    assert "use_pretrained_model to False" in job.failure


def _model_channel_with(root, hyperparams: dict | None = None, extra_member: tarfile.TarInfo | None = None):
    channel = root / "input" / "data" / "model"
    channel.mkdir()
    with tarfile.open(channel / "model.tar.gz", "w:gz") as archive:
        if hyperparams is not None:
            data = json.dumps(hyperparams).encode()
            info = tarfile.TarInfo("hyperparams.json")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if extra_member is not None:
            archive.addfile(extra_member, io.BytesIO(b"x" * extra_member.size))


def test_incremental_training_with_another_architecture(tmp_path):
    root = make_tree(tmp_path)
    previous = json.loads((root / "input" / "config" / "hyperparameters.json").read_text())
    _model_channel_with(root, {**previous, "num_classes": "21", "algorithm": "psp"})
    job = run_train(root)
    assert_user_failure(job, "algorithm is 'fcn' here but 'psp' in the model")
    assert "num_classes is 4 here but 21 in the model" in job.failure


@pytest.mark.parametrize(
    "name, kind", [("../escape.txt", tarfile.REGTYPE), ("/etc/evil", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)]
)
def test_hostile_model_archive_is_refused(tmp_path, name, kind):
    root = make_tree(tmp_path / "ml")
    member = tarfile.TarInfo(name)
    member.type = kind
    member.size = 1 if kind == tarfile.REGTYPE else 0
    member.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
    _model_channel_with(root, None, member)
    job = run_train(root)
    assert_user_failure(job, "refusing to extract it")
    assert not (tmp_path / "escape.txt").exists()


def test_a_failed_run_leaves_earlier_artifacts_untouched(tmp_path):
    root = make_tree(tmp_path, optimizer="adadelta")
    earlier = {"model_best.params": b"earlier best", "hyperparams.json": b'{"earlier": "run"}'}
    for name, content in earlier.items():
        (root / "model" / name).write_bytes(content)
    run_train(root)
    assert {p.name: p.read_bytes() for p in (root / "model").iterdir()} == earlier


def test_sigterm_stops_training_promptly_with_loader_processes(tmp_path):
    root = make_tree(tmp_path, epochs="50", _logging_frequency="1", _workers="2")
    process = start_train(root, env=BARE_ENV)
    for line in process.stdout:
        if "#progress_notice" in line:
            break
    sent = time.time()
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    code = process.wait(timeout=60)
    assert code == 143 and time.time() - sent < 30
    assert "Received SIGTERM: training stopped before completion" in rest
    assert not (root / "model" / "model_algo-1").exists()


def test_an_image_cut_short_after_its_header_fails_naming_it(tmp_path):
    root = make_tree(tmp_path, train=2, num_training_samples="2")  # one batch: both images are drawn
    path = root / "input" / "data" / "train" / "0001.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # the header reads; the pixels do not
    job = run_train(root)
    assert_user_failure(job, "0001.jpg or its mask could not be decoded")


def test_a_thread_count_mxnet_would_abort_on(tmp_path):
    job = run_train(make_tree(tmp_path), env={"OMP_NUM_THREADS": "four"})
    assert_user_failure(job, "OMP_NUM_THREADS must be a whole number of threads of at least 1, not 'four'")
