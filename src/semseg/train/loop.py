"""The ``train`` job: configuration -> data -> network -> epochs -> artifacts, in one readable place.

``run()`` wires plain functions together; ``train_one_epoch`` and ``evaluate`` are the loop. The
log lines, metrics and files are those of SageMaker's built-in algorithm (see ``logs``).

Beyond one device: the global ``mini_batch_size`` is split over every GPU of the host (and over
the hosts of a multi-host job, see ``distributed``), gradients are summed through a kvstore, and
``syncbn`` synchronizes BatchNorm across the GPUs. Beyond one run: a checkpoint at the end of
every epoch and on SIGTERM, and a resume from the newest complete one (see ``checkpoint``).
Every random choice is re-seeded from ``(_seed, epoch)`` and ``(_seed, iteration)``, so a resumed
run trains like an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .. import hyperparameters, logs, paths, sm_config
from ..data import file_mode, label_map, pipe_mode
from ..data.batch_loader import BatchLoader
from ..data.dataset import EpochSampler, PairDataset, ValidationSampler
from ..data.transforms import train_transform, validation_transform
from ..errors import UserError, one_line
from ..model import artifacts, export, pretrained
from ..model.factory import build_from_hyperparameters
from . import checkpoint, distributed
from .checkpoint import TrainingState
from .early_stopping import EarlyStopping
from .metrics import ConfusionMatrix
from .optim import lr_schedule, optimizer_settings
from .stop import StopFlag, Stopped

log = logging.getLogger("semseg")

# He (MSRA) initialisation for every layer not loaded from a file: MXNet's default (uniform 0.07)
# starves a 50-layer ResNet trained from scratch, He's keeps activations at scale through depth.
HE_INIT = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)

REQUIRED_CHANNELS = ("train", "train_annotation", "validation", "validation_annotation")
CPU_CONTEXTS_ENV = "SEMSEG_CPU_CONTEXTS"  # testing aid: N CPU contexts stand in for N GPUs


@dataclass
class Splits:
    """What the loop needs to know about the data of both splits."""

    train_loader: BatchLoader
    validation_loader: BatchLoader
    iterations_per_epoch: int
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    train_batches: distributed.WorkerBatches | None = None  # None: a stream, which cannot skip ahead

    def close(self) -> None:
        """End both loaders' processes (nothing else does: see ``data.batch_loader``)."""
        self.train_loader.close()
        self.validation_loader.close()


def configure() -> dict:
    """Read, merge and validate hyperparameters, logging the three lines the built-in logs."""
    defaults = hyperparameters.defaults_as_strings()
    log.info("Reading default configuration from %s: %s", hyperparameters.__file__, defaults)
    provided = sm_config.read_hyperparameters()
    log.info("Merging with provided configuration from %s: %s", paths.hyperparameters_file(), provided)
    hp = hyperparameters.parse(provided)
    log.info("Final configuration: %s", {k: hyperparameters.to_string(v) for k, v in hp.items() if v is not None})
    return hp


def contexts() -> list:
    """One context per visible GPU, else the CPU; ``SEMSEG_CPU_CONTEXTS=N`` gives N CPU contexts."""
    stand_ins = int(os.environ.get(CPU_CONTEXTS_ENV) or 0)
    if stand_ins > 0:
        log.info("Number of GPUs being used: 0; %d CPU contexts stand in for GPUs (%s)", stand_ins, CPU_CONTEXTS_ENV)
        return [mx.cpu(i) for i in range(stand_ins)]
    gpus = mx.context.num_gpus()
    log.info("Number of GPUs being used: %d", gpus)
    return [mx.gpu(i) for i in range(gpus)] if gpus else [mx.cpu()]


def loader_workers(hp: dict) -> int:
    return max(0, min(hp["_workers"], os.cpu_count() or 1))


def data_splits(
    hp: dict, channels: dict, seed: int, stop: StopFlag | None = None, shard: tuple[int, int] = (0, 1)
) -> Splits:
    """Each split from its directories (File mode) or its per-epoch FIFOs (Pipe mode).

    In File mode this worker loads its ``shard`` of every global batch; in Pipe mode each host
    reads its own stream (SageMaker shards it with ShardedByS3Key).
    """
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
    loaders, sizes, class_pixels, train_batches = {}, {}, np.zeros(0, dtype=np.int64), None
    iterations = max(1, hp["num_training_samples"] // hp["mini_batch_size"])
    for split in ("train", "validation"):
        if split in streamed:  # the stream's length is unknown: num_training_samples is the train size
            spec = label_map.load(label_map_dir, split)
            table = label_map.lookup_table(spec, hp["num_classes"], f"{split} label map")
            transform = (
                train_transform(hp["base_size"], hp["crop_size"])
                if split == "train"
                else validation_transform(hp["crop_size"])
            )
            loaders[split] = pipe_mode.pipe_loader(
                split, hp, transform, table, seed, workers, stop.check if stop else pipe_mode.no_stop
            )
            sizes[split] = hp["num_training_samples"] if split == "train" else 0
            continue
        pairs = file_mode.find_pairs(paths.channel_dir(split), paths.channel_dir(f"{split}_annotation"))
        spec = label_map.load(label_map_dir, split)
        table = label_map.lookup_table(spec, hp["num_classes"], f"{split} label map")
        counts = file_mode.check_pairs(pairs, spec, hp["num_classes"], split)
        if split == "train":
            class_pixels = counts
            transform = train_transform(hp["base_size"], hp["crop_size"])
            sampler = train_batches = distributed.WorkerBatches(
                EpochSampler(len(pairs), hp["mini_batch_size"], iterations, seed), *shard
            )
        else:
            transform = validation_transform(hp["crop_size"])
            sampler = ValidationSampler(len(pairs), hp["validation_mini_batch_size"])
        loaders[split] = BatchLoader(
            PairDataset(pairs, transform, table), sampler, workers, stop_check=stop.check if stop else pipe_mode.no_stop
        )
        sizes[split] = len(pairs)
        log.info("%s: %d image/mask pairs", split, len(pairs))
    if hp["num_training_samples"] != sizes["train"]:
        log.info(
            "num_training_samples is %d; the train channel holds %d pairs", hp["num_training_samples"], sizes["train"]
        )
    return Splits(loaders["train"], loaders["validation"], iterations, class_pixels, train_batches)


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
                raise UserError(
                    f"The weights {weights.name} of the model channel could not be loaded ({one_line(exc)})"
                ) from None
        return
    if hp["use_pretrained_model"]:
        pretrained.load_backbone(net, hp["backbone"], ctx)
    else:
        log.info("use_pretrained_model is False: the backbone starts from random weights")


def make_criterion(hp: dict):
    from gluoncv.loss import MixSoftmaxCrossEntropyLoss

    return MixSoftmaxCrossEntropyLoss(
        aux=hp["_aux_loss"], aux_weight=hp["_aux_weight"], ignore_label=label_map.IGNORE_LABEL
    )


@dataclass
class EpochStats:
    loss: float  # mean per-sample training loss
    throughput: float  # samples/sec over the epoch
    data_wait: float  # share of the epoch spent waiting for the next batch


@dataclass
class EpochProgress:
    """How far an epoch got, so that SIGTERM can checkpoint it and a resumed run continue it."""

    done: int = 0  # iterations trained
    loss: float = 0.0  # their summed loss over this host's samples
    samples: int = 0


def batch_norm_layer(hp: dict, ctx: list) -> dict:
    """``syncbn`` on several devices: GluonCV's recipe, MXNet's SyncBatchNorm over ``len(ctx)`` devices."""
    if not hp["syncbn"] or len(ctx) < 2:
        return {}
    log.info("syncbn: BatchNorm statistics are synchronized across %d devices", len(ctx))
    return {"norm_layer": mx.gluon.contrib.nn.SyncBatchNorm, "norm_kwargs": {"num_devices": len(ctx)}}


def finish_deferred_init(net, hp: dict, ctx: list) -> None:
    """One inference pass, so every parameter has its shape before a kvstore or parallel threads see it."""
    net(mx.nd.zeros((1, 3, hp["crop_size"], hp["crop_size"]), ctx=ctx[0]))
    mx.nd.waitall()


def forward_backward(net, criterion, images, labels, ctx: list, aux: bool) -> list:
    """Losses of this batch split over the devices, gradients computed.

    With several devices each runs in its own thread, as GluonCV does: SyncBatchNorm waits inside
    the forward pass for every device to arrive, so one thread driving them in turn would deadlock.
    """

    def one(x, y):
        with autograd.record():
            loss = criterion(*net(x), y) if aux else criterion(net(x)[0], y)
        loss.backward()
        return loss

    image_parts = gluon.utils.split_and_load(images, ctx, even_split=False)
    label_parts = gluon.utils.split_and_load(labels, ctx, even_split=False)
    if len(ctx) == 1:
        return [one(image_parts[0], label_parts[0])]
    with ThreadPoolExecutor(len(ctx)) as pool:
        return list(pool.map(one, image_parts, label_parts))


def train_one_epoch(
    net,
    criterion,
    trainer,
    loader,
    ctx,
    schedule,
    epoch,
    first_iteration,
    hp,
    stop,
    progress: EpochProgress | None = None,
    kvstore=None,
    first_device: int = 0,
) -> EpochStats:
    """One epoch of ``len(loader)`` iterations; a resumed epoch starts after ``progress.done`` of them.

    ``kvstore``: a dist kvstore summing gradients over hosts; ``first_device``: the job-wide number
    of ``ctx[0]`` (each device's dropout is seeded by its number, so N hosts train like N devices).
    """
    progress = progress or EpochProgress()
    frequency = hp["_logging_frequency"]
    waiting, start, samples = 0.0, time.time(), 0
    window_start, window_samples = start, 0
    batches = iter(loader)
    for i in range(progress.done, len(loader)):
        fetch_start = time.time()
        try:
            images, labels = next(batches)
        except StopIteration:  # a Pipe-mode stream shorter than num_training_samples: a shorter epoch
            break
        waiting += time.time() - fetch_start
        stop.check()
        for number, device in enumerate(ctx, first_device):  # dropout
            mx.random.seed(derived_seed(hp["_seed"], "iteration", first_iteration + i) + number, ctx=device)
        learning_rate = schedule(first_iteration + i)
        trainer.set_learning_rate(learning_rate)
        losses = forward_backward(net, criterion, images, labels, ctx, hp["_aux_loss"])
        if kvstore is not None:
            distributed.sum_gradients(kvstore, net)
        trainer.step(hp["mini_batch_size"])  # the global batch: gradients are summed over devices and hosts
        progress.loss += sum(float(loss.sum().asscalar()) for loss in losses)  # also waits for the step
        progress.samples += images.shape[0]
        progress.done = i + 1
        samples += images.shape[0]
        window_samples += images.shape[0]
        if (i + 1) % frequency == 0:
            now = time.time()
            logs.train_progress(epoch, i + 1, window_samples / max(now - window_start, 1e-9), learning_rate)
            window_start, window_samples = now, 0
    elapsed = max(time.time() - start, 1e-9)
    return EpochStats(progress.loss / max(1, progress.samples), samples / elapsed, waiting / elapsed)


def evaluate(net, loader, ctx, num_classes: int, epoch: int, hp: dict, stop) -> tuple[ConfusionMatrix, float]:
    """Confusion matrix over the whole validation split, and samples/sec."""
    matrix, samples, start = ConfusionMatrix(num_classes), 0, time.time()
    window_start, window_samples = start, 0
    for i, (images, labels) in enumerate(loader):
        stop.check()
        for x, y in zip(
            gluon.utils.split_and_load(images, ctx, even_split=False),
            gluon.utils.split_and_load(labels, ctx, even_split=False),
        ):
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


def derived_seed(seed: int, kind: str, number: int) -> int:
    """A seed for one epoch or iteration of the run seeded ``seed``: resumed runs draw the same numbers."""
    return (seed * 1_000_003 + number * 7_919 + (1 if kind == "epoch" else 2)) % (2**31 - 1)


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


def training_configuration(hp: dict, iterations: int, hosts: int) -> dict:
    """What a checkpoint must share with this run to be resumed by it."""
    keys = hyperparameters.ARCHITECTURE_KEYS + ("mini_batch_size", "_seed")
    return {
        **{key: hyperparameters.to_string(hp[key]) for key in keys},
        "iterations_per_epoch": iterations,
        "hosts": hosts,
    }


def resume(host: str, cluster, configuration: dict, net, trainer, ctx) -> TrainingState:
    """The newest complete checkpoint's state, loaded into ``net`` and ``trainer``; a fresh state without one.

    In a multi-host job every host resumes from the position all hosts agreed on at start-up.
    """
    if not checkpoint.enabled():
        log.info(
            "Checkpoints are off: neither %s nor %s exists", paths.checkpoint_config_file(), checkpoint.directory()
        )
    if cluster is not None and cluster.resume_position is None:
        return TrainingState(configuration=configuration)
    found = checkpoint.load(host, cluster.resume_position if cluster else None)
    if found is None:
        return TrainingState(configuration=configuration)
    state = checkpoint.restore_training(found, configuration, net, trainer, ctx)
    log.info(
        "Resuming from checkpoint %s: epoch %d, after %d of its %d iterations",
        found.path,
        state.epoch,
        state.iteration,
        configuration["iterations_per_epoch"],
    )
    best = found.file(checkpoint.BEST)
    if best is not None and (cluster is None or cluster.is_master):
        artifacts.write_atomically(paths.model_dir() / paths.BEST_PARAMS, lambda tmp: shutil.copyfile(best, tmp))
    return state


def run(stop: StopFlag, cluster: distributed.Cluster | None = None) -> None:
    """The whole job; its loader processes are ended here on every way out."""
    start = time.time()
    hp = configure()
    seed_everything(hp["_seed"])
    rank, hosts = (cluster.rank, cluster.size) if cluster else (0, 1)
    splits = data_splits(hp, sm_config.read_input_data_config(), hp["_seed"], stop, shard=(rank, hosts))
    try:
        stop.check()
        train(hp, splits, stop, cluster, start)
    finally:
        splits.close()


def train(hp: dict, splits: Splits, stop: StopFlag, cluster: distributed.Cluster | None, start: float) -> None:
    resources = sm_config.read_resource_config()
    host = resources.current_host
    rank, hosts = (cluster.rank, cluster.size) if cluster else (0, 1)
    writes_artifacts = cluster is None or cluster.is_master  # SageMaker merges every host's model/
    ctx = contexts()
    check_batch_size(hp, len(ctx), hosts)

    net = build_from_hyperparameters(hp, **batch_norm_layer(hp, ctx))
    initial_weights(net, hp, ctx)
    stop.check()
    net.hybridize(static_alloc=True, static_shape=True)
    if len(ctx) > 1 or cluster:
        finish_deferred_init(net, hp, ctx)
    criterion = make_criterion(hp)
    name, settings = optimizer_settings(hp)
    local = "device" if len(ctx) > 1 and not cluster else None  # sums over this host's devices
    trainer = gluon.Trainer(
        net.collect_params(), name, settings, kvstore=local, update_on_kvstore=False if local else None
    )
    iterations = splits.iterations_per_epoch
    log.info("LRScheduler setup: iters per epoch: %d, num_epochs %d", iterations, hp["epochs"])
    schedule = lr_schedule(hp, iterations)
    stopping = EarlyStopping(
        hp["early_stopping"],
        hp["early_stopping_min_epochs"],
        hp["early_stopping_patience"],
        hp["early_stopping_tolerance"],
    )
    state = resume(host, cluster, training_configuration(hp, iterations, hosts), net, trainer, ctx)
    for key, value in state.early_stopping.items():
        setattr(stopping, key, value)
    if splits.train_batches is not None and state.sampler is not None:
        splits.train_batches.sampler.restore(state.sampler)
    kvstore = distributed.create_kvstore(net, ctx) if cluster else None
    if kvstore is not None:
        stop.agree = distributed.any_worker(kvstore)
    model_dir = paths.model_dir()
    if writes_artifacts:
        artifacts.remove_partial_files(model_dir)
    setup_seconds = time.time() - start

    def save_checkpoint(epoch: int, progress: EpochProgress, sampler_state: dict | None) -> None:
        state.epoch, state.iteration, state.loss, state.samples = epoch, progress.done, progress.loss, progress.samples
        state.sampler = sampler_state
        state.early_stopping = {
            "best": stopping.best,
            "epochs_without_improvement": stopping.epochs_without_improvement,
        }
        best_weights = model_dir / paths.BEST_PARAMS if writes_artifacts else None
        checkpoint.save_training(host, state, net, trainer, best_weights)

    epochs_done = state.epoch
    for epoch in range(state.epoch, state.epoch if state.early_stopped else hp["epochs"]):
        seed_everything(derived_seed(hp["_seed"], "epoch", epoch))
        progress = EpochProgress()
        if epoch == state.epoch and (splits.train_batches is not None or state.iteration == iterations):
            progress = EpochProgress(state.iteration, state.loss, state.samples)
        sampler_state = splits.train_batches.sampler.state() if splits.train_batches is not None else None
        if splits.train_batches is not None and progress.done:
            splits.train_batches.resume_at(progress.done)
        try:
            stats = train_one_epoch(
                net,
                criterion,
                trainer,
                splits.train_loader,
                ctx,
                schedule,
                epoch,
                epoch * iterations,
                hp,
                stop,
                progress,
                kvstore,
                rank * len(ctx),
            )
            logs.train_epoch_end(host, epoch, stats.loss, stats.throughput)
            log.info("Waiting for data took %.1f%% of the epoch", 100 * stats.data_wait)
            if len(ctx) > 1 or cluster:
                distributed.average_running_statistics(net, kvstore, hosts)
            matrix, validation_speed = evaluate(net, splits.validation_loader, ctx, hp["num_classes"], epoch, hp, stop)
        except Stopped:
            if (epoch, progress.done) != state.position:
                save_checkpoint(epoch, progress, sampler_state)
            raise
        pixel_accuracy, miou = matrix.pixel_accuracy(), matrix.mean_iou()
        logs.validation_end(host, epoch, pixel_accuracy, miou, validation_speed)
        epochs_done = epoch + 1
        entry = {
            "epoch": epoch,
            "train_loss": stats.loss,
            "pixel_accuracy": pixel_accuracy,
            "mIOU": miou,
            "learning_rate": schedule((epoch + 1) * iterations - 1),
        }
        state.history.append(entry)
        if stopping.update(miou):
            if writes_artifacts:
                artifacts.save_hyperparameters(hp, model_dir)
                logs.serializing(model_dir / paths.BEST_PARAMS)
                artifacts.save_parameters(net, model_dir / paths.BEST_PARAMS)
            state.best = {**entry, "per_class_iou": matrix.iou().tolist(), "confusion_matrix": matrix.matrix.tolist()}
        if writes_artifacts:
            write_report(state.history, state.best, splits.class_pixels)
        logs.epochs_progress(host, epochs_done, hp["epochs"])
        state.early_stopped = stopping.should_stop(epochs_done)
        save_checkpoint(
            epochs_done,
            EpochProgress(),
            splits.train_batches.sampler.state() if splits.train_batches is not None else None,
        )
        if state.early_stopped:
            log.info("Early stopping: validation mIOU has not improved for %d epochs", stopping.patience)
            break

    stop.check()  # collective in a multi-host job: every host makes it
    if not writes_artifacts:
        log.info("Model artifacts are written by the first host, %s", cluster.hosts[0])
        logs.end_of_training_metrics(host, epochs_done, start, setup_seconds)
        return
    final = model_dir / paths.host_model_file(host)
    artifacts.save_hyperparameters(hp, model_dir)
    logs.serializing(final)
    artifacts.save_parameters(net, final)
    export.export_onnx(hp, model_dir)  # model/model.onnx for CPU serving; a failure only warns
    logs.end_of_training_metrics(host, epochs_done, start, setup_seconds)
