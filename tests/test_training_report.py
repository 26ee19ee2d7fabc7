"""The training report: figures and report.html in output/data after a real run, and its bounds;
Dice beside IoU; the end of training's figures as the endpoint serves (the validation split at each
image's own size, and a dataset's held-out test subset, scored once).

The job's model directory is given a ``classes.json`` before training starts, as training does when
the data names its classes, so the report and the per-class log lines must show those names.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from harness.cvat_export import cvat_members, platform_members, write_zip
from harness.trainjob import TINY, make_tree, run_train
from PIL import Image

from semseg import classes, logs, paths, report
from semseg.logs import CLASS_DICE_REGEX, CLASS_IOU_REGEX
from semseg.report import html
from semseg.report.examples import ValidationExamples
from semseg.sample_data import write_split

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


def plain_text(page: str) -> str:
    """The page's text as a reader sees it: tags dropped, entities read."""
    return unescape(re.sub(r"<[^>]+>", "", page))


def references(page: Path) -> References:
    parser = References()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def named_job(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("report"), epochs="2", _native_validation="True", _onnx="True")
    # a held-out test set as the File-mode channels test and test_annotation
    write_split(paths.channel_dir("test", base=root), paths.channel_dir("test_annotation", base=root), 3, seed=9)
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
    assert f"{best['mIOU']:.4f}" in text and f"mean Dice {best['mean_dice']:.4f}" in plain_text(page.read_text())
    assert "Training report: " + str(page) in named_job.log


NATIVE_LINE = (
    r"Validation at each image's own size, as the endpoint serves it \((onnxruntime .*)\): mIoU (\d\.\d{4}), "
    r"mean Dice (\d\.\d{4}), pixel accuracy (\d\.\d{4}) \((\d+) images\)"
)


@pytest.mark.slow
def test_the_validation_split_is_scored_once_more_as_the_endpoint_serves_it(named_job):
    data = named_job.root / "output" / "data"
    native = json.loads((data / "metrics.json").read_text())["native_validation"]
    assert native["images"] == 4 and native["engine"].startswith("onnxruntime")  # the engine serve picks: model.onnx
    for key in ("mIoU", "mean_dice", "pixel_accuracy"):
        assert 0.0 <= native[key] <= 1.0, key
    assert len(native["per_class_dice"]) == 4 and np.asarray(native["confusion_matrix"]).sum() > 0
    [(engine, miou, dice, accuracy, images)] = re.findall(NATIVE_LINE, named_job.log)
    assert (engine, float(miou), float(dice), int(images)) == (
        native["engine"],
        round(native["mIoU"], 4),
        round(native["mean_dice"], 4),
        4,
    )
    text = plain_text((data / report.REPORT_FILE).read_text())
    assert "Validation as the endpoint serves it" in text and f"mIoU {native['mIoU']:.4f}" in text


@pytest.mark.slow
def test_the_test_channels_are_scored_once_at_the_end(named_job):
    metrics = json.loads((named_job.root / "output" / "data" / "metrics.json").read_text())
    test = metrics["test"]
    assert test["images"] == 3 and test["engine"] == metrics["native_validation"]["engine"]
    assert 0.0 <= test["mIoU"] <= 1.0 and len(test["per_class_iou"]) == 4
    assert "train: 6 image/mask pairs" in named_job.log and "validation: 4 image/mask pairs" in named_job.log
    [line] = [line for line in named_job.log.splitlines() if "Test subset, held out, at each image's own size" in line]
    assert line.endswith(
        f"mIoU {test['mIoU']:.4f}, mean Dice {test['mean_dice']:.4f}, "
        f"pixel accuracy {test['pixel_accuracy']:.4f} (3 images)"
    )
    text = plain_text((named_job.root / "output" / "data" / report.REPORT_FILE).read_text())
    assert "Test subset, held out" in text and f"3 images): mIoU {test['mIoU']:.4f}" in text


@pytest.mark.slow
def test_the_per_class_log_lines_name_the_classes(named_job):
    lines = re.findall(CLASS_IOU_REGEX, named_job.log)
    assert [(epoch, class_id, name) for epoch, class_id, name, _ in lines] == [
        (str(epoch), str(i), name) for epoch in range(2) for i, name in enumerate(NAMED.names)
    ]
    report_json = json.loads((named_job.root / "output" / "data" / "metrics.json").read_text())
    best = report_json["best_epoch"]
    logged = [float(iou) for epoch, _, _, iou in lines if int(epoch) == best["epoch"]]
    assert logged == pytest.approx(best["per_class_iou"])
    dices = [
        float(dice) for epoch, _, dice in re.findall(CLASS_DICE_REGEX, named_job.log) if int(epoch) == best["epoch"]
    ]
    assert dices == pytest.approx(best["per_class_dice"]) and len(dices) == 4
    for entry in report_json["history"]:
        assert entry["mean_dice"] == pytest.approx(np.mean(entry["per_class_dice"]))


def test_the_class_line_adds_dice_and_the_built_in_lines_are_unchanged(caplog):
    caplog.set_level("INFO", logger="semseg")
    logs.train_epoch_end("algo-1", 3, 0.25, 12.5)
    logs.validation_end("algo-1", 3, 0.875, 0.5, 20.0)
    logs.per_class("algo-1", 3, ["road"], [0.5], [0.75], [2 / 3])
    assert [record.getMessage() for record in caplog.records] == [
        "#quality_metric. host: algo-1, epoch: 3, train loss: 0.25 .",
        "#throughput_metric. host: algo-1, epoch: 3, train throughput: 12.5 samples/sec.",
        "#quality_metric. host: algo-1, epoch: 3, validation pixel_accuracy: 0.875 .",
        "#quality_metric. host: algo-1, epoch: 3, validation mIOU: 0.5 .",
        "#throughput_metric. host: algo-1, epoch: 3, validation throughput: 20.0 samples/sec.",
        "#class_metric. host: algo-1, epoch: 3, class 0 (road): validation IoU: 0.5, pixel accuracy: 0.75, "
        "validation Dice: 0.6666666666666666 .",
    ]
    line = caplog.records[-1].getMessage()
    assert re.findall(CLASS_IOU_REGEX, line) == [("3", "0", "road", "0.5")]
    assert re.findall(CLASS_DICE_REGEX, line) == [("3", "0", "0.6666666666666666")]


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


def served(miou: float, images: int, engine: str = "onnxruntime (cpu, float32, 2 threads)") -> dict:
    """End-of-training figures as ``native_scores`` records them, for three classes."""
    return {
        "engine": engine,
        "images": images,
        "mIoU": miou,
        "mean_dice": 0.625,
        "pixel_accuracy": 0.875,
        "per_class_iou": [miou] * 3,
        "per_class_dice": [0.625] * 3,
        "per_class_precision": [0.5] * 3,
        "per_class_recall": [0.25] * 3,
        "labelled_pixels": [10, 20, 30],
    }


def test_the_served_figures_have_their_own_sections_beside_the_centre_crop_figure():
    best = {
        **_history(2)[-1],
        "per_class_iou": [0.5, 0.25, 0.125],
        "per_class_dice": [0.75, 0.5, 0.25],
        "mean_dice": 0.5,
        "confusion_matrix": np.eye(3, dtype=int).tolist(),
    }
    page = html.render(_history(2), best, NAMED, [1, 1, 1], {}, served(0.4321, 7, "<engine>"), served(0.1234, 5))
    text = plain_text(page)
    assert "validation mIoU 0.3100, mean Dice 0.5000, pixel accuracy 0.5100 (centre crops at crop_size)" in text
    assert "Validation as the endpoint serves it" in text and "(<engine>, 7 images): mIoU 0.4321" in text
    assert "&lt;engine&gt;" in page and "<engine>" not in page  # escaped
    assert "choose the best epoch" in text
    assert "Test subset, held out" in text and "never used to choose an epoch" in text and "mIoU 0.1234" in text
    assert page.index("Validation as the endpoint") < page.index("Test subset, held out") < page.index("Classes at")
    assert "<td>0.7500</td>" in page  # the best epoch's Dice column

    skipped = html.render(_history(2), best, NAMED, [1, 1, 1], {}, "the data is streamed (Pipe mode)", None)
    assert "Not measured: the data is streamed (Pipe mode)." in skipped and "Test subset" not in skipped


@pytest.mark.slow
@pytest.mark.parametrize(
    "layout, members, names",
    [
        ("CVAT", cvat_members({"Train": 5, "Validation": 3, "Test": 4})[0], ("Train", "Validation", "Test")),
        ("platform", platform_members(5, 3, test=4), ("train", "val", "test")),
    ],
)
def test_a_dataset_zip_trains_on_train_validates_on_validation_and_scores_test_once(tmp_path, layout, members, names):
    """CVAT's suggested subsets Train, Validation and Test, and the platform's images/test, through ``semseg
    train --dataset``: the test subset is in neither split and is scored once, at the end, into
    metrics.json and the report."""
    export = write_zip(tmp_path / "export.zip", members)
    train_name, validation_name, test_name = names
    settings = {**TINY, "use_pretrained_model": "False", "_native_validation": "True"}
    command = [str(Path(sys.executable).parent / "semseg"), "train", "--dataset", str(export)]
    command += [
        "--output",
        str(tmp_path / "job"),
        *[arg for item in settings.items() for arg in (f"--{item[0]}", item[1])],
    ]
    run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    log = run.stdout
    assert f"The dataset's '{train_name}' subset trains, its '{validation_name}' subset validates" in log
    assert f"The dataset's '{test_name}' subset (4 pairs) is held out: it chooses no epoch" in log
    assert "train: 5 image/mask pairs" in log and "validation: 3 image/mask pairs" in log
    assert "From the 'dataset' channel, unless given: {'num_training_samples': '5', 'num_classes': '4'}" in log
    data = tmp_path / "job" / "output" / "data"
    metrics = json.loads((data / "metrics.json").read_text())
    test, native = metrics["test"], metrics["native_validation"]
    assert (test["images"], native["images"]) == (4, 3) and test["engine"] == native["engine"]
    assert all(0.0 <= figures[key] <= 1.0 for figures in (test, native) for key in ("mIoU", "mean_dice"))
    [line] = [line for line in log.splitlines() if "Test subset, held out, at each image's own size" in line]
    assert line.endswith(
        f"mIoU {test['mIoU']:.4f}, mean Dice {test['mean_dice']:.4f}, "
        f"pixel accuracy {test['pixel_accuracy']:.4f} (4 images)"
    )
    text = plain_text((data / report.REPORT_FILE).read_text())
    assert "Test subset, held out" in text and f"4 images): mIoU {test['mIoU']:.4f}" in text
    assert "Validation as the endpoint serves it" in text
