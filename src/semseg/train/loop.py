"""The ``train`` job: configuration -> data -> network -> epochs -> artifacts, in one readable place.

``run()`` wires plain functions together; ``train_one_epoch`` and ``evaluate`` are the loop. The
log lines, metrics and files are those of SageMaker's built-in algorithm (see ``logs``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .. import hyperparameters, logs, paths, sm_config
from ..data import file_mode, label_map, pipe_mode
from ..data.dataset import EpochSampler, PairDataset, ValidationSampler
from ..data.transforms import train_transform, validation_transform
from ..errors import UserError
from ..model import artifacts, pretrained
from ..model.factory import build_from_hyperparameters
from .early_stopping import EarlyStopping
from .metrics import ConfusionMatrix
from .optim import lr_schedule, optimizer_settings

log = logging.getLogger("semseg")

# He (MSRA) initialisation for every layer not loaded from a file: MXNet's default (uniform 0.07)
# starves a 50-layer ResNet trained from scratch, He's keeps activations at scale through depth.
HE_INIT = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)

REQUIRED_CHANNELS = ("train", "train_annotation", "validation", "validation_annotation")


class Stopped(Exception):
    """SIGTERM arrived: the job stops between iterations."""


class StopFlag:
    """Set by SIGTERM; checked by the loop between iterations so it stops within one step.

    Data-loader processes are forked after the handler is installed and inherit it; in them
    SIGTERM must keep its default meaning, or the pool could never be terminated on the way out.
    """

    def __init__(self):
        self.raised = False
        self._owner = os.getpid()

    def install(self) -> None:
        self._owner = os.getpid()
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._owner:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.raised = True

    def check(self) -> None:
        if self.raised:
            raise Stopped()


@dataclass
class Splits:
    """What the loop needs to know about the data of both splits."""

    train_loader: gluon.data.DataLoader
    validation_loader: gluon.data.DataLoader
    train_size: int
    validation_size: int
    iterations_per_epoch: int
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0))


def configure() -> tuple[dict, dict]:
    """Read, merge and validate hyperparameters, logging the three lines the built-in logs."""
    defaults = hyperparameters.defaults_as_strings()
    log.info("Reading default configuration from %s: %s", hyperparameters.__file__, defaults)
    provided = sm_config.read_hyperparameters()
    log.info("Merging with provided configuration from %s: %s", paths.hyperparameters_file(), provided)
    hp = hyperparameters.parse(provided)
    log.info("Final configuration: %s", {k: hyperparameters.to_string(v) for k, v in hp.items() if v is not None})
    return hp, provided


def contexts() -> list:
    gpus = mx.context.num_gpus()
    log.info("Number of GPUs being used: %d", gpus)
    return [mx.gpu(i) for i in range(gpus)] if gpus else [mx.cpu()]


def loader_workers(hp: dict) -> int:
    return max(0, min(hp["_workers"], os.cpu_count() or 1))


def data_splits(hp: dict, channels: dict, seed: int, stop: StopFlag | None = None) -> Splits:
    """Each split from its directories (File mode) or its per-epoch FIFOs (Pipe mode)."""
    streamed = pipe_mode.check_channels(channels)
    for name in REQUIRED_CHANNELS:
        if name.removesuffix("_annotation") in streamed:
            continue
        if name not in channels and not paths.channel_dir(name).is_dir():
            raise UserError(
                f"The '{name}' channel is missing; File mode needs the channels "
                "train, train_annotation, validation and validation_annotation"
            )
    label_map_dir = paths.channel_dir("label_map") if paths.channel_dir("label_map").is_dir() else None
    workers = loader_workers(hp)
    loaders, sizes, class_pixels = {}, {}, np.zeros(0, dtype=np.int64)
    iterations = max(1, hp["num_training_samples"] // hp["mini_batch_size"])
    for split in ("train", "validation"):
        if split in streamed:  # the stream's length is unknown: num_training_samples is the train size
            spec = label_map.load(label_map_dir, split)
            table = label_map.lookup_table(spec, hp["num_classes"], f"{split} label map")
            transform = (train_transform(hp["base_size"], hp["crop_size"]) if split == "train"
                         else validation_transform(hp["crop_size"]))
            loaders[split] = pipe_mode.pipe_loader(split, hp, transform, table, seed, workers,
                                                   stop.check if stop else pipe_mode.no_stop)
            sizes[split] = hp["num_training_samples"] if split == "train" else 0
            continue
        pairs = file_mode.find_pairs(paths.channel_dir(split), paths.channel_dir(f"{split}_annotation"))
        spec = label_map.load(label_map_dir, split)
        table = label_map.lookup_table(spec, hp["num_classes"], f"{split} label map")
        counts = file_mode.check_pairs(pairs, spec, hp["num_classes"], split)
        if split == "train":
            class_pixels = counts
            transform = train_transform(hp["base_size"], hp["crop_size"])
            sampler = EpochSampler(len(pairs), hp["mini_batch_size"], iterations, seed)
        else:
            transform = validation_transform(hp["crop_size"])
            sampler = ValidationSampler(len(pairs), hp["validation_mini_batch_size"])
        dataset = PairDataset(pairs, transform, table)
        loaders[split] = gluon.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=workers, thread_pool=False,
            prefetch=2 * workers if workers else None,
        )
        sizes[split] = len(pairs)
        log.info("%s: %d image/mask pairs", split, len(pairs))
    if hp["num_training_samples"] != sizes["train"]:
        log.info("num_training_samples is %d; the train channel holds %d pairs",
                 hp["num_training_samples"], sizes["train"])
    return Splits(loaders["train"], loaders["validation"], sizes["train"], sizes["validation"],
                  iterations, class_pixels)


def initial_weights(net, hp: dict, ctx: list) -> None:
    """Initialise, then load weights from the model channel or the staged ImageNet backbone."""
    with warnings.catch_warnings():  # GluonCV heads initialise some parameters in their constructors
        warnings.simplefilter("ignore", UserWarning)
        net.initialize(HE_INIT, ctx=ctx)
    net.collect_params().reset_ctx(ctx)
    model_channel = paths.channel_dir("model")
    if model_channel.is_dir() and any(model_channel.iterdir()):
        with tempfile.TemporaryDirectory() as scratch:
            source = artifacts.unpack_model_dir(model_channel, Path(scratch))
            previous = artifacts.read_hyperparameters(source)
            artifacts.check_same_architecture(hp, previous)
            weights = artifacts.weights_file(source)
            log.info("Incremental training: initializing all weights from %s", weights.name)
            try:
                net.load_parameters(str(weights), ctx=ctx)
            except Exception as exc:
                raise UserError(f"The weights {weights.name} of the model channel could not be loaded ({exc})") from None
        return
    if hp["use_pretrained_model"]:
        pretrained.load_backbone(net, hp["backbone"], ctx)
    else:
        log.info("use_pretrained_model is False: the backbone starts from random weights")


def make_criterion(hp: dict):
    from gluoncv.loss import MixSoftmaxCrossEntropyLoss

    return MixSoftmaxCrossEntropyLoss(aux=hp["_aux_loss"], aux_weight=hp["_aux_weight"],
                                      ignore_label=label_map.IGNORE_LABEL)


@dataclass
class EpochStats:
    loss: float  # mean per-sample training loss
    throughput: float  # samples/sec over the epoch
    data_wait: float  # share of the epoch spent waiting for the next batch


def train_one_epoch(net, criterion, trainer, loader, ctx, schedule, epoch, first_iteration, hp, stop) -> EpochStats:
    """One epoch of ``len(loader)`` iterations."""
    frequency = hp["_logging_frequency"]
    total_loss, samples, waiting, start = 0.0, 0, 0.0, time.time()
    window_start, window_samples = start, 0
    batches = iter(loader)
    for i in range(len(loader)):
        fetch_start = time.time()
        try:
            images, labels = next(batches)
        except StopIteration:  # a Pipe-mode stream shorter than num_training_samples: a shorter epoch
            break
        waiting += time.time() - fetch_start
        stop.check()
        learning_rate = schedule(first_iteration + i)
        trainer.set_learning_rate(learning_rate)
        image_parts = gluon.utils.split_and_load(images, ctx, even_split=False)
        label_parts = gluon.utils.split_and_load(labels, ctx, even_split=False)
        with autograd.record():
            losses = [criterion(*net(x), y) if hp["_aux_loss"] else criterion(net(x)[0], y)
                      for x, y in zip(image_parts, label_parts)]
        autograd.backward(losses)
        trainer.step(images.shape[0])
        total_loss += sum(float(loss.sum().asscalar()) for loss in losses)  # also waits for the step
        samples += images.shape[0]
        window_samples += images.shape[0]
        if (i + 1) % frequency == 0:
            now = time.time()
            logs.train_progress(epoch, i + 1, window_samples / max(now - window_start, 1e-9), learning_rate)
            window_start, window_samples = now, 0
    elapsed = max(time.time() - start, 1e-9)
    return EpochStats(total_loss / max(1, samples), samples / elapsed, waiting / elapsed)


def evaluate(net, loader, ctx, num_classes: int, epoch: int, hp: dict, stop) -> tuple[ConfusionMatrix, float]:
    """Confusion matrix over the whole validation split, and samples/sec."""
    matrix, samples, start = ConfusionMatrix(num_classes), 0, time.time()
    window_start, window_samples = start, 0
    for i, (images, labels) in enumerate(loader):
        stop.check()
        for x, y in zip(gluon.utils.split_and_load(images, ctx, even_split=False),
                        gluon.utils.split_and_load(labels, ctx, even_split=False)):
            predictions = net(x)[0].argmax(axis=1)
            matrix.update(y.asnumpy(), predictions.asnumpy())
        samples += images.shape[0]
        window_samples += images.shape[0]
        if (i + 1) % hp["_logging_frequency"] == 0:
            now = time.time()
            logs.validation_progress(epoch, i + 1, window_samples / max(now - window_start, 1e-9))
            window_start, window_samples = now, 0
    return matrix, samples / max(time.time() - start, 1e-9)


def write_report(history: list[dict], best: dict | None, class_pixels: np.ndarray) -> None:
    """Beyond the built-in: per-epoch history and the best epoch's per-class IoU and confusion matrix."""
    report = {"history": history, "best_epoch": best, "train_class_pixels": class_pixels.tolist()}
    text = json.dumps(report, indent=2)
    artifacts.write_atomically(paths.output_data_dir() / "metrics.json", lambda tmp: Path(tmp).write_text(text))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def run(stop: StopFlag) -> None:
    start = time.time()
    hp, _ = configure()
    resources = sm_config.read_resource_config()
    host = resources.current_host
    channels = sm_config.read_input_data_config()
    seed_everything(hp["_seed"])
    splits = data_splits(hp, channels, hp["_seed"], stop)
    ctx = contexts()
    if hp["mini_batch_size"] < len(ctx):
        raise UserError(
            f"mini_batch_size is {hp['mini_batch_size']} but {len(ctx)} GPUs are in use; "
            "it must be at least the number of GPUs"
        )

    net = build_from_hyperparameters(hp)
    initial_weights(net, hp, ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    criterion = make_criterion(hp)
    name, settings = optimizer_settings(hp)
    trainer = gluon.Trainer(net.collect_params(), name, settings, kvstore="device" if len(ctx) > 1 else None)
    iterations = splits.iterations_per_epoch
    log.info("LRScheduler setup: iters per epoch: %d, num_epochs %d", iterations, hp["epochs"])
    schedule = lr_schedule(hp, iterations)
    stopping = EarlyStopping(hp["early_stopping"], hp["early_stopping_min_epochs"],
                             hp["early_stopping_patience"], hp["early_stopping_tolerance"])
    model_dir = paths.model_dir()
    history, best = [], None
    setup_seconds = time.time() - start

    epochs_done = 0
    for epoch in range(hp["epochs"]):
        stats = train_one_epoch(net, criterion, trainer, splits.train_loader, ctx, schedule,
                                epoch, epoch * iterations, hp, stop)
        logs.train_epoch_end(host, epoch, stats.loss, stats.throughput)
        log.info("Waiting for data took %.1f%% of the epoch", 100 * stats.data_wait)
        matrix, validation_speed = evaluate(net, splits.validation_loader, ctx, hp["num_classes"], epoch, hp, stop)
        pixel_accuracy, miou = matrix.pixel_accuracy(), matrix.mean_iou()
        logs.validation_end(host, epoch, pixel_accuracy, miou, validation_speed)
        epochs_done = epoch + 1
        entry = {"epoch": epoch, "train_loss": stats.loss, "pixel_accuracy": pixel_accuracy, "mIOU": miou,
                 "learning_rate": schedule((epoch + 1) * iterations - 1)}
        history.append(entry)
        if stopping.update(miou):
            artifacts.save_hyperparameters(hp, model_dir)
            logs.serializing(model_dir / paths.BEST_PARAMS)
            artifacts.save_parameters(net, model_dir / paths.BEST_PARAMS)
            best = {**entry, "per_class_iou": matrix.iou().tolist(), "confusion_matrix": matrix.matrix.tolist()}
        write_report(history, best, splits.class_pixels)
        logs.epochs_progress(host, epochs_done, hp["epochs"])
        if stopping.should_stop(epochs_done):
            log.info("Early stopping: validation mIOU has not improved for %d epochs", stopping.patience)
            break

    final = model_dir / paths.host_model_file(host)
    artifacts.save_hyperparameters(hp, model_dir)
    logs.serializing(final)
    artifacts.save_parameters(net, final)
    logs.end_of_training_metrics(host, epochs_done, start, setup_seconds)
