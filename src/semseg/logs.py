"""The built-in algorithm's log line formats, the one place they are written.

Users point SageMaker ``MetricDefinitions`` and tuning jobs at these lines, so each must match
the built-in's text to the letter (see the README for the regexes). ``METRIC_REGEXES`` is
what the README documents and the tests apply to a real run's log.
"""

from __future__ import annotations

import json
import logging
import numbers
import sys
import time

from . import names

LOG_FORMAT = "[%(asctime)s %(levelname)s %(thread)d] %(message)s"
DATE_FORMAT = "%m/%d/%Y %H:%M:%S"

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
METRIC_REGEXES = {
    "validation:mIOU": r"#quality_metric\. host: \S+, epoch: \d+, validation mIOU: " + _NUMBER,
    "validation:pixel_accuracy": r"#quality_metric\. host: \S+, epoch: \d+, validation pixel_accuracy: " + _NUMBER,
    "train:loss": r"#quality_metric\. host: \S+, epoch: \d+, train loss: " + _NUMBER,
}

# Beyond the built-in: each class's IoU at each epoch, with its id and name (groups: epoch, id, name, IoU),
# and its Dice, the line's last figure (groups: epoch, id, Dice).
CLASS_IOU_REGEX = r"#class_metric\. host: \S+, epoch: (\d+), class (\d+) \((.*)\): validation IoU: " + _NUMBER
CLASS_DICE_REGEX = r"#class_metric\. host: \S+, epoch: (\d+), class (\d+) .*, validation Dice: " + _NUMBER

log = logging.getLogger("semseg")


class OneLineFormatter(logging.Formatter):
    """The built-in's format, each record on one line, every argument that is not a number shown
    as an outside name (``names.shown``): a zip member or S3 key that holds a line break or a metric
    line's text cannot forge a figure that a MetricDefinitions regex reads. A traceback still
    follows its record on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = names.one_line(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.args, tuple):
            record.args = tuple(arg if isinstance(arg, numbers.Number) else names.shown(arg) for arg in record.args)
        return super().format(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stdout in the built-in's format (CloudWatch shows stdout and stderr alike)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(OneLineFormatter(LOG_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def configuration(
    defaults_source: object, defaults: dict, provided_source: object, provided: dict, final: dict
) -> None:
    log.info("Reading default configuration from %s: %s", defaults_source, defaults)
    log.info("Merging with provided configuration from %s: %s", provided_source, provided)
    log.info("Final configuration: %s", final)


def label_map(split: str, spec: dict, default: bool) -> None:
    if default:
        log.warning("label maps not provided, using defaults.")
    log.info("#label_map %s :%s", split, spec)


def devices(gpus: int, cpu_stand_ins: int = 0, stand_in_variable: str = "") -> None:
    if cpu_stand_ins:
        log.info(
            "Number of GPUs being used: 0; %d CPU contexts stand in for GPUs (%s)", cpu_stand_ins, stand_in_variable
        )
    else:
        log.info("Number of GPUs being used: %d", gpus)


def lr_scheduler(iterations: int, epochs: int) -> None:
    log.info("LRScheduler setup: iters per epoch: %d, num_epochs %d", iterations, epochs)


def train_progress(epoch: int, iterations: int, speed: float, learning_rate: float) -> None:
    log.info(
        "#progress_notice. epoch: %d, iterations: %d speed: %s samples/sec learning_rate: %.6f",
        epoch,
        iterations,
        speed,
        learning_rate,
    )


def validation_progress(epoch: int, iterations: int, speed: float) -> None:
    log.info("#progress_notice. epoch: %d, iterations: %d speed: %s samples/sec", epoch, iterations, speed)


def train_epoch_end(host: str, epoch: int, loss: float, throughput: float) -> None:
    log.info("#quality_metric. host: %s, epoch: %d, train loss: %s .", host, epoch, loss)
    log.info("#throughput_metric. host: %s, epoch: %d, train throughput: %s samples/sec.", host, epoch, throughput)


def validation_end(host: str, epoch: int, pixel_accuracy: float, miou: float, throughput: float) -> None:
    log.info("#quality_metric. host: %s, epoch: %d, validation pixel_accuracy: %s .", host, epoch, pixel_accuracy)
    log.info("#quality_metric. host: %s, epoch: %d, validation mIOU: %s .", host, epoch, miou)
    log.info("#throughput_metric. host: %s, epoch: %d, validation throughput: %s samples/sec.", host, epoch, throughput)


def per_class(
    host: str, epoch: int, names: list[str], ious: list[float], accuracies: list[float], dices: list[float]
) -> None:
    """Beyond the built-in: one line per class, named as the model's class table names it."""
    for class_id, (name, iou, accuracy, dice) in enumerate(zip(names, ious, accuracies, dices)):
        log.info(
            "#class_metric. host: %s, epoch: %d, class %d (%s): validation IoU: %s, pixel accuracy: %s, "
            "validation Dice: %s .",
            host,
            epoch,
            class_id,
            name,
            iou,
            accuracy,
            dice,
        )


def epochs_progress(host: str, done: int, total: int) -> None:
    log.info("#progress_metric: host=%s, completed %d %% of epochs", host, int(100 * done / total))


def serializing(path: object) -> None:
    log.info("Serializing model to %s", path)


def end_of_training_metrics(host: str, epochs: int, start: float, setup_seconds: float) -> None:
    """The closing ``#metrics`` line: epochs run, total and setup time in milliseconds."""
    now = time.time()
    total_ms = (now - start) * 1000.0
    setup_ms = setup_seconds * 1000.0

    def stat(value: float) -> dict:
        return {"count": 1, "max": value, "sum": float(value), "min": value}

    record = {
        "Metrics": {"epochs": stat(epochs), "totaltime": stat(total_ms), "setuptime": stat(setup_ms)},
        "EndTime": now,
        "Dimensions": {"Host": host, "Operation": "training", "Algorithm": "AWS/Semantic Segmentation"},
        "StartTime": start,
    }
    print("#metrics " + json.dumps(record), flush=True)
