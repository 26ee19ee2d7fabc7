"""The evaluation's files: ``evaluation.json`` for machines, ``per_image.csv``, and ``report.html``
with the worst images (image, truth, prediction, error map) so a user sees where the model fails.

The page is in the training report's style and, like it, references only PNG files written beside
it (under ``gallery/``, named by number, never by the images' own names), has no script and opens
offline. Image and class names are shown escaped, each in a ``<bdi>``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from ..classes import ClassTable
from ..data.images import read_rgb
from ..files import write_atomically
from ..names import shown
from ..report.html import STYLE, swatch
from .native import Evaluation, Kept
from .scores import Difference

REPORT_FILE, JSON_FILE, CSV_FILE, GALLERY = "report.html", "evaluation.json", "per_image.csv", "gallery"
THUMBNAIL_WIDTH = 320
WRONG, RIGHT, IGNORED = (220, 20, 60), (40, 40, 40), (200, 200, 200)  # the error map's colours


@dataclass
class Scored:
    """One model's evaluation, with what the page says about the model."""

    label: str  # "model" or "baseline"
    path: str
    hp: dict
    evaluation: Evaluation

    def describe(self) -> dict:
        split = self.evaluation.split
        return {
            "path": self.path,
            "algorithm": self.hp["algorithm"],
            "backbone": self.hp["backbone"],
            "engine": self.evaluation.engine,
            "seconds": round(self.evaluation.seconds, 3),
            **split.summary(),
        }


def write(
    out_dir: Path,
    model: Scored,
    data: str,
    table: ClassTable,
    baseline: Scored | None = None,
    difference: Difference | None = None,
    baseline_worst: list[np.ndarray] | None = None,
) -> dict:
    """All three files into ``out_dir``; returns what ``evaluation.json`` holds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "data": data,
        "images": len(model.evaluation.images),
        "classes": list(table.names),
        "measured": "each image at its own size through the serving predictor, as /invocations answers",
        "model": model.describe(),
    }
    if baseline is not None and difference is not None:
        result["baseline"] = baseline.describe()
        result["comparison"] = {
            "mIoU_difference": difference.as_dict(),
            "per_class_iou_difference": (model.evaluation.split.iou() - baseline.evaluation.split.iou()).tolist(),
            "per_class_dice_difference": (model.evaluation.split.dice() - baseline.evaluation.split.dice()).tolist(),
        }
    text = json.dumps(_finite(result), indent=2)
    write_atomically(out_dir / JSON_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    _write_csv(out_dir / CSV_FILE, model, baseline)
    gallery = _write_gallery(out_dir, model.evaluation.worst, table, baseline_worst)
    page = _render(result, table, model, baseline, difference, gallery)
    write_atomically(out_dir / REPORT_FILE, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return result


def _finite(value):
    """JSON has no NaN: an image with no labelled pixel has no mIoU, written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _write_csv(path: Path, model: Scored, baseline: Scored | None) -> None:
    rows = [score.figures() for score in model.evaluation.images]
    if baseline is not None:
        for row, other in zip(rows, baseline.evaluation.images, strict=True):
            theirs = other.figures()
            row["baseline_mIoU"], row["baseline_mean_dice"] = theirs["mIoU"], theirs["mean_dice"]
            row["mIoU_difference"] = row["mIoU"] - theirs["mIoU"]

    def fill(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "image": shown(row["image"])})

    write_atomically(path, fill)


def _coloured(ids: np.ndarray, table: ClassTable) -> Image.Image:
    palette = np.array(table.palette(), dtype=np.uint8).reshape(-1, 3)
    rgb = palette[np.clip(ids, 0, 255).astype(np.uint8)]
    rgb[ids < 0] = IGNORED
    return Image.fromarray(rgb)


def _error_map(truth: np.ndarray, prediction: np.ndarray) -> Image.Image:
    rgb = np.empty((*truth.shape, 3), dtype=np.uint8)
    rgb[:] = RIGHT
    rgb[(truth >= 0) & (truth != prediction)] = WRONG
    rgb[truth < 0] = IGNORED
    return Image.fromarray(rgb)


def _thumbnail(image: Image.Image, nearest: bool) -> Image.Image:
    if image.width <= THUMBNAIL_WIDTH:
        return image
    height = max(1, round(image.height * THUMBNAIL_WIDTH / image.width))
    return image.resize((THUMBNAIL_WIDTH, height), Image.NEAREST if nearest else Image.BILINEAR)


def _write_gallery(
    out_dir: Path, worst: list[Kept], table: ClassTable, baseline_worst: list[np.ndarray] | None
) -> list[dict]:
    """The worst images' panels as PNGs; per image, its name, mIoU and panel files."""
    folder = out_dir / GALLERY
    folder.mkdir(exist_ok=True)
    entries = []
    for number, kept in enumerate(worst, 1):
        panels = {
            "image": _thumbnail(Image.fromarray(read_rgb(kept.image)), nearest=False),
            "truth": _thumbnail(_coloured(kept.truth, table), nearest=True),
            "prediction": _thumbnail(_coloured(kept.prediction.astype(np.int64), table), nearest=True),
            "errors": _thumbnail(_error_map(kept.truth, kept.prediction), nearest=True),
        }
        if baseline_worst is not None:
            panels["baseline"] = _thumbnail(_coloured(baseline_worst[number - 1].astype(np.int64), table), nearest=True)
        files = {}
        for panel, image in panels.items():
            name = f"{GALLERY}/{number:02d}-{panel}.png"
            image.save(out_dir / name)
            files[panel] = name
        entries.append({"name": kept.name, "files": files})
    return entries


def _number(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def _figures_table(model: Scored, baseline: Scored | None) -> str:
    names = (("mIoU", "mIoU"), ("mean_dice", "mean Dice"), ("pixel_accuracy", "pixel accuracy"))
    names += (("frequency_weighted_iou", "frequency-weighted IoU"),)
    ours = model.evaluation.split.summary()
    header = "<tr><th class='name'>figure</th><th>model</th>"
    theirs = baseline.evaluation.split.summary() if baseline else None
    header += "<th>baseline</th><th>difference</th></tr>" if theirs else "</tr>"
    rows = [header]
    for key, title in names:
        row = f"<tr><td class='name'>{title}</td><td>{_number(ours[key])}</td>"
        if theirs:
            row += f"<td>{_number(theirs[key])}</td><td>{_signed(ours[key] - theirs[key])}</td>"
        rows.append(row + "</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def _class_table(model: Scored, baseline: Scored | None, table: ClassTable) -> str:
    split = model.evaluation.split
    iou, dice, precision, recall, pixels = split.iou(), split.dice(), split.precision(), split.recall(), split.labelled
    header = (
        "<tr><th>id</th><th class='name'>class</th><th>IoU</th><th>Dice</th><th>precision</th><th>recall</th>"
        "<th>labelled pixels</th>"
    )
    other = baseline.evaluation.split if baseline else None
    header += "<th>baseline IoU</th><th>IoU difference</th><th>Dice difference</th></tr>" if other else "</tr>"
    rows = [header]
    for i in range(split.num_classes):
        row = (
            f"<tr><td>{i}</td><td class='name'>{swatch(table, i)}</td><td>{iou[i]:.4f}</td><td>{dice[i]:.4f}</td>"
            f"<td>{precision[i]:.4f}</td><td>{recall[i]:.4f}</td><td>{int(pixels[i])}</td>"
        )
        if other:
            row += (
                f"<td>{other.iou()[i]:.4f}</td><td>{_signed(iou[i] - other.iou()[i])}</td>"
                f"<td>{_signed(dice[i] - other.dice()[i])}</td>"
            )
        rows.append(row + "</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def _confusion(model: Scored, table: ClassTable) -> str:
    matrix = model.evaluation.split.matrix
    header = "<tr><th class='name'>truth \\ predicted</th>" + "".join(f"<th>{i}</th>" for i in range(len(matrix)))
    rows = [header + "</tr>"]
    for i, counts in enumerate(matrix):
        cells = "".join(f"<td>{int(count)}</td>" for count in counts)
        rows.append(f"<tr><td class='name'>{i} {swatch(table, i)}</td>{cells}</tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def _gallery(entries: list[dict], model: Scored) -> str:
    if not entries:
        return ""
    scores = {score.name: score.figures() for score in model.evaluation.images}
    panels = ["image", "truth", "prediction", "baseline", "errors"]
    titles = {
        "image": "image",
        "truth": "truth",
        "prediction": "prediction",
        "baseline": "baseline's prediction",
        "errors": "errors (red: wrong, grey: ignored)",
    }
    shown_panels = [panel for panel in panels if panel in entries[0]["files"]]
    rows = ["<tr><th class='name'>image</th>" + "".join(f"<th>{titles[p]}</th>" for p in shown_panels) + "</tr>"]
    for entry in entries:
        figures = scores.get(entry["name"], {})
        cells = "".join(
            f'<td><img src="{escape(entry["files"][p])}" alt="{escape(titles[p])}"></td>' for p in shown_panels
        )
        rows.append(
            f"<tr><td class='name'><bdi>{escape(shown(entry['name']))}</bdi><br>mIoU "
            f"{_number(figures.get('mIoU', float('nan')))}</td>{cells}</tr>"
        )
    return (
        f"<h2>The {len(entries)} worst images</h2>\n<p>Lowest per-image mIoU first (the mean over the classes present "
        "in the image's truth or prediction).</p>\n<table class='gallery'>" + "\n".join(rows) + "</table>"
    )


def _render(
    result: dict, table: ClassTable, model: Scored, baseline: Scored | None, difference, gallery: list[dict]
) -> str:
    described = result["model"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Evaluation report</title>',
        f"<style>{STYLE} .gallery img {{ max-width: {THUMBNAIL_WIDTH}px; }}</style></head><body>",
        "<h1>Evaluation report</h1>",
        f"<p>Model <bdi>{escape(shown(described['path']))}</bdi> ({escape(described['algorithm'])}, "
        f"{escape(described['backbone'])}) on {escape(result['data'])}: {result['images']} images, each at its own "
        f"size through the serving predictor ({escape(described['engine'])}), as the endpoint answers. The numbers "
        f'are also in <a href="{JSON_FILE}">{JSON_FILE}</a> and, per image, <a href="{CSV_FILE}">{CSV_FILE}</a>.</p>',
    ]
    if baseline is not None and difference is not None:
        parts.append(
            f"<p>Baseline <bdi>{escape(shown(baseline.path))}</bdi> ({escape(baseline.hp['algorithm'])}, "
            f"{escape(baseline.hp['backbone'])}; {escape(baseline.evaluation.engine)}). mIoU difference, model minus "
            f"baseline: <b>{_signed(difference.difference)}</b>, {100 * difference.confidence:g}% bootstrap interval "
            f"<b>[{_signed(difference.low)}, {_signed(difference.high)}]</b> ({difference.resamples} paired "
            f"resamples of the images); mean per-image mIoU difference {_signed(difference.mean_image_difference)}.</p>"
        )
    parts += [
        "<h2>Figures</h2>",
        _figures_table(model, baseline),
        "<h2>Classes</h2>",
        _class_table(model, baseline, table),
    ]
    parts += ["<h2>Confusion matrix (pixels)</h2>", _confusion(model, table), _gallery(gallery, model)]
    parts.append("</body></html>")
    return "\n".join(part for part in parts if part) + "\n"
