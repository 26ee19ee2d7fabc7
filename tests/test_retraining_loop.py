"""The retraining loop as users run it: model v1, ``semseg predict --format cvat`` on new images,
the zip corrected (in CVAT; here its class masks replaced by the true ones) and exported, then
``semseg train --dataset corrected.zip --model v1`` (incremental: the dataset must name v1's classes)
and ``semseg evaluate --model v2 --baseline v1`` on held-out data.

The fast tests: ``--model`` laid out as the ``model`` channel, and a dataset whose classes differ from
the model's refused in one sentence (failure file, exit code 1) before anything trains, while the
same classes in CVAT's sorted order keep the model's class ids. The slow one runs the loop on the
session's trained model (``learnt_model``) with a short second training."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import time
import zipfile
from argparse import ArgumentParser
from pathlib import Path

import numpy as np
import pytest
from harness.cvat_export import COLOURS, NAMES, cvat_members, write_zip
from harness.s3jobs import SEMSEG
from PIL import Image
from test_dataset_channel import prepared_masks

from semseg import classes, local_train, paths, sample_data
from semseg.classes import ClassTable
from semseg.data import dataset_channel

ARCHITECTURE = {"algorithm": "fcn", "backbone": "resnet-50", "crop_size": "64", "num_classes": "4"}


def model_dir(path: Path, table: ClassTable | None) -> Path:
    """A model's files as far as the class check reads them (no weights: the refusal comes first)."""
    path.mkdir(parents=True)
    (path / paths.HYPERPARAMS_FILE).write_text(json.dumps(ARCHITECTURE))
    if table is not None:
        classes.save(table, path)
    return path


def tarball(model: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        for file in model.iterdir():
            archive.add(file, arcname=file.name)
    return target


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SEMSEG, "train", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("packed", [False, True], ids=["directory", "model.tar.gz"])
def test_a_dataset_whose_classes_differ_from_the_models_is_refused_in_one_sentence(tmp_path, packed):
    v1 = model_dir(tmp_path / "v1", ClassTable(("background", "disc", "square", "triangle"), COLOURS))
    model = tarball(v1, tmp_path / "model.tar.gz") if packed else v1
    dataset = write_zip(tmp_path / "corrected.zip", cvat_members({"default": 4})[0])
    output = tmp_path / "v2"

    started = time.monotonic()
    run = train("--dataset", str(dataset), "--model", str(model), "--output", str(output), "--epochs", "1")

    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    sentence = (
        "The dataset's classes differ from those of the model in the 'model' channel (task_1/labelmap.txt adds "
        "'rectangle' and it lacks 'square'); incremental training keeps the model's classes ('background', 'disc', "
        "'square', 'triangle'), so label with those, or train a new model without the 'model' channel"
    )
    assert (output / "output" / "failure").read_text().strip() == sentence
    assert f"The job failed: {sentence}" in run.stdout and "Traceback" not in run.stdout + run.stderr
    assert not (output / "model" / paths.BEST_PARAMS).exists()
    print(f"refused in {time.monotonic() - started:.1f} s")


@pytest.fixture
def job(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "ml"))
    paths.channel_dir("dataset").mkdir(parents=True)
    return tmp_path / "ml"


def test_the_same_classes_in_another_order_keep_the_models_class_ids(job, tmp_path, caplog):
    caplog.set_level("INFO")
    order = ("disc", "triangle", "background", "rectangle")  # the model's; the dataset's label map has NAMES
    model_dir(paths.channel_dir("model"), ClassTable(order, ((1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4))))
    members, truth = cvat_members({"default": 6})
    write_zip(paths.channel_dir("dataset") / "corrected.zip", members)

    dataset_channel.prepare({"num_classes": 4, "validation_fraction": 0.34, "_seed": 0})

    to_model = np.array([order.index(name) for name in NAMES], dtype=np.uint8)
    for name, ids in {**prepared_masks("train"), **prepared_masks("validation")}.items():
        np.testing.assert_array_equal(ids, to_model[truth[name]])
    saved = classes.load(paths.model_dir(), 4)
    assert saved.names == order and saved.colors == tuple(COLOURS[NAMES.index(name)] for name in order)
    assert (
        "task_1/labelmap.txt names the model channel's classes in another order; they keep the model's class ids: "
        "0 disc, 1 triangle, 2 background, 3 rectangle" in caplog.text
    )


def test_a_model_without_class_names_takes_the_datasets(job):
    model_dir(paths.channel_dir("model"), None)
    write_zip(paths.channel_dir("dataset") / "corrected.zip", cvat_members({"default": 4})[0])
    dataset_channel.prepare({"num_classes": 4, "validation_fraction": 0.25, "_seed": 0})
    assert classes.load(paths.model_dir(), 4).names == NAMES


def test_model_is_laid_out_as_the_model_channel_and_a_rerun_without_it_has_none(tmp_path):
    v1 = model_dir(tmp_path / "v1", None)
    packed = tarball(v1, tmp_path / "model.tar.gz")
    dataset = write_zip(tmp_path / "corrected.zip", cvat_members({"default": 4})[0])
    root = tmp_path / "v2"

    local_train.lay_out(dataset, root, {}, v1)
    channel = paths.channel_dir("model", base=root)
    assert channel.resolve() == v1.resolve()
    config = json.loads(paths.input_data_config_file(root).read_text())
    assert config["model"] == {"TrainingInputMode": "File", "ContentType": "application/x-sagemaker-model"}
    local_train.lay_out(dataset, root, {}, packed)
    assert [p.name for p in channel.iterdir()] == ["model.tar.gz"] and (channel / "model.tar.gz").resolve() == packed
    local_train.lay_out(dataset, root, {})
    assert not channel.exists() and "model" not in json.loads(paths.input_data_config_file(root).read_text())


def test_a_model_that_is_the_runs_own_output_is_refused(tmp_path):
    root = tmp_path / "v1"
    model_dir(root / "model", None)
    (tmp_path / "d.zip").write_bytes(b"")
    parser = ArgumentParser()
    local_train.add_arguments(parser)
    args = parser.parse_args(["--dataset", str(tmp_path / "d.zip"), "--output", str(root), "--model", str(root)])
    with pytest.raises(SystemExit) as refused:
        local_train.main(args)
    written = (root / "model").resolve()
    assert (
        str(refused.value)
        == f"semseg train: --model {root} is the model this run writes ({written}); give another --output"
    )


# The loop on synthetic data. v1 is the session's demo training run (about 0.8 mIoU), given the demo's
# class names; v2 trains from it on the corrected predictions of new images, briefly and gently.
NEW_IMAGES, HELD_OUT = 48, 48
NEW_SEED, HELD_OUT_SEED = 101, 202
# v1's recipe (the demo's: crops of 64 from images scaled to 96, Adam, 160 crops an epoch), with batches of 16
# and a low learning rate for a short run: batches of 4 re-estimate BatchNorm's running statistics from too
# few crops (measured: with the learning rate at 1e-7, 20 batches of 4 alone took held-out mIoU from 0.81 to
# 0.53, 10 batches of 16 to 0.83). The architecture comes from v1 itself.
V2_TRAINING = {
    "use_pretrained_model": "False",
    "base_size": "96",
    "mini_batch_size": "16",
    "validation_mini_batch_size": "16",
    "num_training_samples": "160",
    "optimizer": "adam",
    "learning_rate": "0.0001",
    "epochs": "2",
    "_int8": "False",
    "_onnx": "False",
}
# Measured with this recipe. The session's v1 is not the same from run to run (its training is not
# bit-reproducible on CPU): four runs scored 0.839, 0.875, 0.879 and 0.894 on these held-out images, and v2 - v1
# was +0.053 (95% bootstrap interval [+0.022, +0.095]), +0.015 ([+0.004, +0.028]), +0.017 ([+0.008, +0.027]) and,
# from the strongest v1, -0.010 ([-0.022, +0.001]); v2's training takes 29 s of the test's 40 s on two CPU cores;
# on fourteen other draws of new and held-out images (16 to 48 of each), +0.007 to +0.15. So "v2 scores at least
# v1" is asserted as the measurement can show it: the interval of v2 - v1 reaches zero (v2 is not measurably
# worse), and v2 is never more than GROSS_LOSS below v1 (batches of 4 instead of 16 cost up to 0.4).
GROSS_LOSS = 0.03


def named_v1(learnt_model, root: Path) -> Path:
    """The demo's model (its files linked, not copied) with the demo's class names (classes.json)."""
    (root / "model").mkdir(parents=True)
    for file in learnt_model.model_dir.iterdir():
        if file.is_file():
            os.link(file, root / "model" / file.name)
    classes.save(sample_data.CLASSES, root / "model")
    return root


def new_images(folder: Path, count: int, seed: int) -> dict[str, np.ndarray]:
    """Sample images never trained on, some in a sub-folder; name (as CVAT names it) -> true class ids."""
    truth, rng = {}, np.random.RandomState(seed)
    for i in range(count):
        image, mask = sample_data.make_pair(rng, *sample_data.DEFAULT_SIZES[i % len(sample_data.DEFAULT_SIZES)])
        name = f"camera_b/{i:03d}" if i % 4 == 3 else f"{i:03d}"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{name}.jpg", quality=95)
        truth[name] = np.asarray(mask, dtype=np.uint8)
    return truth


def corrected(predictions: Path, truth: dict[str, np.ndarray], target: Path) -> Path:
    """The predictions zip as CVAT would export it once an annotator has fixed every mask."""
    colours = np.asarray(sample_data.CLASSES.colors, dtype=np.uint8)
    with zipfile.ZipFile(predictions) as source, zipfile.ZipFile(target, "w") as archive:
        for name in source.namelist():
            data = source.read(name)
            if name.startswith("SegmentationClass/"):
                buffer = io.BytesIO()
                Image.fromarray(colours[truth[name[len("SegmentationClass/") : -len(".png")]]]).save(buffer, "PNG")
                data = buffer.getvalue()
            archive.writestr(name, data)
    return target


@pytest.mark.slow  # trains v2 (and needs the session's learnt_model)
def test_the_loop_v2_trained_from_v1_on_corrected_predictions_scores_at_least_v1(learnt_model, tmp_path):
    v1 = named_v1(learnt_model, tmp_path / "v1")
    truth = new_images(tmp_path / "new", NEW_IMAGES, seed=NEW_SEED)
    held_out = tmp_path / "held-out"
    sample_data.write_split(held_out / "test", held_out / "test_annotation", HELD_OUT, seed=HELD_OUT_SEED)
    timings = {}

    started = time.monotonic()
    predicted = subprocess.run(
        [SEMSEG, "predict", "--input", str(tmp_path / "new"), "--output", str(tmp_path / "preds.zip")]
        + ["--format", "cvat", "--model", str(v1)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    timings["predict"] = time.monotonic() - started
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    with zipfile.ZipFile(tmp_path / "preds.zip") as archive:
        assert archive.read("labelmap.txt").decode().splitlines()[1] == "background:0,0,0::"
    dataset = corrected(tmp_path / "preds.zip", truth, tmp_path / "corrected.zip")

    started = time.monotonic()
    flags = [f"--{name}={value}" for name, value in V2_TRAINING.items()]
    trained = train("--dataset", str(dataset), "--model", str(v1), "--output", str(tmp_path / "v2"), *flags)
    timings["train v2"] = time.monotonic() - started
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert (
        f"From the model {v1}, as incremental training needs: backbone=resnet-50, algorithm=fcn, crop_size=64"
        in trained.stdout
    )
    assert "Incremental training: initializing all weights from model_best.params" in trained.stdout
    assert classes.load(tmp_path / "v2" / "model", 4) == sample_data.CLASSES

    started = time.monotonic()
    evaluated = subprocess.run(
        [SEMSEG, "evaluate", "--model", str(tmp_path / "v2"), "--baseline", str(v1), "--data", str(held_out)]
        + ["--engine", "float32", "--output", str(tmp_path / "evaluation")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    timings["evaluate"] = time.monotonic() - started
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    result = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    v2_miou, v1_miou = result["model"]["mIoU"], result["baseline"]["mIoU"]
    interval = result["comparison"]["mIoU_difference"]
    print(
        f"v1 mIoU {v1_miou:.4f}, v2 mIoU {v2_miou:.4f}, difference {interval}; "
        + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items())
    )
    assert re.search(r"mIoU difference [+-]\d\.\d{4}, 95% bootstrap interval", evaluated.stdout)
    assert interval["high"] >= 0 and v2_miou >= v1_miou - GROSS_LOSS, (v1_miou, v2_miou, interval)
