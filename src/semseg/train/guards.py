"""Divergence and collapse are never silent.

- ``gradients_finite`` and ``NonFiniteGuard``: an iteration whose loss or gradients are not finite
  is skipped (no update), with a warning; ``_max_nonfinite_iterations`` such iterations in a row end
  the job with one sentence that suggests what to change.
- ``warn_if_unlabelled``: a batch without one labelled pixel trains nothing (its loss is 0).
- ``warn_if_collapsed``: a validation epoch that predicts one class everywhere while the truth holds
  several has collapsed to that class (typically the background of an imbalanced dataset).
"""

from __future__ import annotations

import logging

import numpy as np

from ..errors import UserError
from ..evaluation.scores import ConfusionMatrix

log = logging.getLogger("semseg")


def gradients_finite(net) -> bool:
    """True when the gradient of ``net``'s first trainable parameter is finite on every device.

    That parameter is the stem's first convolution, the last layer backpropagation reaches: a NaN or
    infinity anywhere on the way down from the loss reaches it too. Checking it alone costs nothing
    measurable; a reduction over all 35 million gradients of a ResNet-50 took about a second on a CPU.
    """
    first = next(p for p in net.collect_params().values() if p.grad_req != "null")
    return all(np.isfinite(grad.sum().asscalar()) for grad in first.list_grad())


class NonFiniteGuard:
    """Counts consecutive skipped iterations and ends the job at the limit."""

    def __init__(self, limit: int = 10, learning_rate: float = 0.001, clip_gradient: float = 0.0):
        self.limit, self.learning_rate, self.clip_gradient = limit, learning_rate, clip_gradient
        self.in_a_row = 0
        self.skipped = 0

    def finite(self) -> None:
        self.in_a_row = 0

    def skipped_update(self, epoch: int, iteration: int, loss: float) -> None:
        """Record a skipped update; raise ``UserError`` once ``limit`` happened in a row."""
        self.in_a_row += 1
        self.skipped += 1
        what = "loss" if not np.isfinite(loss) else "gradient"
        log.warning(
            "Epoch[%d] Batch[%d] The training %s is not finite (loss %s); this update is skipped (%d in a row)",
            epoch,
            iteration,
            what,
            loss,
            self.in_a_row,
        )
        if self.in_a_row >= self.limit:
            clip = "" if self.clip_gradient > 0 else " or set clip_gradient (for example 1.0)"
            raise UserError(
                f"Training diverged: the loss or its gradients were not finite for {self.in_a_row} iterations in a "
                f"row (epoch {epoch}, iteration {iteration}); use a lower learning_rate than {self.learning_rate:g}"
                f"{clip}"
            )


def warn_if_unlabelled(labels, epoch: int, iteration: int) -> bool:
    """Warn when a training batch has no labelled pixel; returns whether it has any."""
    if float(labels.max().asscalar()) >= 0:
        return True
    log.warning(
        "Epoch[%d] Batch[%d] has no labelled pixel (every mask value is ignore): its loss is 0 and it trains nothing",
        epoch,
        iteration,
    )
    return False


# The rescale range within which a shape keeps its size closely enough to be told apart (the digits
# task of docs/performance.md learns with 0.8 to 1.25 and not with the built-in's 0.5 to 2.0).
SHAPE_SCALE_RANGE = (0.75, 1.33)


def keeps_shapes(hp: dict) -> bool:
    """Whether the job's augmentation already keeps shapes as they are: no flip or quarter turn (a 6
    turned is a 9), a narrow rescale."""
    low, high = SHAPE_SCALE_RANGE
    return (
        hp["_augmentation_type"] == "strong"
        and hp["augment_horizontal_flip"] == hp["augment_vertical_flip"] == hp["augment_rotate90"] == 0
        and low <= hp["augment_scale_min"]
        and hp["augment_scale_max"] <= high
    )


def collapse_advice(hp: dict) -> list[str]:
    """What to try after a collapse, leaving out what the job already does (docs/choices.md)."""
    advice = []
    if hp["algorithm"] not in ("unet", "deeplabv3plus"):
        advice.append("algorithm=unet (its decoder sees fine detail)")
    if not keeps_shapes(hp):
        advice.append(
            "where shape tells the classes apart, _augmentation_type=strong with augment_horizontal_flip=0, "
            "augment_vertical_flip=0, augment_rotate90=0 and augment_scale_min/max within "
            f"{SHAPE_SCALE_RANGE[0]:g} to {SHAPE_SCALE_RANGE[1]:g}"
        )
    if hp["class_weights"] == "none":
        advice.append("class_weights=auto")
    if hp["loss"] not in ("cross_entropy+dice", "dice"):
        advice.append("loss=cross_entropy+dice")
    advice.append(f"more epochs than {hp['epochs']}")
    return advice


def warn_if_collapsed(matrix: ConfusionMatrix, epoch: int, names: list[str], hp: dict) -> bool:
    """Warn when validation predicted one class for every pixel while the truth holds several."""
    predicted = np.flatnonzero(matrix.matrix.sum(axis=0))
    truth = np.flatnonzero(matrix.matrix.sum(axis=1))
    if len(predicted) != 1 or len(truth) < 2:
        return False
    only = int(predicted[0])
    advice = collapse_advice(hp)
    log.warning(
        "Epoch[%d] Validation predicted '%s' (class %d) for every pixel while the truth holds %d classes: the "
        "network has collapsed to one class. An imbalanced dataset often does this; try %s",
        epoch,
        names[only] if only < len(names) else f"class_{only}",
        only,
        len(truth),
        ", ".join(advice[:-1]) + (" or " if len(advice) > 1 else "") + advice[-1],
    )
    return True
