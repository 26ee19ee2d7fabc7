"""Learning is asserted, not assumed: a short CPU run must segment a task it can learn.

The task is the sample data's four classes (background, discs, rectangles, triangles, each with
its own hue on a noisy background). FCN-ResNet-50 from scratch (no ImageNet weights exist
offline), crop 64, batch 4, Adam; the same settings ``semseg demo`` uses. The same task as a CVAT
export zip, through ``semseg train --dataset``, must learn as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness.cvat_export import NAMES, cvat_members, write_zip
from harness.trainjob import quality

from semseg.demo import DEMO_HYPERPARAMETERS

REQUIRED_MIOU = 0.80

pytestmark = pytest.mark.slow


def test_a_short_cpu_run_reaches_the_stated_miou(learnt_model):
    job = learnt_model
    assert job.returncode == 0, job.log[-3000:]
    mious = quality(job.log)["validation:mIOU"]
    assert len(mious) == int(DEMO_HYPERPARAMETERS["epochs"])
    assert max(mious) >= REQUIRED_MIOU, mious


def train_cvat_zip(tmp_path: Path, **overrides: str) -> tuple[Path, list[float]]:
    """48 pairs in CVAT's single 'default' subset, RGB masks, one top-level folder, a third held out,
    through ``semseg train --dataset`` with the demo's settings; num_classes is left out: the label
    map gives it. Returns the model folder and the validation mIoU of each epoch."""
    export = write_zip(tmp_path / "export.zip", cvat_members({"default": 48})[0])
    settings = {**DEMO_HYPERPARAMETERS, "_int8": "False", **overrides}  # the int8 copy is tested on the run above
    flags = [arg for name, value in settings.items() for arg in (f"--{name}", value)]
    command = [str(Path(sys.executable).parent / "semseg"), "train", "--dataset", str(export)]
    command += ["--output", str(tmp_path / "job"), "--validation_fraction", "0.34", *flags]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:]
    model = tmp_path / "job" / "model"
    assert "16 validate" in result.stdout and f"Model: {model}" in result.stdout
    assert json.loads((model / "hyperparams.json").read_text())["num_classes"] == "4"
    assert [entry["name"] for entry in json.loads((model / "classes.json").read_text())["classes"]] == list(NAMES)
    mious = quality(result.stdout)["validation:mIOU"]
    assert len(mious) == int(settings["epochs"])
    return model, mious


def test_a_cvat_export_zip_trains_through_semseg_train_dataset(tmp_path):
    """The short form of the next test: the same zip and command, one epoch of 4 iterations."""
    model, _ = train_cvat_zip(tmp_path, epochs="1", num_training_samples="16")
    assert (model / "model.onnx").is_file()


@pytest.mark.long
def test_a_cvat_export_zip_of_the_task_reaches_the_same_miou(tmp_path):
    _, mious = train_cvat_zip(tmp_path)
    assert max(mious) >= REQUIRED_MIOU, mious


# unet resnet-18 on the thin-structure task (cracks and rings 1-3 px wide, tests/harness/tasks.py), the
# budget of bench/architectures.py: measured 0.50 (cracks) and 0.53 (rings), fcn resnet-50 0.00 and 0.00.
THIN_CLASS_IOU = 0.35


def test_unet_learns_thin_structures_that_fcn_cannot_draw(tmp_path):
    from harness.tasks import LEARNING, write_task
    from harness.trainjob import run_train

    from semseg import paths

    root = write_task("thin", tmp_path, 96, 32, {**LEARNING, "algorithm": "unet", "backbone": "resnet-18"})
    job = run_train(root)
    assert job.returncode == 0, job.log[-2000:]
    best = json.loads((paths.output_data_dir(base=root) / "metrics.json").read_text())["best_epoch"]
    background, cracks, rings = best["per_class_iou"]
    assert min(cracks, rings) >= THIN_CLASS_IOU, best["per_class_iou"]


# unet resnet-18 on the digits task (shape, not colour, tells its eleven classes apart) with the
# augmentation that keeps shapes (no mirror, a rescale of 0.8 to 1.25), 160 images, 30 epochs: measured
# mIoU 0.604; the built-in's recipe at the same budget 0.201, the narrow rescale with the mirror 0.503.
DIGITS_MIOU = 0.45


@pytest.mark.long
def test_unet_learns_digits_when_the_augmentation_keeps_their_shapes(tmp_path):
    from harness.tasks import LEARNING, SHAPE_AUGMENTATION, write_task
    from harness.trainjob import run_train

    from semseg import paths

    hyperparameters = {**LEARNING, **SHAPE_AUGMENTATION, "algorithm": "unet", "backbone": "resnet-18", "epochs": "30"}
    root = write_task("digits", tmp_path, 160, 32, hyperparameters)
    job = run_train(root, timeout=3600)
    assert job.returncode == 0, job.log[-2000:]
    best = json.loads((paths.output_data_dir(base=root) / "metrics.json").read_text())["best_epoch"]
    assert best["mIOU"] >= DIGITS_MIOU, best["per_class_iou"]
