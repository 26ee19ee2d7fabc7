"""The training report: figures and report.html in output/data after a real run, and its bounds.

The job's model directory is given a ``classes.json`` before training starts, as training does when
the data names its classes, so the report and the per-class log lines must show those names.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from harness.trainjob import make_tree, run_train
from PIL import Image

from semseg import classes, report
from semseg.logs import CLASS_IOU_REGEX
from semseg.report.examples import ValidationExamples

NAMED = classes.ClassTable(
    ("sky & sea", "disc", "rectangle", "<triangle>"),
    ((0, 0, 0), (220, 20, 60), (30, 160, 50), (40, 60, 220)),
)
FIGURES = ("curves.png", "class_iou.png", "confusion.png", "examples.png")


class References(HTMLParser):
    """Every URL a page loads or links to (src, href), and its text."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href", "srcset", "data", "action")]

    def handle_data(self, data):
        self.text.append(data)


def references(page: Path) -> References:
    parser = References()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def named_job(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("report"), epochs="2")
    classes.save(NAMED, root / "model")
    job = run_train(root)
    assert job.returncode == 0, job.log[-3000:]
    return job


@pytest.mark.slow
def test_a_training_run_writes_the_report_beside_metrics_json(named_job):
    data = named_job.root / "output" / "data"
    for name in FIGURES:
        with Image.open(data / name) as figure:
            figure.load()  # decodes in full
            assert figure.format == "PNG" and min(figure.size) >= 100, name
    page = data / report.REPORT_FILE
    found = references(page)
    assert set(FIGURES) <= set(found.urls)
    for url in found.urls:  # only bare names of files beside it: opens offline, from any folder
        assert "/" not in url and ":" not in url and (data / url).is_file(), url
    assert "<script" not in page.read_text().lower()
    text = " ".join(found.text)
    for name in NAMED.names:
        assert name in text, name
    best = json.loads((data / "metrics.json").read_text())["best_epoch"]
    assert f"{best['mIOU']:.4f}" in text
    assert "Training report: " + str(page) in named_job.log


@pytest.mark.slow
def test_the_per_class_log_lines_name_the_classes(named_job):
    lines = re.findall(CLASS_IOU_REGEX, named_job.log)
    assert [(epoch, class_id, name) for epoch, class_id, name, _ in lines] == [
        (str(epoch), str(i), name) for epoch in range(2) for i, name in enumerate(NAMED.names)
    ]
    best = json.loads((named_job.root / "output" / "data" / "metrics.json").read_text())["best_epoch"]
    logged = [float(iou) for epoch, _, _, iou in lines if int(epoch) == best["epoch"]]
    assert logged == pytest.approx(best["per_class_iou"])


def _history(epochs: int) -> list[dict]:
    return [
        {"epoch": e, "train_loss": 1.0 / (e + 1), "pixel_accuracy": 0.5 + e / 100, "mIOU": 0.3 + e / 100}
        for e in range(epochs)
    ]


def test_many_classes_and_examples_stay_bounded(tmp_path):
    """150 classes (as ADE20K), long names, 50 epochs: every figure stays under 3000 pixels a side."""
    count, rng = 150, np.random.RandomState(0)
    names = tuple(f"a rather long class name {i}" for i in range(count))
    table = classes.ClassTable(names, tuple(classes.voc_colors()[:count]))
    matrix = rng.randint(0, 1000, size=(count, count))
    best = {**_history(50)[-1], "per_class_iou": rng.rand(count).tolist(), "confusion_matrix": matrix.tolist()}
    examples = ValidationExamples()
    batch = rng.normal(size=(12, 3, 64, 64)).astype(np.float32)
    ids = rng.randint(-1, count, size=(12, 64, 64))
    examples.keep(batch, ids, ids)
    examples.keep(batch, ids, ids)  # already full: nothing more is kept
    assert len(examples) == 8 and examples.room == 0
    page = report.write(tmp_path, _history(50), best, table, [1] * count, examples)
    assert page is not None
    for name in FIGURES:
        with Image.open(tmp_path / name) as figure:
            assert max(figure.size) <= 3000, (name, figure.size)


def test_a_figure_that_fails_is_left_out_with_a_warning(tmp_path, caplog):
    table = classes.default(3)
    ious = [0.5, 0.5, 0.5, 0.5]  # one more class than the table has colours for: the bar chart fails
    best = {**_history(2)[-1], "per_class_iou": ious, "confusion_matrix": np.eye(3, dtype=int).tolist()}
    page = report.write(tmp_path, _history(2), best, table, [], None)
    assert page is not None and (tmp_path / "confusion.png").is_file() and not (tmp_path / "class_iou.png").exists()
    assert "class_iou.png could not be drawn" in caplog.text
    text = page.read_text()
    assert 'src="class_iou.png"' not in text and 'src="confusion.png"' in text and "Not drawn" in text
    assert "class_2" in text
