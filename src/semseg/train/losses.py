"""Training losses, chosen by the ``loss`` hyperparameter, and the class weights they may use.

- ``cross_entropy`` (the default, the built-in's loss): GluonCV's ``MixSoftmaxCrossEntropyLoss``
  with one change that does not touch training: the loss *value* is computed from ``log_softmax``,
  so a confidently wrong pixel reads as a large finite number instead of ``inf`` (GluonCV takes the
  log of a softmax that can underflow to 0). Its gradient is ``SoftmaxOutput``'s, bit for bit as
  before: ``SoftmaxOutput`` ignores the gradient that reaches it, which is also why the aux head's
  weight does not change this loss's gradients.
- With ``class_weights``, or for ``focal``, ``dice`` and ``cross_entropy+dice``: ``PixelLoss``,
  plain autograd over ``log_softmax``. Each sample's loss is a weighted mean over its labelled
  pixels; ignored pixels (label -1) count nowhere, and a sample without labelled pixels has loss 0
  and no gradient. Here the aux head's loss is added times ``_aux_weight`` and the weight is real.
  ``focal``: ``-(1-p)^gamma log p`` (Lin et al.), ``dice``: one minus the mean soft Dice score
  over the classes present in the sample's truth (Milletari et al.; Sudre et al. for the multi-class form).
"""

from __future__ import annotations

import logging

import mxnet as mx
import numpy as np
from gluoncv.loss import MixSoftmaxCrossEntropyLoss, SoftmaxCrossEntropyLoss
from mxnet import gluon

from ..data.images import set_pillow_limits
from ..data.label_map import IGNORE_LABEL
from ..errors import UserError

set_pillow_limits()  # importing GluonCV turned Pillow's LOAD_TRUNCATED_IMAGES on for the whole process

log = logging.getLogger("semseg")

LOSSES = ("cross_entropy", "focal", "dice", "cross_entropy+dice")
DICE_EPSILON = 1e-6  # keeps a class whose prediction and truth are both empty from dividing by zero
FOCAL_FLOOR = 1e-6  # 1 - p never reaches 0: (1-p)^gamma keeps a finite gradient for gamma < 1


class _StableSoftmaxCrossEntropy(SoftmaxCrossEntropyLoss):
    """GluonCV's per-pixel loss, its value read from ``log_softmax`` and its gradient from ``SoftmaxOutput``."""

    def hybrid_forward(self, F, pred, label):
        softmax = F.SoftmaxOutput(
            pred,
            label.astype(pred.dtype),
            ignore_label=self._ignore_label,
            multi_output=True,
            use_ignore=True,
            normalization="valid" if self._size_average else "null",
        )
        carrier = -F.pick(F.log(F.maximum(softmax, 1e-30)), label, axis=1, keepdims=True)  # gradient path
        exact = -F.pick(F.log_softmax(pred, axis=1), label, axis=1, keepdims=True)
        loss = F.BlockGrad(exact - carrier) + carrier  # the value of ``exact``, the gradient of SoftmaxOutput
        loss = F.where(label.expand_dims(axis=1) == self._ignore_label, F.zeros_like(loss), loss)
        return F.mean(loss, axis=self._batch_axis, exclude=True)


class BuiltinCrossEntropy(MixSoftmaxCrossEntropyLoss, _StableSoftmaxCrossEntropy):
    """``MixSoftmaxCrossEntropyLoss`` whose per-head loss is ``_StableSoftmaxCrossEntropy``.

    ``MixSoftmaxCrossEntropyLoss`` computes each head through ``super(MixSoftmaxCrossEntropyLoss,
    self).hybrid_forward``; with this base order that call lands in ``_StableSoftmaxCrossEntropy``.
    """


class PixelLoss(gluon.Block):
    """Focal, dice, cross-entropy+dice, or class-weighted cross-entropy, over one or two heads."""

    def __init__(
        self,
        kind: str,
        aux: bool,
        aux_weight: float,
        focal_gamma: float = 2.0,
        dice_weight: float = 1.0,
        class_weights: np.ndarray | None = None,
    ):
        super().__init__()
        self.kind, self.aux, self.aux_weight = kind, aux, aux_weight
        self.focal_gamma, self.dice_weight = focal_gamma, dice_weight
        self.class_weights = class_weights
        self._weights_on: dict = {}  # context -> NDArray copy of class_weights

    def set_class_weights(self, class_weights: np.ndarray | None) -> None:
        self.class_weights, self._weights_on = class_weights, {}

    def forward(self, *inputs):
        *heads, label = inputs
        total = self.one_head(heads[0], label)
        if self.aux and len(heads) > 1:
            total = total + self.aux_weight * self.one_head(heads[1], label)
        return total

    def one_head(self, pred, label):
        """Per-sample loss of one head: shape (N,)."""
        nd = mx.nd
        labelled = label >= 0
        target = nd.where(labelled, label, nd.zeros_like(label))
        log_p = nd.log_softmax(pred, axis=1)
        loss = nd.zeros((pred.shape[0],), ctx=pred.context)
        if self.kind in ("cross_entropy", "focal", "cross_entropy+dice"):
            loss = loss + self._weighted_log_loss(log_p, target, labelled)
        if self.kind in ("dice", "cross_entropy+dice"):
            scale = self.dice_weight if self.kind == "cross_entropy+dice" else 1.0
            loss = loss + scale * self._dice(log_p, target, labelled)
        return loss

    def _weights(self, context):
        if context not in self._weights_on:
            self._weights_on[context] = mx.nd.array(self.class_weights, ctx=context, dtype="float32")
        return self._weights_on[context]

    def _weighted_log_loss(self, log_p, target, labelled):
        """Cross-entropy, or focal loss, as a weighted mean over each sample's labelled pixels."""
        nd = mx.nd
        log_pt = nd.pick(log_p, target, axis=1)  # (N, H, W)
        pixel = -log_pt
        if self.kind == "focal":
            pixel = nd.power(nd.maximum(1 - nd.exp(log_pt), FOCAL_FLOOR), self.focal_gamma) * pixel
        weight = labelled.astype("float32")
        if self.class_weights is not None:
            weight = weight * nd.take(self._weights(log_p.context), target)
        total = nd.sum(weight * pixel, axis=(1, 2))
        return total / nd.maximum(nd.sum(weight, axis=(1, 2)), 1e-12)

    def _dice(self, log_p, target, labelled):
        """One minus the mean soft Dice score over the classes present in each sample's truth."""
        nd = mx.nd
        classes = log_p.shape[1]
        keep = labelled.expand_dims(axis=1).astype("float32")  # (N, 1, H, W)
        prob = nd.exp(log_p) * keep
        truth = nd.one_hot(target, classes).transpose((0, 3, 1, 2)) * keep
        overlap = nd.sum(prob * truth, axis=(2, 3))
        sizes = nd.sum(prob, axis=(2, 3)) + nd.sum(truth, axis=(2, 3))
        present = (nd.sum(truth, axis=(2, 3)) > 0).astype("float32")  # (N, C)
        score = 2 * overlap / (sizes + DICE_EPSILON)
        count = nd.sum(present, axis=1)
        mean_score = nd.sum(score * present, axis=1) / nd.maximum(count, 1)
        return (1 - mean_score) * (count > 0)


def make(hp: dict, class_weights: np.ndarray | None):
    """The loss ``hp`` asks for; the built-in's exactly when it asks for the defaults."""
    if hp["loss"] == "cross_entropy" and class_weights is None:
        return BuiltinCrossEntropy(aux=hp["_aux_loss"], aux_weight=hp["_aux_weight"], ignore_label=IGNORE_LABEL)
    aux = hp["_aux_loss"], hp["_aux_weight"]
    return PixelLoss(hp["loss"], *aux, hp["focal_gamma"], hp["dice_weight"], class_weights)


def describe(hp: dict) -> str:
    """The loss in words, with the settings that apply to it."""
    parts = [hp["loss"]]
    if hp["loss"] == "focal":
        parts.append(f"focal_gamma={hp['focal_gamma']:g}")
    if hp["loss"] == "cross_entropy+dice":
        parts.append(f"dice_weight={hp['dice_weight']:g}")
    if hp["loss"] != "dice":
        parts.append(f"class_weights={hp['class_weights'] if isinstance(hp['class_weights'], str) else 'given'}")
    if hp["_aux_loss"]:
        parts.append(f"aux head weight {hp['_aux_weight']:g}")
    return ", ".join(parts)


def median_frequency(class_pixels: np.ndarray) -> np.ndarray:
    """Median-frequency weights (Eigen & Fergus): median(f) / f_c over the classes that occur.

    A class with no pixels gets the largest weight of the others: it is the rarest one there is,
    and in Pipe mode it may still appear after the stream the counts came from.
    """
    counts = np.asarray(class_pixels, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return np.ones(len(counts), dtype=np.float32)
    frequency = counts / counts.sum()
    weights = np.zeros(len(counts))
    weights[present] = np.median(frequency[present]) / frequency[present]
    weights[~present] = weights[present].max()
    return weights.astype(np.float32)


def sqrt_median_frequency(class_pixels: np.ndarray) -> np.ndarray:
    """The square root of the median-frequency weights: a rare class still counts more, but a class
    100 times rarer weighs 10 times more, not 100."""
    return np.sqrt(median_frequency(class_pixels)).astype(np.float32)


def log_inverse(class_pixels: np.ndarray) -> np.ndarray:
    """ENet's weights, 1 / ln(1.02 + f_c): bounded by 1 / ln(1.02), about 50, for the rarest class."""
    counts = np.asarray(class_pixels, dtype=np.float64)
    frequency = counts / max(counts.sum(), 1)
    return (1 / np.log(1.02 + frequency)).astype(np.float32)


# The rules class_weights names; 'auto' is the one measured to help a rare class without costing the
# others (docs/performance.md, "Class weights").
WEIGHT_RULES = {
    "median_frequency": median_frequency,
    "sqrt_median_frequency": sqrt_median_frequency,
    "log_inverse": log_inverse,
}
AUTO_RULE = "sqrt_median_frequency"


def counted_weights(rule: str, class_pixels: np.ndarray) -> np.ndarray:
    """The weights of ``rule`` (a WEIGHT_RULES name or ``auto``) from the training masks' pixel counts."""
    return WEIGHT_RULES[AUTO_RULE if rule == "auto" else rule](class_pixels)


def explicit_weights(hp: dict) -> np.ndarray | None:
    """The weights given as a list, checked against ``num_classes``; None for ``none`` and ``auto``."""
    given = hp["class_weights"]
    if isinstance(given, str):
        return None
    if len(given) != hp["num_classes"]:
        raise UserError(
            f"The 'class_weights' hyperparameter lists {len(given)} weights but num_classes is {hp['num_classes']}; "
            "give one weight per class"
        )
    return np.asarray(given, dtype=np.float32)


def log_weights(weights: np.ndarray, names: list[str], source: str) -> None:
    pairs = ", ".join(f"{name}={weight:.3g}" for name, weight in zip(names, weights, strict=True))
    log.info("Class weights (%s): %s", source, pairs)
