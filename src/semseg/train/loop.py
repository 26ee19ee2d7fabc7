"""The ``train`` job: configuration -> data -> network -> epochs -> artifacts, in one readable place.

``train()`` wires the parts together (``parts`` builds them, ``data.loaders`` feeds them,
``checkpoint`` saves and resumes them); ``train_epochs`` with ``train_one_epoch`` and ``evaluate``
is the loop. The log lines, metrics and files are those of SageMaker's built-in algorithm (see
``logs``). Beyond one run: a checkpoint at the end of every epoch and on SIGTERM, and a resume
from the newest complete one. Every random choice is re-seeded from ``(_seed, epoch)`` and
``(_seed, iteration)``, so a resumed run trains like an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from .. import classes, files, logs, paths, report, sm_config
from ..data.loaders import Splits, data_splits
from ..evaluation.scores import ConfusionMatrix
from ..model import artifacts, export
from ..report.examples import ValidationExamples
from . import checkpoint, guards, int8_gate, kvstore, native_scores, parts, precision
from .checkpoint import EpochProgress, TrainingState
from .early_stopping import EarlyStopping
from .parts import Training, seed_everything
from .stop import StopFlag, Stopped

log = logging.getLogger("semseg")


@dataclass
class EpochStats:
    loss: float  # mean per-sample training loss
    throughput: float  # samples/sec over the epoch
    data_wait: float  # share of the epoch spent waiting for batches that were not ready (``BatchLoader.waited``)


@dataclass
class EpochLoop:
    """One run's moving parts, as the epoch loop uses them."""

    training: Training
    splits: Splits
    saver: checkpoint.Saver
    state: TrainingState
    stopping: EarlyStopping
    class_table: classes.ClassTable  # names for the per-class log lines and the report
    best_examples: ValidationExamples | None = None  # a few validation samples of the best epoch


def derived_seed(seed: int, kind: str, number: int) -> int:
    """A seed for one epoch or iteration of the run seeded ``seed``: resumed runs draw the same numbers."""
    return (seed * 1_000_003 + number * 7_919 + (1 if kind == "epoch" else 2)) % (2**31 - 1)


def forward_backward(training: Training, images, labels) -> list:
    """Losses of this batch split over the devices, gradients computed.

    With several devices each runs in its own thread, as GluonCV does: SyncBatchNorm waits inside
    the forward pass for every device to arrive, so one thread driving them in turn would deadlock.
    """
    net, criterion, ctx, aux = training.net, training.criterion, training.ctx, training.hp["_aux_loss"]

    def one(x, y):
        with autograd.record():
            # float32 for the loss, which bfloat16 training leaves unwrapped: a network that ends in a
            # convolution (unet) hands it bfloat16 scores; a no-op on float32 ones
            outputs = [output.astype("float32", copy=False) for output in net(x)]
            loss = criterion(*outputs, y) if aux else criterion(outputs[0], y)
        loss.backward()
        return loss

    image_parts = gluon.utils.split_and_load(images, ctx, even_split=False)
    label_parts = gluon.utils.split_and_load(labels, ctx, even_split=False)
    if len(ctx) == 1:
        return [one(image_parts[0], label_parts[0])]
    with ThreadPoolExecutor(len(ctx)) as pool:
        return list(pool.map(one, image_parts, label_parts))


def train_step(training: Training, images, labels) -> tuple[float, bool]:
    """Forward, backward and update: the batch's summed loss, and whether the update was made.

    It is skipped, on every device and host, when the loss or a gradient is not finite on any of them.
    """
    losses = forward_backward(training, images, labels)
    total = sum(float(loss.sum().asscalar()) for loss in losses)
    finite = math.isfinite(total) and guards.gradients_finite(training.net)
    if training.any_host(not finite):  # a collective in a multi-host job: every host skips together
        return total, False
    if training.kvstore is not None:
        kvstore.sum_gradients(training.kvstore, training.net)
    training.trainer.step(training.hp["mini_batch_size"])  # the global batch: summed over devices and hosts
    return total, True


def train_one_epoch(
    training: Training, loader, epoch: int, first_iteration: int, progress: EpochProgress | None = None
) -> EpochStats:
    """One epoch of ``len(loader)`` iterations; a resumed epoch starts after ``progress.done`` of them."""
    hp, progress = training.hp, progress or EpochProgress()
    waited_before, start, samples = loader.waited, time.time(), 0
    window_start, window_samples = start, 0
    batches = iter(loader)
    for i in range(progress.done, len(loader)):
        batch = next(batches, None)  # None: a Pipe-mode stream shorter than num_training_samples
        training.stop.check()
        if training.any_host(batch is None):  # every host ends a short epoch at the same iteration
            break
        images, labels = batch
        guards.warn_if_unlabelled(labels, epoch, i)
        if training.class_pixels is not None:  # ``auto`` class weights in Pipe mode: count this epoch's pixels
            training.class_pixels += ConfusionMatrix.class_counts(labels.asnumpy(), hp["num_classes"])
        for number, device in enumerate(training.ctx, training.first_device):  # dropout
            mx.random.seed(derived_seed(hp["_seed"], "iteration", first_iteration + i) + number, ctx=device)
        learning_rate = training.schedule(first_iteration + i)
        training.trainer.set_learning_rate(learning_rate)
        loss, updated = train_step(training, images, labels)
        if updated:
            training.guard.finite()
            progress.loss += loss
            progress.samples += images.shape[0]
        else:
            training.guard.skipped_update(epoch, i, loss)
        progress.done = i + 1
        samples += images.shape[0]
        window_samples += images.shape[0]
        if (i + 1) % hp["_logging_frequency"] == 0:
            now = time.time()
            logs.train_progress(epoch, i + 1, window_samples / max(now - window_start, 1e-9), learning_rate)
            window_start, window_samples = now, 0
    elapsed = max(time.time() - start, 1e-9)
    return EpochStats(
        progress.loss / max(1, progress.samples), samples / elapsed, (loader.waited - waited_before) / elapsed
    )


def evaluate(
    training: Training, loader, epoch: int, examples: ValidationExamples | None = None
) -> tuple[ConfusionMatrix, float]:
    """Confusion matrix over the whole validation split, and samples/sec; the first samples go to
    ``examples`` for the report."""
    matrix, samples, start = ConfusionMatrix(training.hp["num_classes"]), 0, time.time()
    window_start, window_samples = start, 0
    for i, (images, labels) in enumerate(loader):
        training.stop.check_here()  # each host's validation stream may have its own length
        for x, y in zip(
            gluon.utils.split_and_load(images, training.ctx, even_split=False),
            gluon.utils.split_and_load(labels, training.ctx, even_split=False),
        ):
            truths, predictions = y.asnumpy(), training.net(x)[0].argmax(axis=1).asnumpy()
            matrix.update(truths, predictions)
            if examples is not None and examples.room:
                examples.keep(x[: examples.room].asnumpy(), truths, predictions)
        samples += images.shape[0]
        window_samples += images.shape[0]
        if (i + 1) % training.hp["_logging_frequency"] == 0:
            now = time.time()
            logs.validation_progress(epoch, i + 1, window_samples / max(now - window_start, 1e-9))
            window_start, window_samples = now, 0
    return matrix, samples / max(time.time() - start, 1e-9)


def write_report(history: list[dict], best: dict | None, class_pixels: np.ndarray, end: dict | None = None) -> None:
    """Beyond the built-in: per-epoch history and the best epoch's per-class IoU, Dice and confusion
    matrix; ``end``: what the end of training measured as the endpoint serves (``native_scores``)."""
    report = {"history": history, "best_epoch": best, "train_class_pixels": class_pixels.tolist(), **(end or {})}
    text = json.dumps(report, indent=2)
    files.write_atomically(paths.output_data_dir() / "metrics.json", lambda tmp: Path(tmp).write_text(text))


def train_epochs(loop: EpochLoop) -> int:
    """Every epoch from the resumed position to the last (or early stopping); returns the epochs done."""
    training, splits, state, batches = loop.training, loop.splits, loop.state, loop.splits.train_batches
    hp, iterations, epochs_done = training.hp, splits.iterations_per_epoch, state.epoch
    for epoch in range(state.epoch, state.epoch if state.early_stopped else hp["epochs"]):
        seed_everything(derived_seed(hp["_seed"], "epoch", epoch))
        progress = state.progress_in(epoch, iterations, can_skip=batches is not None)
        sampler_state = batches.sampler.state() if batches is not None else None
        if batches is not None and progress.done:
            batches.resume_at(progress.done)
        try:
            stats = train_one_epoch(training, splits.train_loader, epoch, epoch * iterations, progress)
            logs.train_epoch_end(training.host, epoch, stats.loss, stats.throughput)
            log.info("Waiting for data took %.1f%% of the epoch", 100 * stats.data_wait)
            if len(training.ctx) > 1 or training.kvstore is not None:
                kvstore.average_running_statistics(training.net, training.kvstore, training.hosts)
            examples = ValidationExamples() if training.writes_artifacts else None
            matrix, validation_speed = evaluate(training, splits.validation_loader, epoch, examples)
            guards.warn_if_collapsed(matrix, epoch, list(loop.class_table.names), training.hp)
        except Stopped:
            if (epoch, progress.done) != state.position:
                state.move_to(epoch, progress, sampler_state, loop.stopping)
                loop.saver.save(state)
            raise
        epochs_done = epoch + 1
        if training.class_pixels is not None:
            parts.set_counted_weights(training, training.class_pixels)
        end_epoch(loop, epoch, stats, matrix, validation_speed, examples)
        if state.early_stopped:
            log.info("Early stopping: validation mIOU has not improved for %d epochs", loop.stopping.patience)
            break
    return epochs_done


def end_epoch(
    loop: EpochLoop,
    epoch: int,
    stats: EpochStats,
    matrix: ConfusionMatrix,
    validation_speed: float,
    examples: ValidationExamples | None = None,
) -> None:
    """Log and record the epoch, keep the best weights (and examples), write metrics.json and the checkpoint."""
    training, state, model_dir = loop.training, loop.state, paths.model_dir()
    pixel_accuracy, miou, per_class_iou = matrix.pixel_accuracy(), matrix.mean_iou(), matrix.iou().tolist()
    per_class_dice = matrix.dice().tolist()
    logs.validation_end(training.host, epoch, pixel_accuracy, miou, validation_speed)
    accuracies = matrix.class_accuracy().tolist()
    logs.per_class(training.host, epoch, loop.class_table.names, per_class_iou, accuracies, per_class_dice)
    entry = {
        "epoch": epoch,
        "train_loss": stats.loss,
        "pixel_accuracy": pixel_accuracy,
        "mIOU": miou,
        "learning_rate": training.schedule((epoch + 1) * loop.splits.iterations_per_epoch - 1),
        "per_class_iou": per_class_iou,
        "mean_dice": matrix.mean_dice(),
        "per_class_dice": per_class_dice,
    }
    state.history.append(entry)
    if loop.stopping.update(miou):
        if training.writes_artifacts:
            artifacts.save_hyperparameters(training.hp, model_dir)
            logs.serializing(model_dir / paths.BEST_PARAMS)
            artifacts.save_parameters(training.net, model_dir / paths.BEST_PARAMS)
        state.best = {**entry, "confusion_matrix": matrix.matrix.tolist()}
        loop.best_examples = examples
    if training.writes_artifacts:
        write_report(state.history, state.best, loop.splits.class_pixels)
    logs.epochs_progress(training.host, epoch + 1, training.hp["epochs"])
    state.early_stopped = loop.stopping.should_stop(epoch + 1)
    batches = loop.splits.train_batches
    state.move_to(epoch + 1, EpochProgress(), batches.sampler.state() if batches is not None else None, loop.stopping)
    loop.saver.save(state)


def save_model(training: Training) -> None:
    """The final weights, their hyperparameters, the ONNX export and its int8 copy (failures of the last
    two only warn)."""
    model_dir = paths.model_dir()
    final = model_dir / paths.host_model_file(training.host)
    artifacts.save_hyperparameters(training.hp, model_dir)
    logs.serializing(final)
    artifacts.save_parameters(training.net, final)
    if not training.hp["_onnx"]:
        (model_dir / export.ONNX_FILE).unlink(missing_ok=True)  # an earlier export is of other weights
        log.info("No ONNX export: the hyperparameter _onnx is False, so the endpoint serves through MXNet")
    else:
        precision.disable()  # the export traces a fresh network: in float32
        export.export_onnx(training.hp, model_dir)
    int8_gate.quantize_after_training(training.hp, model_dir)


def train(stop: StopFlag, cluster=None) -> None:
    """The whole job; its loader processes are ended here on every way out.

    ``cluster``: this host's place in a multi-host job (``distributed.Cluster``), None on one host.
    """
    start = time.time()
    hp = parts.configure()
    seed_everything(hp["_seed"])
    rank, hosts = (cluster.rank, cluster.size) if cluster else (0, 1)
    splits = data_splits(hp, sm_config.read_input_data_config(), hp["_seed"], stop.check_here, shard=(rank, hosts))
    try:
        stop.check()
        training = parts.build(hp, stop, cluster, splits.iterations_per_epoch, splits.class_pixels)
        if training.writes_artifacts:
            files.remove_partial_files(paths.model_dir())
        best_weights = paths.model_dir() / paths.BEST_PARAMS if training.writes_artifacts else None
        saver = checkpoint.Saver(training.host, training.net, training.trainer, best_weights)
        stopping = parts.early_stopping(hp)
        configuration = checkpoint.training_configuration(hp, splits.iterations_per_epoch, hosts)
        state = saver.resume(configuration, training.ctx, cluster.resume_position if cluster else checkpoint.NEWEST)
        state.restore_early_stopping(stopping)
        if splits.train_batches is not None and state.sampler is not None:
            splits.train_batches.sampler.restore(state.sampler)
        if cluster:
            training.kvstore = kvstore.create(training.net, training.ctx)
            stop.agree = training.any_host = kvstore.any_worker(training.kvstore)
        setup_seconds = time.time() - start
        class_table = classes.load(paths.model_dir(), hp["num_classes"])
        epoch_loop = EpochLoop(training, splits, saver, state, stopping, class_table)
        epochs_done = train_epochs(epoch_loop)
        stop.check()  # collective in a multi-host job: every host makes it
        if training.writes_artifacts:
            save_model(training)
            artifacts.save_class_pixels(splits.class_pixels, paths.model_dir())
            end = native_scores.score_after_training(hp, paths.model_dir(), stop.check_here)
            write_report(state.history, state.best, splits.class_pixels, end.figures)
            report.write(
                paths.output_data_dir(),
                state.history,
                state.best,
                class_table,
                splits.class_pixels.tolist(),
                epoch_loop.best_examples,
                native=end.for_report(native_scores.VALIDATION_KEY),
                test=end.for_report(native_scores.TEST_KEY),
            )
        else:
            log.info("Model artifacts are written by the first host, %s", cluster.hosts[0])
        logs.end_of_training_metrics(training.host, epochs_done, start, setup_seconds)
    finally:
        splits.close()
