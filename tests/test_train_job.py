"""The ``train`` command end to end: exit code, artifacts, log lines and metric regexes, like the built-in."""

from __future__ import annotations

import json
import os
import re

import mxnet as mx
import numpy as np
import pytest
from harness.serving_helpers import TRAIN_LOG, trained_model
from harness.trainjob import MODEL_FILES, WITH_EXPORT, make_tree, run_train

from semseg import cpu_threads
from semseg.logs import METRIC_REGEXES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fcn_job(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("fcn"), epochs="2", _logging_frequency="1", **WITH_EXPORT)
    job = run_train(root)
    assert job.returncode == 0, job.log[-3000:]
    return job


def test_writes_the_three_built_in_artifacts_and_an_onnx_export(fcn_job):
    names = sorted(p.name for p in fcn_job.model_dir.iterdir())
    assert names == ["class_pixels.json", "hyperparams.json", "model.onnx", "model_algo-1", "model_best.params"]
    report = json.loads((fcn_job.root / "output" / "data" / "metrics.json").read_text())
    stored = json.loads((fcn_job.model_dir / "class_pixels.json").read_text())["class_pixels"]
    assert stored == report["train_class_pixels"] and len(stored) == 4 and sum(stored) > 0  # the drift gauge's base
    hyperparams = json.loads((fcn_job.model_dir / "hyperparams.json").read_text())
    assert hyperparams["algorithm"] == "fcn" and hyperparams["num_classes"] == "4"
    assert hyperparams["crop_size"] == "32" and all(isinstance(v, str) for v in hyperparams.values())


def test_logs_the_built_in_lines(fcn_job):
    log = fcn_job.log
    assert "Reading default configuration from" in log and "Final configuration: {" in log
    assert f"Merging with provided configuration from {fcn_job.root}/input/config/hyperparameters.json" in log
    assert "#label_map train :{'scale': 1}" in log
    assert "LRScheduler setup: iters per epoch: 2, num_epochs 2" in log
    progress = r"#progress_notice\. epoch: 0, iterations: 1 speed: [0-9.e+-]+ samples/sec learning_rate: 0\.\d{6}"
    assert re.search(progress, log)
    assert re.search(r"#throughput_metric\. host: algo-1, epoch: 1, train throughput: [0-9.e+-]+ samples/sec\.", log)
    assert re.search(
        r"#throughput_metric\. host: algo-1, epoch: 1, validation throughput: [0-9.e+-]+ samples/sec\.", log
    )
    assert "#progress_metric: host=algo-1, completed 50 % of epochs" in log
    assert "#progress_metric: host=algo-1, completed 100 % of epochs" in log
    assert f"Serializing model to {fcn_job.model_dir}/model_algo-1" in log
    assert re.search(r'^#metrics \{"Metrics": \{"epochs": \{"count": 1, "max": 2,', log, re.M)


def test_logs_how_many_cpu_threads_mxnet_was_given(fcn_job):
    expected = os.environ.get(cpu_threads.VARIABLE) or str(cpu_threads.math_threads())
    assert f"MXNet computes on {expected} CPU thread(s) (OMP_NUM_THREADS)" in fcn_job.log


def test_metric_definitions_of_the_readme_match_every_epoch(fcn_job):
    for name, regex in METRIC_REGEXES.items():
        values = [float(v) for v in re.findall(regex, fcn_job.log)]
        assert len(values) == 2, name
        if name != "train:loss":
            assert all(0.0 <= v <= 1.0 for v in values), name


def test_writes_history_and_a_per_class_report(fcn_job):
    report = json.loads((fcn_job.root / "output" / "data" / "metrics.json").read_text())
    assert [entry["epoch"] for entry in report["history"]] == [0, 1]
    best = report["best_epoch"]
    assert len(best["per_class_iou"]) == 4 and np.array(best["confusion_matrix"]).shape == (4, 4)
    assert len(best["per_class_dice"]) == 4 and best["mean_dice"] == pytest.approx(np.mean(best["per_class_dice"]))
    for iou, dice in zip(best["per_class_iou"], best["per_class_dice"], strict=True):
        assert dice == pytest.approx(2 * iou / (1 + iou))  # the same counts: Dice = 2 IoU / (1 + IoU)
    logged = [float(v) for v in re.findall(METRIC_REGEXES["validation:mIOU"], fcn_job.log)]
    assert best["mIOU"] == pytest.approx(max(logged))


def test_weights_load_into_a_plain_gluoncv_network(fcn_job):
    from gluoncv.model_zoo import FCN

    net = FCN(4, backbone="resnet50", aux=True, pretrained_base=False, crop_size=32)
    for name in ("model_algo-1", "model_best.params"):
        net.load_parameters(str(fcn_job.model_dir / name))
        main, aux = net(mx.nd.zeros((1, 3, 32, 32)))
        assert main.shape == (1, 4, 32, 32)


def test_incremental_training_continues_from_a_model_channel(fcn_job, tmp_path):
    import tarfile

    root = make_tree(tmp_path / "ml")
    channel = root / "input" / "data" / "model"
    channel.mkdir()
    with tarfile.open(channel / "model.tar.gz", "w:gz") as archive:
        for path in fcn_job.model_dir.iterdir():
            archive.add(path, arcname=path.name)
    job = run_train(root)
    assert job.returncode == 0, job.log[-2000:]
    assert "Incremental training: initializing all weights from model_best.params" in job.log
    # TINY's _onnx False: no export, and none of the model channel's is carried over as if it were this model's
    assert "No ONNX export: the hyperparameter _onnx is False, so the endpoint serves through MXNet" in job.log
    assert not (root / "model" / "model.onnx").exists()


@pytest.mark.parametrize("algorithm", ["psp", "deeplab"])
def test_every_algorithm_trains(tmp_path_factory, algorithm):
    """On ResNet-50, through the session's shared run of each algorithm (the serving and int8 tests use it too)."""
    root = trained_model(tmp_path_factory.getbasetemp() / "serving-models", algorithm)
    log = (root / TRAIN_LOG).read_text()
    assert len(re.findall(METRIC_REGEXES["validation:mIOU"], log)) == 1
    assert MODEL_FILES <= {p.name for p in (root / "model").iterdir()}


def test_the_resnet_101_backbone_trains(tmp_path):
    root = make_tree(tmp_path, train=2, validation=2, backbone="resnet-101", num_training_samples="2")
    job = run_train(root)
    assert job.returncode == 0, job.log[-2000:]
    assert len(job.lines(METRIC_REGEXES["validation:mIOU"])) == 1
    assert MODEL_FILES <= {p.name for p in job.model_dir.iterdir()}


def test_a_job_trains_with_the_strong_augmentation(tmp_path):
    root = make_tree(tmp_path, _augmentation_type="strong", augment_rotation_degrees="20", augment_hue="0.1")
    job = run_train(root)
    assert job.returncode == 0, job.log[-2000:]
    assert len(job.lines(METRIC_REGEXES["validation:mIOU"])) == 1
    assert json.loads((job.model_dir / "hyperparams.json").read_text())["_augmentation_type"] == "strong"
