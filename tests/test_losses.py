"""Each loss against values computed by hand on a tiny batch, and the guards against divergence.

The batch: one sample, two classes, three pixels. Pixel 0 has logits (0, 0), so p = (1/2, 1/2),
label 0; pixel 1 has logits (0, ln 3), so p = (1/4, 3/4), label 1; pixel 2 is ignored (label -1)
and has logits that would dominate every loss if it counted.
"""

from __future__ import annotations

import logging
import math

import mxnet as mx
import numpy as np
import pytest
from gluoncv.loss import MixSoftmaxCrossEntropyLoss

from semseg import hyperparameters
from semseg.errors import UserError
from semseg.evaluation.scores import ConfusionMatrix
from semseg.hyperparameters import CLASS_WEIGHT_RULES, parse
from semseg.train import guards, losses

LN2, LN4_3 = math.log(2), math.log(4 / 3)  # -ln p of the true class at pixels 0 and 1


def tiny_batch():
    logits = mx.nd.array([[[[0.0, 0.0, 50.0]], [[0.0, math.log(3), -50.0]]]])  # (N=1, C=2, H=1, W=3)
    labels = mx.nd.array([[[0, 1, -1]]])
    return logits, labels


def hp(**values):
    return hyperparameters.parse({"num_classes": "2", "num_training_samples": "1", **values})


def loss_and_gradient(criterion, logits, labels, heads=1):
    logits = logits.copy()
    logits.attach_grad()
    with mx.autograd.record():
        loss = criterion(*([logits] * heads), labels)
    loss.backward()
    return loss.asnumpy(), logits.grad.asnumpy()


# Hand-computed per-sample values over the two labelled pixels.
CROSS_ENTROPY = (LN2 + LN4_3) / 2
WEIGHTED_CROSS_ENTROPY = (2 * LN2 + 1 * LN4_3) / 3  # class weights (2, 1)
FOCAL = ((1 / 2) ** 2 * LN2 + (1 / 4) ** 2 * LN4_3) / 2  # gamma 2: (1 - p)^2 -ln p
DICE = 1 - ((2 * 0.5 / (0.75 + 1)) + (2 * 0.75 / (1.25 + 1))) / 2  # both classes present


@pytest.mark.parametrize(
    "settings, weights, expected",
    [
        ({"loss": "cross_entropy"}, (1.0, 1.0), CROSS_ENTROPY),
        ({"loss": "cross_entropy"}, (2.0, 1.0), WEIGHTED_CROSS_ENTROPY),
        ({"loss": "focal"}, None, FOCAL),
        ({"loss": "focal", "focal_gamma": "0"}, None, CROSS_ENTROPY),  # gamma 0 is cross-entropy
        ({"loss": "dice"}, None, DICE),
        ({"loss": "cross_entropy+dice"}, None, CROSS_ENTROPY + DICE),
        ({"loss": "cross_entropy+dice", "dice_weight": "0.5"}, None, CROSS_ENTROPY + 0.5 * DICE),
    ],
)
def test_each_loss_matches_the_hand_computed_value(settings, weights, expected):
    config = hp(_aux_loss="False", **settings)
    criterion = losses.make(config, None if weights is None else np.array(weights, dtype=np.float32))
    assert isinstance(criterion, losses.PixelLoss)
    loss, gradient = loss_and_gradient(criterion, *tiny_batch())
    assert loss == pytest.approx([expected], rel=1e-5)
    assert np.isfinite(gradient).all()
    assert np.all(gradient[..., 2] == 0), "the ignored pixel must get no gradient"


def test_the_aux_head_adds_its_weighted_loss():
    criterion = losses.make(hp(loss="focal", _aux_weight="0.5"), None)
    loss, _ = loss_and_gradient(criterion, *tiny_batch(), heads=2)
    assert loss == pytest.approx([1.5 * FOCAL], rel=1e-5)


def test_the_default_is_gluoncvs_loss_with_identical_gradients_and_a_finite_value():
    criterion = losses.make(hp(), None)
    reference = MixSoftmaxCrossEntropyLoss(aux=True, aux_weight=0.5, ignore_label=-1)
    logits = mx.nd.random.normal(shape=(2, 3, 5, 4), scale=3)
    labels = mx.nd.array(np.random.RandomState(0).randint(-1, 3, size=(2, 5, 4)))
    ours, our_gradient = loss_and_gradient(criterion, logits, labels, heads=2)
    theirs, their_gradient = loss_and_gradient(reference, logits, labels, heads=2)
    np.testing.assert_array_equal(our_gradient, their_gradient)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    # a confidently wrong pixel: GluonCV's value is inf (log of an underflowed softmax), ours is exact
    wrong = mx.nd.array([[[[0.0]], [[200.0]]]])
    label = mx.nd.array([[[0]]])
    assert np.isinf(loss_and_gradient(reference, wrong, label, heads=2)[0]).all()
    value, gradient = loss_and_gradient(criterion, wrong, label, heads=2)
    assert value == pytest.approx([1.5 * 200.0], rel=1e-5) and np.isfinite(gradient).all()


@pytest.mark.parametrize("loss", hyperparameters.LOSSES)
def test_an_all_ignore_batch_gives_a_finite_zero_loss_and_a_warning(loss, caplog):
    logits, _ = tiny_batch()
    labels = mx.nd.full((1, 1, 3), -1)
    criterion = losses.make(hp(loss=loss, _aux_loss="False"), None)
    value, gradient = loss_and_gradient(criterion, logits, labels)
    assert value.tolist() == [0.0] and np.isfinite(gradient).all()
    with caplog.at_level(logging.WARNING, logger="semseg"):
        assert guards.warn_if_unlabelled(labels, epoch=3, iteration=7) is False
    assert "Epoch[3] Batch[7] has no labelled pixel" in caplog.text
    assert guards.warn_if_unlabelled(tiny_batch()[1], 0, 0) is True


def test_auto_weights_are_median_frequency_on_a_known_count():
    weights = losses.median_frequency(np.array([900, 90, 10]))  # frequencies .9 .09 .01, median .09
    np.testing.assert_allclose(weights, [0.1, 1.0, 9.0], rtol=1e-6)
    absent = losses.median_frequency(np.array([900, 100, 0]))  # median .5: the absent class gets the most
    np.testing.assert_allclose(absent, [0.5 / 0.9, 5.0, 5.0], rtol=1e-6)


def test_class_weights_hyperparameter():
    assert hp()["class_weights"] == "none"
    assert hp(class_weights="AUTO")["class_weights"] == "auto"
    config = hp(class_weights="[0.5, 2]")
    assert losses.explicit_weights(config).tolist() == [0.5, 2.0]
    written_back = hyperparameters.to_string(config["class_weights"])  # as hyperparams.json holds it
    assert hp(class_weights=written_back)["class_weights"] == (0.5, 2.0)
    with pytest.raises(UserError, match="lists 3 weights but num_classes is 2"):
        losses.explicit_weights(hp(class_weights="[1, 1, 1]"))
    for bad in ("[-1, 2]", "[0, 0]", "heavy", "[]"):
        with pytest.raises(UserError, match="'class_weights' hyperparameter which accepts 'none', 'auto'"):
            hp(class_weights=bad)


def test_non_finite_iterations_are_skipped_then_end_the_job(caplog):
    guard = guards.NonFiniteGuard(limit=3, learning_rate=0.002, clip_gradient=0)
    with caplog.at_level(logging.WARNING, logger="semseg"):
        guard.skipped_update(0, 0, float("nan"))
        guard.finite()
        guard.skipped_update(0, 2, float("inf"))
        guard.skipped_update(0, 3, 1.0)
        with pytest.raises(UserError) as raised:
            guard.skipped_update(0, 4, float("nan"))
    assert "this update is skipped (2 in a row)" in caplog.text
    assert "training gradient is not finite" in caplog.text
    message = str(raised.value)
    assert "3 iterations in a row" in message and "lower learning_rate than 0.002" in message
    assert "clip_gradient" in message and "\n" not in message


def test_a_nan_anywhere_reaches_the_checked_gradient_on_any_device():
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Dense(4, in_units=2), mx.gluon.nn.Dense(3, in_units=4), mx.gluon.nn.Dense(1, in_units=3))
    net.initialize(ctx=[mx.cpu(0), mx.cpu(1)])

    def backward(poison_device):
        for number, context in enumerate((mx.cpu(0), mx.cpu(1))):
            with mx.autograd.record():
                hidden = net[1](net[0](mx.nd.ones((1, 2), ctx=context)))
                if number == poison_device:  # a non-finite value in the middle of the network
                    hidden = hidden * mx.nd.array([[1, float("inf"), 1]], ctx=context)
                out = net[2](hidden) * 0
            out.backward()

    backward(poison_device=None)
    assert guards.gradients_finite(net)
    backward(poison_device=1)
    assert not guards.gradients_finite(net)


def test_a_validation_that_predicts_one_class_everywhere_is_named(caplog):
    matrix = ConfusionMatrix(3)
    matrix.update(np.array([0, 0, 1, 2, -1]), np.array([0, 0, 0, 0, 2]))  # the ignored pixel does not count
    hp = parse({"num_classes": 3, "num_training_samples": 4})
    with caplog.at_level(logging.WARNING, logger="semseg"):
        assert guards.warn_if_collapsed(matrix, 4, ["background", "road", "car"], hp)
    assert "predicted 'background' (class 0) for every pixel while the truth holds 3 classes" in caplog.text
    assert "try algorithm=unet (its decoder sees fine detail), where shape tells the classes apart" in caplog.text
    assert "class_weights=auto, loss=cross_entropy+dice or more epochs than " in caplog.text
    healthy = ConfusionMatrix(3)
    healthy.update(np.array([0, 1]), np.array([0, 1]))
    assert not guards.warn_if_collapsed(healthy, 4, ["a", "b", "c"], hp)


def test_the_collapse_advice_leaves_out_what_the_job_already_does():
    hp = parse(
        {
            "num_classes": 3,
            "num_training_samples": 4,
            "algorithm": "unet",
            "backbone": "resnet-18",
            "class_weights": "auto",
            "loss": "cross_entropy+dice",
            "epochs": "30",
            "_augmentation_type": "strong",
            "augment_horizontal_flip": "0",
            "augment_vertical_flip": "0",
            "augment_rotate90": "0",
            "augment_scale_min": "0.8",
            "augment_scale_max": "1.25",
        }
    )
    assert guards.collapse_advice(hp) == ["more epochs than 30"]
    defaults = parse({"num_classes": 3, "num_training_samples": 4})
    assert any("augment_horizontal_flip=0" in line for line in guards.collapse_advice(defaults))
    turned = {**hp, "augment_rotate90": 0.5}  # the strong recipe's own quarter turns
    assert any("augment_rotate90=0" in line for line in guards.collapse_advice(turned))
    wide = {**hp, "augment_scale_max": 2.0}
    assert any("augment_scale_min/max within 0.75 to 1.33" in line for line in guards.collapse_advice(wide))


def test_the_class_weight_rules_by_hand():
    counts = np.array([900, 90, 10, 0])  # frequencies 0.9, 0.09, 0.01; median of those present 0.09
    np.testing.assert_allclose(losses.median_frequency(counts), [0.1, 1, 9, 9], rtol=1e-6)
    np.testing.assert_allclose(losses.sqrt_median_frequency(counts), [0.1**0.5, 1, 3, 3], rtol=1e-6)
    expected = 1 / np.log(1.02 + np.array([0.9, 0.09, 0.01, 0]))
    np.testing.assert_allclose(losses.log_inverse(counts), expected, rtol=1e-6)
    assert np.array_equal(losses.counted_weights("auto", counts), losses.counted_weights(losses.AUTO_RULE, counts))
    assert set(losses.WEIGHT_RULES) == set(CLASS_WEIGHT_RULES)
    for rule in ("auto", *CLASS_WEIGHT_RULES):
        assert parse({"num_classes": 3, "num_training_samples": 4, "class_weights": rule})["class_weights"] == rule
