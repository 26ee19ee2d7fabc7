"""Optimizers and learning-rate schedules with the built-in's hyperparameters.

Schedules are plain functions of the iteration, stepped once per iteration:
``poly``: lr x (1 - t/T)^0.9 (GluonCV's power); ``cosine``: lr x (1 + cos(pi t/T)) / 2;
``step``: lr x factor^k after the k-th epoch listed in ``lr_scheduler_step``.

``lr_warmup_epochs`` (ours) multiplies any schedule by a linear ramp from 0 to 1 over its first
iterations, and ``clip_gradient`` (ours) is MXNet's per-element gradient clipping, for every optimizer.

``momentum`` applies to sgd and nag; ``gamma1``/``gamma2`` to rmsprop (MXNet's centered RMSProp,
where gamma2 is the momentum factor, as the built-in documents it); ``weight_decay`` to every optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

POLY_POWER = 0.9


def lr_schedule(hp: dict, iterations_per_epoch: int) -> Callable[[int], float]:
    schedule = _decay(hp, iterations_per_epoch)
    warmup = hp["lr_warmup_epochs"] * iterations_per_epoch
    if warmup <= 0:
        return schedule
    return lambda t: schedule(t) * min(1.0, (t + 1) / warmup)


def _decay(hp: dict, iterations_per_epoch: int) -> Callable[[int], float]:
    base = hp["learning_rate"]
    total = max(1, hp["epochs"] * iterations_per_epoch)
    name = hp["lr_scheduler"]
    if name == "poly":
        return lambda t: base * (1 - min(t, total) / total) ** POLY_POWER
    if name == "cosine":
        return lambda t: base * (1 + math.cos(math.pi * min(t, total) / total)) / 2
    milestones = [epoch * iterations_per_epoch for epoch in hp["lr_scheduler_step"]]
    factor = hp["lr_scheduler_factor"]
    return lambda t: base * factor ** sum(t >= m for m in milestones)


def optimizer_settings(hp: dict) -> tuple[str, dict]:
    """(MXNet optimizer name, its keyword arguments) for ``gluon.Trainer``."""
    name = hp["optimizer"]
    common = {"learning_rate": hp["learning_rate"], "wd": hp["weight_decay"]}
    if hp["clip_gradient"] > 0:
        common["clip_gradient"] = hp["clip_gradient"]
    if name in ("sgd", "nag"):
        return name, {**common, "momentum": hp["momentum"]}
    if name == "rmsprop":
        return name, {**common, "gamma1": hp["gamma1"], "gamma2": hp["gamma2"], "centered": True}
    return name, common
