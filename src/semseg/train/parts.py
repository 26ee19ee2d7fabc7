"""Everything a training run builds before its first epoch: configuration, devices, the network, its
loss and optimizer, gathered in one ``Training`` that the epoch loop takes as it is.

Beyond one device: the global ``mini_batch_size`` is split over every GPU of the host (and over
the hosts of a multi-host job, see ``distributed``), gradients are summed through a kvstore
(``kvstore``), and ``syncbn`` synchronizes BatchNorm across the GPUs.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import gluon

from .. import classes, hyperparameters, logs, paths, sm_config
from ..data import dataset_channel
from ..errors import UserError
from ..model.factory import build_from_hyperparameters
from ..model.weights import initial_weights
from . import losses, precision
from .early_stopping import EarlyStopping
from .guards import NonFiniteGuard
from .optim import lr_schedule, optimizer_settings
from .precision import Precision
from .stop import StopFlag

log = logging.getLogger("semseg")

CPU_CONTEXTS_ENV = "SEMSEG_CPU_CONTEXTS"  # testing aid: N CPU contexts stand in for N GPUs


@dataclass
class Training:
    """What every step of the run uses: the network, its loss and optimizer, where it runs."""

    hp: dict
    net: Any
    criterion: Any
    trainer: gluon.Trainer
    ctx: list
    schedule: Callable[[int], float]
    stop: StopFlag
    host: str
    hosts: int = 1
    first_device: int = 0  # the job-wide number of ctx[0]: each device's dropout is seeded by its number
    writes_artifacts: bool = True  # only the first host writes model/ (SageMaker merges every host's)
    kvstore: Any = None  # a dist kvstore summing gradients over hosts
    any_host: Callable[[bool], bool] = bool  # True on every host when any host says True (a collective)
    class_pixels: np.ndarray | None = None  # counted over the first epoch for ``auto`` weights in Pipe mode
    guard: NonFiniteGuard = field(default_factory=NonFiniteGuard)  # skips non-finite updates, ends a diverged job
    precision: Precision = Precision("float32", "precision_dtype is float32")  # what the network computes in


def configure() -> dict:
    """Read, merge and validate hyperparameters, logging the three lines the built-in logs.

    A ``dataset`` channel supplies ``num_classes`` and ``num_training_samples`` the user left out.
    """
    defaults = hyperparameters.defaults_as_strings()
    provided = sm_config.read_hyperparameters()
    hp = hyperparameters.parse({**dataset_channel.implied_hyperparameters(provided), **provided})
    final = {k: hyperparameters.to_string(v) for k, v in hp.items() if v is not None}
    logs.configuration(hyperparameters.__file__, defaults, paths.hyperparameters_file(), provided, final)
    return hp


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def contexts() -> list:
    """One context per visible GPU, else the CPU; ``SEMSEG_CPU_CONTEXTS=N`` gives N CPU contexts."""
    stand_ins = int(os.environ.get(CPU_CONTEXTS_ENV) or 0)
    if stand_ins > 0:
        logs.devices(0, stand_ins, CPU_CONTEXTS_ENV)
        return [mx.cpu(i) for i in range(stand_ins)]
    gpus = mx.context.num_gpus()
    logs.devices(gpus)
    return [mx.gpu(i) for i in range(gpus)] if gpus else [mx.cpu()]


def check_batch_size(hp: dict, devices: int, hosts: int) -> None:
    if hp["mini_batch_size"] >= devices * hosts:
        return
    if hosts == 1:
        raise UserError(
            f"mini_batch_size is {hp['mini_batch_size']} but {devices} GPUs are in use; "
            "it must be at least the number of GPUs"
        )
    raise UserError(
        f"mini_batch_size is {hp['mini_batch_size']} but {hosts} hosts with {devices} devices each "
        f"are in use; it must be at least {hosts * devices}, the number of devices in all"
    )


def batch_norm_layer(hp: dict, ctx: list) -> dict:
    """``syncbn`` on several devices: GluonCV's recipe, MXNet's SyncBatchNorm over ``len(ctx)`` devices.

    The device count is bound into the layer itself, not only passed in ``norm_kwargs``: GluonCV's
    Fast-SCNN makes two of its norms without ``norm_kwargs``, and a SyncBatchNorm left to count the
    devices itself counts the machine's GPUs, not the ones in use, so its barrier would never pair up.
    """
    if not hp["syncbn"] or len(ctx) < 2:
        return {}
    log.info("syncbn: BatchNorm statistics are synchronized across %d devices", len(ctx))
    layer = functools.partial(mx.gluon.contrib.nn.SyncBatchNorm, num_devices=len(ctx))
    return {"norm_layer": layer, "norm_kwargs": {"num_devices": len(ctx)}}


def finish_deferred_init(net, hp: dict, ctx: list) -> None:
    """One inference pass, so every parameter has its shape before a kvstore or parallel threads see it."""
    net(mx.nd.zeros((1, 3, hp["crop_size"], hp["crop_size"]), ctx=ctx[0]))
    mx.nd.waitall()


def class_names(hp: dict) -> list[str]:
    """The names of the classes, for the log lines: the model's ``classes.json`` or ``class_0 ..``."""
    return list(classes.load(paths.model_dir(), hp["num_classes"]).names)


def make_criterion(hp: dict, class_pixels: np.ndarray | None = None):
    """The loss ``hp`` asks for, and whether ``auto`` class weights still wait for pixel counts.

    ``class_pixels``: the training masks' pixel count per class (File mode); empty in Pipe mode, where
    ``auto`` weights start uniform and are set from the first epoch's stream (``set_counted_weights``).
    """
    weights = losses.explicit_weights(hp)
    waiting = False
    if weights is not None:
        losses.log_weights(weights, class_names(hp), "given")
    elif hp["class_weights"] != "none":
        rule = hp["class_weights"]
        if class_pixels is not None and class_pixels.size:
            weights = losses.counted_weights(rule, class_pixels)
            losses.log_weights(weights, class_names(hp), f"{rule}, from {int(class_pixels.sum())} training pixels")
        else:
            weights, waiting = np.ones(hp["num_classes"], dtype=np.float32), True
            log.info("Class weights (%s): 1 for the first epoch, then set from the pixel counts of its stream", rule)
    log.info("Loss: %s", losses.describe(hp))
    return losses.make(hp, weights), waiting


def set_counted_weights(training: Training, class_pixels: np.ndarray) -> None:
    """Counted class weights in Pipe mode, from the pixels counted over this run's first epoch."""
    rule = training.hp["class_weights"]
    weights = losses.counted_weights(rule, class_pixels)
    training.criterion.set_class_weights(weights)
    losses.log_weights(weights, class_names(training.hp), f"{rule}, from {int(class_pixels.sum())} streamed pixels")
    training.class_pixels = None


def early_stopping(hp: dict) -> EarlyStopping:
    return EarlyStopping(
        hp["early_stopping"],
        hp["early_stopping_min_epochs"],
        hp["early_stopping_patience"],
        hp["early_stopping_tolerance"],
    )


def build(hp: dict, stop: StopFlag, cluster, iterations: int, class_pixels: np.ndarray | None = None) -> Training:
    """The network with its first weights, loss, optimizer and LR schedule, on this host's devices.

    ``cluster``: this host's place in a multi-host job (``distributed.Cluster``), None on one host.
    """
    host = sm_config.read_resource_config().current_host
    rank, hosts = (cluster.rank, cluster.size) if cluster else (0, 1)
    ctx = contexts()
    check_batch_size(hp, len(ctx), hosts)
    chosen = choose_precision(hp, ctx)
    precision.enable(chosen)  # before the network is built and first runs: a hybridized graph is traced then
    net = build_from_hyperparameters(hp, **batch_norm_layer(hp, ctx))
    initial_weights(net, hp, ctx)
    stop.check()
    if hp["_hybrid"]:
        net.hybridize(static_alloc=True, static_shape=True)  # shapes are fixed: every batch is crop_size square
    log.info("Network: %s", "hybridized graph (_hybrid true)" if hp["_hybrid"] else "imperative (_hybrid false)")
    if len(ctx) > 1 or cluster:
        finish_deferred_init(net, hp, ctx)
    criterion, waiting_for_counts = make_criterion(hp, class_pixels)
    name, settings = optimizer_settings(hp)
    local = "device" if len(ctx) > 1 and not cluster else None  # sums over this host's devices
    trainer = gluon.Trainer(
        net.collect_params(), name, settings, kvstore=local, update_on_kvstore=False if local else None
    )
    logs.lr_scheduler(iterations, hp["epochs"])
    schedule = lr_schedule(hp, iterations)
    return Training(
        hp,
        net,
        criterion,
        trainer,
        ctx,
        schedule,
        stop,
        host,
        hosts,
        rank * len(ctx),
        cluster is None or cluster.is_master,
        class_pixels=np.zeros(hp["num_classes"], dtype=np.int64) if waiting_for_counts else None,
        guard=NonFiniteGuard(hp["_max_nonfinite_iterations"], hp["learning_rate"], hp["clip_gradient"]),
        precision=chosen,
    )


def choose_precision(hp: dict, ctx: list) -> Precision:
    """``precision_dtype`` resolved for these devices (``auto``: by the CPU's flags), logged with its reason."""
    gpus = sum(1 for device in ctx if device.device_type == "gpu")
    chosen = precision.choose(hp["precision_dtype"], gpus, len(ctx) if hp["syncbn"] else 0)
    precision.log_choice(chosen)
    return chosen
