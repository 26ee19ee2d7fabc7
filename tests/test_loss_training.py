"""The losses through the real ``train`` job: a diverging job ends with one sentence, and each new
loss learns the sample task (the bars are stated below, measured on this task with these settings)."""

from __future__ import annotations

import math

import pytest
from harness.trainjob import make_tree, quality, run_train

from semseg.demo import DEMO_HYPERPARAMETERS
from semseg.sample_data import write_opt_ml_tree


@pytest.mark.slow
def test_a_job_whose_loss_is_never_finite_ends_with_one_sentence(tmp_path):
    # weights of 1e38 overflow the weighted sum to inf, and inf / inf is NaN: every iteration is non-finite
    root = make_tree(
        tmp_path,
        train=8,
        epochs="1",
        num_training_samples="8",
        class_weights="[1e38, 1e38, 1e38, 1e38]",
        _max_nonfinite_iterations="3",
    )
    job = run_train(root, timeout=600)
    assert job.returncode == 1, job.log[-3000:]
    assert job.failure.startswith("Training diverged: the loss or its gradients were not finite for 3 iterations")
    assert "lower learning_rate than 0.01" in job.failure
    assert len(job.lines(r"this update is skipped \(\d in a row\)")) == 3
    assert "Class weights (given): class_0=1e+38" in job.log


# Each new loss on the learning test's task and settings, in half its epochs (160 iterations). Best
# validation mIoU measured in these 4 epochs: focal 0.604, dice 0.757, cross_entropy+dice 0.700; a
# network that predicts the background everywhere scores about 0.19. The bars leave room for the
# run-to-run drift of CPU arithmetic.
LOSS_EPOCHS = 4
LOSS_BARS = {"focal": 0.50, "dice": 0.60, "cross_entropy+dice": 0.55}


@pytest.mark.slow
@pytest.mark.parametrize("loss", sorted(LOSS_BARS))
def test_each_new_loss_trains_a_real_job_with_finite_losses(loss, tmp_path):
    """The short form of the next test: one epoch of the tiny job, through the real ``train``."""
    job = run_train(make_tree(tmp_path, train=8, num_training_samples="8", loss=loss), timeout=600)
    assert job.returncode == 0, job.log[-3000:]
    assert f"Loss: {loss}" in job.log
    losses = quality(job.log)["train:loss"]
    assert losses and all(math.isfinite(value) for value in losses), losses


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("loss", sorted(LOSS_BARS))
def test_each_new_loss_learns_the_sample_task(loss, tmp_path):
    settings = {**DEMO_HYPERPARAMETERS, "epochs": str(LOSS_EPOCHS), "loss": loss, "_int8": "False"}  # no int8 copy
    root = write_opt_ml_tree(tmp_path, train=32, validation=16, hyperparameters=settings)
    (root / "checkpoints").rmdir()
    job = run_train(root, timeout=1500)
    assert job.returncode == 0, job.log[-3000:]
    assert f"Loss: {loss}" in job.log
    mious = quality(job.log)["validation:mIOU"]
    assert len(mious) == LOSS_EPOCHS and max(mious) >= LOSS_BARS[loss], mious
