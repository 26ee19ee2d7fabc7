"""The server's figures: ``GET /metrics`` in Prometheus' text format, and one summary log line per interval.

prometheus_client's multiprocess mode makes them the server's, not one worker's: ``serve/main.py``
gives the server a fresh, empty ``PROMETHEUS_MULTIPROC_DIR`` before gunicorn starts, every worker
writes its figures to memory-mapped files there, and whichever worker answers ``/metrics`` reads
all of them (``MultiProcessCollector``). Counters and histograms add up across workers; the gauges
say how they combine (``livesum``: in flight; ``livemax``: model info and drift, the worst worker).
gunicorn's ``child_exit`` hook (``worker_gone``) drops a dead worker's live gauges. Without the
variable (an app built by a test, no gunicorn) the figures are this process's.

What each prediction adds (``observe_prediction``), from the class probabilities at inference
resolution, so it costs a fraction of the forward pass: the pixels of each predicted class; the
image's mean top-class probability and its share of pixels whose top class has less than
``LOW_CONFIDENCE``; and the drift gauge, the Jensen-Shannon divergence (base 2: 0 = the same mix,
1 = no class in common) between the class mix of the worker's last ``SEMSEG_DRIFT_WINDOW`` images
(each image weighing the same) and the training masks' class mix (``class_pixels.json`` in the
model, written by training). A model without it has no drift gauge.

SageMaker routes only ``/ping`` and ``/invocations`` to a container, so the worker in slot 0 also
logs the server's figures once per ``SEMSEG_METRICS_LOG_INTERVAL`` seconds in which requests came
(``summary_line``): on an endpoint they reach CloudWatch Logs with the rest of the log.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as multiprocess_mode
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from semseg import names as outside

if TYPE_CHECKING:  # gunicorn's master imports this module for its hooks: no model code there
    from semseg.inference.predictor import Prediction, Predictor

log = logging.getLogger("semseg.serve")

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_OWN_DIR_PREFIX = "semseg-metrics-"  # the folders serve/main.py makes: the only ones removed at exit
CONTENT_TYPE = CONTENT_TYPE_LATEST
LOW_CONFIDENCE = 0.5
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "semseg_requests",
    "Requests answered, by route, status and answer content type",
    ["route", "status", "content_type"],
)
IN_FLIGHT = Gauge("semseg_requests_in_flight", "Requests being answered", multiprocess_mode="livesum")
REQUEST_SECONDS = Histogram("semseg_request_seconds", "Time to answer a request, by route", ["route"], buckets=SECONDS)
STAGE_SECONDS = Histogram(
    "semseg_stage_seconds", "Time of each stage of a prediction: decode, forward, encode", ["stage"], buckets=SECONDS
)
INPUT_MEGAPIXELS = Histogram(
    "semseg_input_megapixels",
    "Size of the images predicted, in megapixels (width x height)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
REQUEST_BYTES = Histogram(
    "semseg_request_bytes", "Size of the prediction request bodies", buckets=(1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
)
MODEL_INFO = Gauge(
    "semseg_model_info",
    "1 for each model loaded in some worker, with what it is",
    ["model", "algorithm", "backbone", "classes", "engine"],
    multiprocess_mode="livemax",
)
PREDICTED_PIXELS = Counter(
    "semseg_predicted_pixels", "Pixels predicted as each class, at inference resolution", ["model", "class_name"]
)
TOP_PROBABILITY = Histogram(
    "semseg_mean_top_probability",
    "Per image: the mean over its pixels of the probability of their most probable class",
    ["model"],
    buckets=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
LOW_CONFIDENCE_SHARE = Histogram(
    "semseg_low_confidence_share",
    f"Per image: the share of its pixels whose most probable class has a probability below {LOW_CONFIDENCE}",
    ["model"],
    buckets=(0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
)
DRIFT = Gauge(
    "semseg_class_drift",
    "Jensen-Shannon divergence (base 2, 0 to 1) between the predicted class mix of a worker's recent "
    "images and the training masks' class mix; the largest over the workers",
    ["model"],
    multiprocess_mode="livemax",
)
RECENT_SHARE = Gauge(
    "semseg_recent_class_share",
    "Share of each class in the predicted pixels of a worker's recent images",
    ["model", "class_name"],
    multiprocess_mode="livemostrecent",
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_VARIABLE) or None


def fresh_multiprocess_dir() -> str:
    """A new, empty folder for the workers' figure files (stale files of an earlier server would add
    up with the new ones), set in the environment for gunicorn and its workers."""
    folder = tempfile.mkdtemp(prefix=_OWN_DIR_PREFIX)
    os.environ[MULTIPROC_VARIABLE] = folder
    return folder


def remove_own_multiprocess_dir() -> None:
    """At the server's exit: the folder ``fresh_multiprocess_dir`` made, never any other."""
    folder = multiprocess_dir()
    if folder and Path(folder).name.startswith(_OWN_DIR_PREFIX) and Path(folder).parent == Path(tempfile.gettempdir()):
        shutil.rmtree(folder, ignore_errors=True)


def worker_gone(pid: int) -> None:
    if multiprocess_dir():
        multiprocess_mode.mark_process_dead(pid)


def _server_registry() -> CollectorRegistry:
    """What holds the server's figures: every worker's files in multiprocess mode, else this process's."""
    if not multiprocess_dir():
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess_mode.MultiProcessCollector(registry)
    return registry


def exposition() -> bytes:
    """The server's figures in Prometheus' text format (all workers' when in multiprocess mode)."""
    return generate_latest(_server_registry())


def model_loaded(name: str, predictor: Predictor) -> None:
    MODEL_INFO.labels(name, *_info_labels(predictor)).set(1)


def model_unloaded(name: str, predictor: Predictor) -> None:
    MODEL_INFO.labels(name, *_info_labels(predictor)).set(0)


def _info_labels(predictor: Predictor) -> tuple[str, str, str, str]:
    info = predictor.info
    return info.get("algorithm", ""), info.get("backbone", ""), str(predictor.engine.num_classes), predictor.engine.name


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Base-2 Jensen-Shannon divergence of two distributions: 0 when equal, 1 when disjoint."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        kept = a > 0
        return float(np.sum(a[kept] * np.log2(a[kept] / m[kept])))

    return min(1.0, max(0.0, (kl(p) + kl(q)) / 2))


class ClassMix:
    """The mean class shares of the last ``window`` images of one model, in this worker."""

    def __init__(self, num_classes: int, window: int):
        self.images: deque[np.ndarray] = deque(maxlen=window)
        self.total = np.zeros(num_classes)
        self._lock = threading.Lock()

    def add(self, shares: np.ndarray) -> np.ndarray:
        with self._lock:
            if len(self.images) == self.images.maxlen:
                self.total -= self.images[0]
            self.images.append(shares)
            self.total += shares
            return self.total / len(self.images)


class PredictionFigures:
    """What predictions add to the figures, per model; one per worker."""

    def __init__(self, drift_window: int):
        self.drift_window = drift_window
        self._mixes: dict[str, ClassMix] = {}
        self._lock = threading.Lock()

    def observe(self, name: str, predictor: Predictor, prediction: Prediction) -> None:
        probabilities = prediction.probabilities
        top = probabilities.max(axis=0)
        counts = np.bincount(probabilities.argmax(axis=0).ravel(), minlength=prediction.num_classes)
        table = prediction.classes
        for class_id, count in enumerate(counts):
            if count:
                PREDICTED_PIXELS.labels(name, table.name(class_id)).inc(int(count))
        TOP_PROBABILITY.labels(name).observe(float(top.mean()))
        LOW_CONFIDENCE_SHARE.labels(name).observe(float((top < LOW_CONFIDENCE).mean()))
        INPUT_MEGAPIXELS.observe(prediction.height * prediction.width / 1e6)
        recent = self._mix(name, prediction.num_classes).add(counts / max(counts.sum(), 1))
        for class_id, share in enumerate(recent):
            RECENT_SHARE.labels(name, table.name(class_id)).set(float(share))
        trained = predictor.training_shares
        if trained is not None and len(trained) == len(recent):
            DRIFT.labels(name).set(jensen_shannon(recent, np.asarray(trained, dtype=np.float64)))

    def _mix(self, name: str, num_classes: int) -> ClassMix:
        with self._lock:
            if name not in self._mixes:
                self._mixes[name] = ClassMix(num_classes, self.drift_window)
            return self._mixes[name]


# ---- the summary log line --------------------------------------------------------------------------


def _samples() -> dict[str, list]:
    """Every sample of the server's figures, by metric family name."""
    return {family.name: family.samples for family in _server_registry().collect()}


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """``q`` quantile of cumulative (upper bound, count) buckets, interpolated as PromQL's histogram_quantile."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


class Summary:
    """One log line of what the server did since the last line (differences of cumulative figures)."""

    def __init__(self):
        self.last: dict[str, float] = {}

    def line(self, interval_s: float) -> str | None:
        samples = _samples()
        now: dict[str, float] = {}
        for sample in samples.get("semseg_requests", []):
            if sample.name.endswith("_total"):
                key = f"status:{sample.labels['status'][0]}xx"
                now[key] = now.get(key, 0) + sample.value
        for sample in samples.get("semseg_request_seconds", []):
            if sample.name.endswith("_bucket") and sample.labels.get("route") == "/invocations":
                key = f"bucket:{sample.labels['le']}"
                now[key] = now.get(key, 0) + sample.value
        for family, key in (("semseg_mean_top_probability", "top"), ("semseg_low_confidence_share", "low")):
            for sample in samples.get(family, []):
                for suffix in ("_sum", "_count"):
                    if sample.name.endswith(suffix):
                        now[key + suffix] = now.get(key + suffix, 0) + sample.value
        delta = {key: value - self.last.get(key, 0) for key, value in now.items()}
        self.last = now
        requests = sum(value for key, value in delta.items() if key.startswith("status:"))
        if requests <= 0:
            return None
        statuses = ", ".join(
            f"{int(value)} {key[7:]}" for key, value in sorted(delta.items()) if key.startswith("status:") and value
        )
        buckets = sorted((float(key[7:]), value) for key, value in delta.items() if key.startswith("bucket:"))
        predictions = delta.get("top_count", 0)
        parts = [f"{int(requests)} requests ({statuses})", f"{requests / interval_s:.2f}/s"]
        if predictions:
            parts.append(
                f"/invocations p50 {_quantile(buckets, 0.5):.3f} s, p99 {_quantile(buckets, 0.99):.3f} s over "
                f"{int(predictions)} predictions"
            )
            parts.append(f"mean top-class probability {delta.get('top_sum', 0) / predictions:.3f}")
            parts.append(f"low-confidence pixels {100 * delta.get('low_sum', 0) / predictions:.1f}%")
        drifts = {
            sample.labels["model"]: sample.value
            for sample in samples.get("semseg_class_drift", [])
            if not math.isnan(sample.value)
        }
        if drifts:
            parts.append(
                "class drift "
                + ", ".join(f"{outside.shown(name)} {value:.3f}" for name, value in sorted(drifts.items()))
            )
        return f"Metrics over the last {interval_s:g} s: " + "; ".join(parts)


def start_summary_log(interval_s: float) -> threading.Event:
    """A daemon thread logging ``Summary.line`` every ``interval_s`` seconds; set the event to stop it."""
    stop, summary = threading.Event(), Summary()

    def run() -> None:
        while not stop.wait(interval_s):
            try:
                text = summary.line(interval_s)
            except Exception:  # figures must never take the worker down
                log.exception("The metrics summary could not be made")
                continue
            if text:
                log.info("%s", text)

    threading.Thread(target=run, name="metrics-summary", daemon=True).start()
    return stop
