"""``semseg evaluate``: the figures are the endpoint's, the data layouts are training's, the report
shows the worst images, a baseline is compared with its uncertainty, and ``--fail-below`` gates.

The model is the session's demo training run (``learnt_model``), the baseline the one-iteration
fcn the serving tests share: the two differ by far more than any interval's width.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from harness import cvat_export
from harness.serving_helpers import Server, trained_model
from PIL import Image

from semseg import exit_codes

pytestmark = pytest.mark.slow  # the model comes from a training run

SEMSEG = str(Path(sys.executable).parent / "semseg")


def semseg(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SEMSEG, *arguments], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600
    )


def evaluate(tmp_path: Path, *arguments: str, name: str = "out") -> tuple[subprocess.CompletedProcess, dict]:
    output = tmp_path / name
    done = semseg("evaluate", "--output", str(output), *arguments)
    result = json.loads((output / "evaluation.json").read_text()) if (output / "evaluation.json").exists() else {}
    return done, result


def hand_miou(truths: list[np.ndarray], predictions: list[np.ndarray], classes: int) -> float:
    """The built-in's mIoU written out: pixels summed over the images, then per class I / U, absent = 0."""
    intersection, union = np.zeros(classes), np.zeros(classes)
    for truth, predicted in zip(truths, predictions, strict=True):
        labelled = truth != 255
        for c in range(classes):
            t, p = (truth == c) & labelled, (predicted == c) & labelled
            intersection[c] += (t & p).sum()
            union[c] += (t | p).sum()
    return float(np.mean([i / u if u else 0.0 for i, u in zip(intersection, union, strict=True)]))


@pytest.mark.parametrize("engine, environment", [("float32", {"SEMSEG_FORCE_FP32": "true"}), ("int8", {})])
def test_the_miou_is_the_one_of_the_masks_invocations_returns(learnt_model, tmp_path, engine, environment):
    job = learnt_model
    assert (job.model_dir / "model.int8.onnx").is_file(), job.log[-2000:]
    data = job.root / "input" / "data"
    images = sorted((data / "validation").glob("*.jpg"))
    truths = [np.asarray(Image.open(data / "validation_annotation" / f"{p.stem}.png")) for p in images]
    server = Server(job.root, tmp_path / "serve.log", **environment)
    try:
        assert server.wait_until_up().status_code == 200, server.log()
        answers = [server.invoke(p.read_bytes()) for p in images]
    finally:
        server.stop()
    assert all(answer.status_code == 200 for answer in answers), answers[0].text
    served_log = server.log_path.read_text()
    assert f"{engine}, " in served_log, served_log  # the engine it served with
    served = [np.asarray(Image.open(io.BytesIO(answer.content))) for answer in answers]
    expected = hand_miou(truths, served, 4)

    done, result = evaluate(tmp_path, "--model", str(job.root), "--data", str(data), "--engine", engine)
    assert done.returncode == 0, done.stdout[-3000:]
    assert result["images"] == len(images) == 16
    assert engine in result["model"]["engine"]
    assert result["model"]["mIoU"] == pytest.approx(expected, abs=1e-6)
    assert expected > 0.5  # the demo's model has learnt the task: the figure means something
    assert f"mIoU {expected:.4f}" in done.stdout
    with open(tmp_path / "out" / "per_image.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == [p.stem for p in images]
    for row, truth, answer in zip(rows, truths, served, strict=True):  # each image's own figure, by hand too
        present = [c for c in range(4) if (truth == c).any() or ((answer == c) & (truth != 255)).any()]
        ious = [
            ((truth == c) & (answer == c)).sum() / ((truth == c) | ((answer == c) & (truth != 255))).sum()
            for c in present
        ]
        assert float(row["mIoU"]) == pytest.approx(np.mean(ious), abs=1e-9)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)


def read_page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_the_comparison_report_shows_both_models_the_worst_images_and_the_interval(learnt_model, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("comparison")
    job = learnt_model
    baseline = trained_model(tmp_path_factory.getbasetemp() / "serving-models", "fcn")
    data = job.root / "input" / "data"
    done, result = evaluate(tmp_path, "--model", str(job.root), "--data", str(data), "--baseline", str(baseline))
    assert done.returncode == 0, done.stdout[-3000:]
    difference = result["comparison"]["mIoU_difference"]
    assert difference["difference"] == pytest.approx(result["model"]["mIoU"] - result["baseline"]["mIoU"])
    assert 0 < difference["low"] <= difference["difference"] <= difference["high"]  # far better, and sure of it
    assert re.search(r"mIoU difference \+0\.\d{4}, 95% bootstrap interval \[\+0\.\d{4}, \+0\.\d{4}\]", done.stdout)

    page = read_page(tmp_path / "out" / "report.html")
    text = " ".join(page.text)
    assert str(job.root) in text and str(baseline) in text
    assert "bootstrap interval" in text and "baseline IoU" in text
    # offline: every picture and link is a file beside the page
    assert page.images and all(not re.match(r"[a-z]+:", src) for src in page.images + page.links)
    assert all((tmp_path / "out" / src).is_file() for src in page.images + page.links)
    panels = {re.sub(r"^gallery/\d+-", "", src) for src in page.images}
    assert panels == {"image.png", "truth.png", "prediction.png", "baseline.png", "errors.png"}
    # the worst images come first: the gallery's order is the per-image mIoU's, lowest first
    with open(tmp_path / "out" / "per_image.csv", encoding="utf-8") as handle:
        scores = sorted(float(row["mIoU"]) for row in csv.DictReader(handle))
    gallery = text[text.index("worst images") :]
    shown = [float(m) for m in re.findall(r"mIoU (\d\.\d{4})", gallery)]
    assert shown[:3] == pytest.approx(scores[:3], abs=1e-4)


def test_a_cvat_zip_is_scored_on_its_test_subset_with_masks_as_training_reads_them(learnt_model, tmp_path):
    members, truth = cvat_export.cvat_members({"Train": 3, "Test": 5})
    archive = cvat_export.write_zip(tmp_path / "export.zip", members)
    done, from_zip = evaluate(tmp_path, "--model", str(learnt_model.root), "--data", str(archive), name="zip")
    assert done.returncode == 0, done.stdout[-3000:]
    assert from_zip["images"] == 5 and "'Test' subset" in from_zip["data"]
    # the same five images and masks (class ids) as File-mode pairs: the same figures
    pairs = tmp_path / "pairs"
    for folder in ("test", "test_annotation"):
        (pairs / folder).mkdir(parents=True)
    for name, ids in truth.items():
        if name.rsplit("/", 1)[-1].startswith("Test"):
            stem = name.replace("/", "~")
            jpeg = members[f"task_1/JPEGImages/{name}.jpg"]
            (pairs / "test" / f"{stem}.jpg").write_bytes(jpeg)
            Image.fromarray(ids).save(pairs / "test_annotation" / f"{stem}.png")
    done, from_pairs = evaluate(tmp_path, "--model", str(learnt_model.root), "--data", str(pairs), name="pairs")
    assert done.returncode == 0, done.stdout[-3000:]
    assert from_pairs["images"] == 5
    assert from_zip["model"]["confusion_matrix"] == from_pairs["model"]["confusion_matrix"]
    # --subset picks another
    done, train = evaluate(
        tmp_path, "--model", str(learnt_model.root), "--data", str(archive), "--subset", "train", name="train"
    )
    assert done.returncode == 0 and train["images"] == 3, done.stdout[-3000:]


def test_fail_below_gates_after_writing_and_bad_flags_are_one_sentence(learnt_model, tmp_path):
    model, data = str(learnt_model.root), str(learnt_model.root / "input" / "data")
    done, result = evaluate(tmp_path, "--model", model, "--data", data, "--fail-below", "mIoU=0.999")
    assert done.returncode == exit_codes.BELOW_BAR, done.stdout[-2000:]
    assert result["model"]["mIoU"] < 0.999  # the files are written all the same
    assert re.search(r"mIoU is 0\.\d{4}, below the bar of 0\.999 that --fail-below sets", done.stdout)
    done, _ = evaluate(
        tmp_path, "--model", model, "--data", data, "--fail-below", "0.2", "--fail-below", "mean_dice=0.2"
    )
    assert done.returncode == 0, done.stdout[-2000:]
    for arguments, sentence in [
        (("--fail-below", "miou=0.5"), "--fail-below names 'miou', which is not one of mIoU, mean_dice"),
        (("--fail-below", "mIoU=high"), "--fail-below mIoU=high needs a number from 0 to 1 after the '='"),
        (("--subset", "holdout"), "has no File-mode pair 'holdout' and 'holdout_annotation'; it has train, validation"),
    ]:
        done, _ = evaluate(tmp_path, "--model", model, "--data", data, *arguments, name="refused")
        assert done.returncode == exit_codes.FAILED and sentence in done.stdout, done.stdout[-2000:]
        assert "Traceback" not in done.stdout
    done, _ = evaluate(tmp_path, "--model", str(tmp_path / "absent"), "--data", data, name="refused")
    assert done.returncode == exit_codes.FAILED and "There is no model at" in done.stdout


def test_an_s3_prefix_is_scored_like_the_same_folder(learnt_model, s3, tmp_path):
    import boto3

    bucket, data = s3.new_bucket(), learnt_model.root / "input" / "data"
    client = boto3.client("s3")
    for split in ("validation", "validation_annotation"):
        for path in sorted((data / split).iterdir())[:6]:  # the first 6 images and their masks, by name
            client.upload_file(str(path), bucket, f"held-out/{split}/{path.name}")
    model = str(learnt_model.root)
    done, remote = evaluate(tmp_path, "--model", model, "--data", f"s3://{bucket}/held-out/", name="s3")
    assert done.returncode == 0, done.stdout[-3000:]
    local = tmp_path / "local"
    for split in ("validation", "validation_annotation"):
        (local / split).mkdir(parents=True)
        for path in sorted((data / split).iterdir())[:6]:
            (local / split / path.name).write_bytes(path.read_bytes())
    done, here = evaluate(tmp_path, "--model", model, "--data", str(local), name="here")
    assert done.returncode == 0, done.stdout[-3000:]
    assert remote["images"] == here["images"] > 0
    assert remote["model"]["confusion_matrix"] == here["model"]["confusion_matrix"]
