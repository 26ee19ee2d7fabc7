"""Metrics, learning-rate schedules, optimizers and early stopping, each on known numbers."""

import numpy as np
import pytest

from semseg import hyperparameters
from semseg.evaluation.scores import ConfusionMatrix
from semseg.train.early_stopping import EarlyStopping
from semseg.train.optim import lr_schedule, optimizer_settings


def hp(**values):
    return hyperparameters.parse({"num_classes": "3", "num_training_samples": "10", **values})


def test_metrics_exclude_ignored_pixels_and_average_over_all_classes():
    matrix = ConfusionMatrix(3)
    labels = np.array([[0, 0, 1, -1], [1, 1, 0, -1]])
    predictions = np.array([[0, 1, 1, 2], [1, 1, 0, 2]])
    matrix.update(labels, predictions)
    assert matrix.pixel_accuracy() == pytest.approx(5 / 6)
    assert matrix.iou() == pytest.approx([2 / 3, 3 / 4, 0.0])  # class 2 absent: counts 0, as in GluonCV
    assert matrix.mean_iou() == pytest.approx((2 / 3 + 3 / 4) / 3)
    assert matrix.matrix.tolist() == [[2, 1, 0], [0, 3, 0], [0, 0, 0]]


def test_poly_schedule_follows_power_0_9():
    schedule = lr_schedule(hp(learning_rate="0.01", epochs="2"), iterations_per_epoch=50)
    assert schedule(0) == pytest.approx(0.01)
    assert schedule(50) == pytest.approx(0.01 * 0.5**0.9)
    assert schedule(100) == 0.0


def test_cosine_and_step_schedules():
    cosine = lr_schedule(hp(learning_rate="0.1", epochs="4", lr_scheduler="cosine"), 10)
    assert cosine(20) == pytest.approx(0.05) and cosine(40) == pytest.approx(0.0)
    step = lr_schedule(
        hp(learning_rate="0.1", epochs="4", lr_scheduler="step", lr_scheduler_step="1,3", lr_scheduler_factor="0.5"), 10
    )
    assert [step(t) for t in (0, 9, 10, 29, 30)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sgd", {"momentum": 0.9}),
        ("nag", {"momentum": 0.9}),
        ("rmsprop", {"gamma1": 0.8, "gamma2": 0.7, "centered": True}),
        ("adam", {}),
        ("adagrad", {}),
    ],
)
def test_optimizer_settings(name, expected):
    optimizer, settings = optimizer_settings(hp(optimizer=name, gamma1="0.8", gamma2="0.7"))
    assert optimizer == name and settings == {"learning_rate": 0.001, "wd": 0.0001, **expected}


def test_early_stopping_respects_min_epochs_patience_and_tolerance():
    stopping = EarlyStopping(enabled=True, min_epochs=4, patience=2, tolerance=0.1)
    history = []
    for epoch, score in enumerate([0.5, 0.52, 0.53, 0.54], start=1):
        history.append((stopping.update(score), stopping.should_stop(epoch)))
    # 0.52.. are new bests (saved) but within 10% of 0.5: not improvements as far as patience goes;
    # patience is exhausted at epoch 3, but no stop comes before min_epochs.
    assert history == [(True, False), (True, False), (True, False), (True, True)]


def test_early_stopping_disabled_never_stops():
    stopping = EarlyStopping(enabled=False, min_epochs=0, patience=1, tolerance=0.0)
    for score in [0.5, 0.4, 0.3]:
        stopping.update(score)
    assert not stopping.should_stop(3)
