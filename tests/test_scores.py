"""The evaluation metrics against hand computations (``semseg.evaluation.scores``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semseg.evaluation.scores import ConfusionMatrix, bootstrap_difference, miou_of_stack

# 3 classes; -1 is ignored. Truth and prediction of 10 pixels, 2 of them ignored.
TRUTH = np.array([0, 0, 0, 1, 1, 1, 2, 2, -1, -1])
PREDICTED = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2, 1])
# By hand, over the 8 labelled pixels: class 0: TP 2, FP 1 (a 2 predicted 0), FN 1 (a 0 predicted 1)
#                                      class 1: TP 2, FP 1, FN 1;  class 2: TP 1, FP 1, FN 1


def test_per_class_figures_match_the_hand_computation():
    matrix = ConfusionMatrix.of(TRUTH, PREDICTED, 3)
    assert matrix.matrix.sum() == 8  # the ignored pixels count nowhere
    assert matrix.iou() == pytest.approx([2 / 4, 2 / 4, 1 / 3])
    assert matrix.dice() == pytest.approx([4 / 6, 4 / 6, 2 / 4])
    assert matrix.precision() == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert matrix.recall() == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert matrix.mean_iou() == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert matrix.mean_dice() == pytest.approx((4 / 6 + 4 / 6 + 0.5) / 3)
    assert matrix.pixel_accuracy() == pytest.approx(5 / 8)
    assert matrix.frequency_weighted_iou() == pytest.approx((3 * 0.5 + 3 * 0.5 + 2 / 3) / 8)


def test_dice_is_twice_iou_over_one_plus_iou_for_every_class():
    rng = np.random.default_rng(3)
    matrix = ConfusionMatrix.of(rng.integers(0, 4, 500), rng.integers(0, 4, 500), 4)
    iou = matrix.iou()
    assert matrix.dice() == pytest.approx(2 * iou / (1 + iou))


def test_a_class_absent_from_truth_and_prediction_counts_zero_over_a_split_and_nothing_per_image():
    matrix = ConfusionMatrix.of(np.array([0, 0, 1]), np.array([0, 0, 1]), 3)  # class 2 appears nowhere
    assert matrix.iou() == pytest.approx([1, 1, 0])
    assert matrix.dice()[2] == 0 and matrix.precision()[2] == 0 and matrix.recall()[2] == 0
    assert matrix.mean_iou() == pytest.approx(2 / 3)  # GluonCV's (the built-in's) split-level mean
    assert matrix.frequency_weighted_iou() == pytest.approx(1.0)
    assert matrix.image_mean(matrix.iou()) == pytest.approx(1.0)  # per image: over the classes present
    assert math.isnan(ConfusionMatrix.of(np.array([-1]), np.array([0]), 3).image_mean(np.zeros(3)))


def test_a_class_predicted_but_never_labelled_has_zero_iou_and_precision():
    matrix = ConfusionMatrix.of(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 2]), 3)
    assert matrix.iou() == pytest.approx([0.75, 0, 0])
    assert matrix.precision() == pytest.approx([1, 0, 0])
    assert matrix.recall() == pytest.approx([0.75, 0, 0])
    assert matrix.image_mean(matrix.iou()) == pytest.approx(0.75 / 2)  # classes 0 and 2 are present


def _per_image(truths, predictions, classes):
    return np.stack([ConfusionMatrix.of(t, p, classes).matrix for t, p in zip(truths, predictions, strict=True)])


def test_the_bootstrap_interval_is_the_percentile_interval_of_paired_resamples():
    rng = np.random.default_rng(0)
    truths = [rng.integers(0, 3, 64) for _ in range(12)]
    good = [np.where(rng.random(64) < 0.8, t, rng.integers(0, 3, 64)) for t in truths]
    poor = [np.where(rng.random(64) < 0.5, t, rng.integers(0, 3, 64)) for t in truths]
    first, second = _per_image(truths, good, 3), _per_image(truths, poor, 3)
    result = bootstrap_difference(first, second, resamples=500, seed=7)
    # the same computation written out resample by resample, with the same draws
    draw = np.random.default_rng(7)
    differences = []
    for _ in range(500):
        chosen = draw.integers(0, 12, 12)
        a, b = first[chosen].sum(0), second[chosen].sum(0)
        differences.append(ConfusionMatrix(3, a).mean_iou() - ConfusionMatrix(3, b).mean_iou())
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])))
    whole = ConfusionMatrix(3, first.sum(0)).mean_iou() - ConfusionMatrix(3, second.sum(0)).mean_iou()
    assert result.difference == pytest.approx(whole)
    assert 0 < result.low < result.difference < result.high  # the better model is better, with its uncertainty
    assert bootstrap_difference(first, second, resamples=500, seed=7) == result  # seeded: the same interval


def test_a_model_compared_with_itself_differs_by_exactly_zero():
    rng = np.random.default_rng(1)
    stack = _per_image([rng.integers(0, 2, 20) for _ in range(5)], [rng.integers(0, 2, 20) for _ in range(5)], 2)
    result = bootstrap_difference(stack, stack, resamples=200)
    assert (result.difference, result.low, result.high, result.mean_image_difference) == (0, 0, 0, 0)


def test_miou_of_a_stack_is_each_matrix_mean_iou():
    rng = np.random.default_rng(2)
    stack = _per_image([rng.integers(0, 4, 30) for _ in range(3)], [rng.integers(0, 4, 30) for _ in range(3)], 4)
    assert miou_of_stack(stack) == pytest.approx([ConfusionMatrix(4, m).mean_iou() for m in stack])
