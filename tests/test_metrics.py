"""The server's figures: ``GET /metrics`` read back with prometheus_client's own text parser.

The arithmetic (drift, quantiles) and what one request adds run in this process against the app;
the acceptance test runs a real 2-worker gunicorn on the session's learnt model, sends a known set
of requests, and checks that the figures of ``/metrics`` are the sum of both workers' own (each
worker's file of the multiprocess folder read on its own), that the drift gauge moves when the
class mix of the images changes, and that the summary log line carries the same counts.
"""

from __future__ import annotations

import io
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image
from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.parser import text_string_to_metric_families

from semseg import classes
from semseg.inference.predictor import Predictor
from semseg.inference.settings import ServingSettings
from serve import metrics
from serve.app import create_app


def figures(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of an exposition, by (sample name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(table: dict, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (sample, have), v in table.items() if sample == name and wanted <= set(have))


def test_the_drift_is_zero_for_the_same_mix_and_one_for_disjoint_ones():
    same = np.array([0.7, 0.2, 0.1])
    assert metrics.jensen_shannon(same, same) == pytest.approx(0, abs=1e-12)
    assert metrics.jensen_shannon(np.array([1.0, 0, 0]), np.array([0, 0.5, 0.5])) == pytest.approx(1)
    near, far = np.array([0.65, 0.25, 0.1]), np.array([1.0, 0, 0])
    assert 0 < metrics.jensen_shannon(near, same) < metrics.jensen_shannon(far, same) < 1


def test_the_quantiles_are_read_from_the_buckets_as_histogram_quantile_does():
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert metrics._quantile(buckets, 0.5) == pytest.approx(0.1)
    assert metrics._quantile(buckets, 0.7) == pytest.approx(0.3)
    assert metrics._quantile(buckets, 0.99) == pytest.approx(0.95)
    assert math.isnan(metrics._quantile([], 0.5))


class HalfEngine:
    """Satisfies ``Engine``: the left half of the window is class 1 (p 0.9), the right class 0 (p 0.4)."""

    name, num_classes, input_size = "stand-in", 3, 16

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        out = np.full((batch.shape[0], 3, 16, 16), 0.3, np.float32)
        out[:, 1, :, :8], out[:, 0, :, :8], out[:, 2, :, :8] = 0.9, 0.05, 0.05
        out[:, 0, :, 8:] = 0.4
        return out


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_one_prediction_adds_its_stages_sizes_classes_and_confidence():
    table = classes.ClassTable(("sky", 'a "quoted"\nname', "road"), tuple(classes.voc_colors(3)))
    predictor = Predictor(HalfEngine(), 10**6, table, info={"algorithm": "fcn", "backbone": "resnet-50"})
    predictor.training_shares = [0.5, 0.5, 0.0]
    client = create_app(ServingSettings(drift_window=4), predictor).test_client()
    before = figures(client.get("/metrics").text)
    assert client.post("/invocations", data=png(16, 16), content_type="image/png").status_code == 200
    assert client.post("/invocations", data=b"not an image", content_type="image/png").status_code == 400
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    after = figures(answer.text)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert added("semseg_requests_total", route="/invocations", status="200", content_type="image/png") == 1
    assert added("semseg_requests_total", route="/invocations", status="400", content_type="application/json") == 1
    assert added("semseg_requests_total", route="/metrics", status="200") == 1  # the first GET
    for stage in ("decode", "forward", "encode"):
        assert added("semseg_stage_seconds_count", stage=stage) == 1
    assert added("semseg_input_megapixels_count") == 1 and added("semseg_input_megapixels_sum") == pytest.approx(256e-6)
    assert added("semseg_predicted_pixels_total", model="model", class_name='a "quoted"\nname') == 128
    assert added("semseg_predicted_pixels_total", model="model", class_name="sky") == 128
    assert added("semseg_mean_top_probability_sum", model="model") == pytest.approx(0.65, abs=1e-6)
    assert added("semseg_low_confidence_share_sum", model="model") == pytest.approx(0.5)
    assert value(after, "semseg_class_drift", model="model") == pytest.approx(0, abs=1e-9)  # the training mix
    assert value(after, "semseg_model_info", model="model", algorithm="fcn", backbone="resnet-50", classes="3") == 1
    assert value(after, "semseg_requests_in_flight") >= 1  # the GET /metrics being answered


# ---- a real 2-worker server ---------------------------------------------------------------------


def worker_figures(server) -> dict[int, dict]:
    """Each worker's own figures: its files of the server's multiprocess folder, read on their own."""
    found = {}
    for pid in server.worker_pids():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        folder = Path(next(e for e in environ if e.startswith(b"PROMETHEUS_MULTIPROC_DIR=")).split(b"=", 1)[1].decode())
        alone = Path(server.log_path.parent / f"figures-{pid}")
        shutil.rmtree(alone, ignore_errors=True)
        alone.mkdir()
        for file in folder.glob(f"*_{pid}.db"):
            shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=str(alone))
        found[pid] = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect()
            for sample in family.samples
        }
    return found


def sample_jpeg(seed: int) -> bytes:
    from semseg.sample_data import make_pair

    image, _ = make_pair(np.random.RandomState(seed), 96, 96)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def blank_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 96), (125, 125, 125)).save(buffer, format="JPEG")
    return buffer.getvalue()


def drift(server) -> float:
    return value(figures(requests.get(server.url + "/metrics", timeout=30).text), "semseg_class_drift")


@pytest.mark.slow
def test_metrics_add_up_across_two_workers_and_the_drift_follows_the_class_mix(learnt_model, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from harness.serving_helpers import Server

    assert (learnt_model.model_dir / "class_pixels.json").is_file()  # training stored its class mix
    server = Server(
        learnt_model.root,
        tmp_path / "serve.log",
        SAGEMAKER_MODEL_SERVER_WORKERS="2",
        SEMSEG_DRIFT_WINDOW="6",
        SEMSEG_METRICS_LOG_INTERVAL="2",
    )
    try:
        server.wait_until_warm(2)
        sent = {"200": 0, "400": 0}
        with ThreadPoolExecutor(4) as pool:  # several connections at once: both workers get some
            for _round in range(5):
                answers = list(pool.map(lambda seed: server.invoke(sample_jpeg(seed)), range(8)))
                answers.append(server.invoke(b"not an image"))
                for answer in answers:
                    sent[str(answer.status_code)] += 1
                per_worker = worker_figures(server)
                if all(value(own, "semseg_requests_total", route="/invocations") for own in per_worker.values()):
                    break
        assert len(per_worker) == 2 and all(
            value(own, "semseg_requests_total", route="/invocations") for own in per_worker.values()
        ), "every request went to one worker"
        normal_drift = drift(server)

        total = figures(requests.get(server.url + "/metrics", timeout=30).text)
        per_worker = worker_figures(server)
        for status, count in sent.items():
            assert value(total, "semseg_requests_total", route="/invocations", status=status) == count
            assert (
                sum(
                    value(own, "semseg_requests_total", route="/invocations", status=status)
                    for own in per_worker.values()
                )
                == count
            )
        for stage in ("decode", "forward", "encode"):
            assert value(total, "semseg_stage_seconds_count", stage=stage) == sent["200"]
        assert value(total, "semseg_request_seconds_count", route="/invocations") == sum(sent.values())
        assert value(total, "semseg_model_info", model="model", algorithm="fcn", backbone="resnet-50") == 1
        assert value(total, "semseg_requests_in_flight") >= 1  # this GET, whichever worker answers it

        with ThreadPoolExecutor(4) as pool:
            assert all(a.status_code == 200 for a in pool.map(lambda _: server.invoke(blank_jpeg()), range(16)))
        blank_drift = drift(server)
        print(f"class drift: {normal_drift:.3f} on sample-task images, {blank_drift:.3f} on blank ones")
        assert blank_drift > normal_drift + 0.05, (normal_drift, blank_drift)

        predictions = sent["200"] + 16
        deadline = time.monotonic() + 60
        while True:  # the summary lines, one per 2 s with requests, count every prediction once
            counted = sum(int(n) for n in re.findall(r"over (\d+) predictions", server.log()))
            if counted >= predictions or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert counted == predictions, server.log()[-3000:]
        assert re.search(r"Metrics over the last 2 s: .*p99 .*class drift model 0\.\d{3}", server.log())
    finally:
        server.stop()
