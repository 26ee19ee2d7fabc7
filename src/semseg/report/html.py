"""``report.html``: one page that shows the report's figures and the per-class table.

It references only the PNG files written beside it (by bare name), has its style inline and no
script, so it opens offline from an unpacked ``output.tar.gz``. Class names are shown whole, each
in a ``<bdi>``, so a right-to-left override in one cannot reorder the figures beside it. Figures that could not be drawn
are left out with a note, rather than shown as broken images.
"""

from __future__ import annotations

from html import escape

import numpy as np

from ..classes import ClassTable

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td.name, th.name { text-align: left; }
td.name { max-width: 30em; overflow-wrap: anywhere; }  /* a long class name wraps, whole, in its column */
bdi { unicode-bidi: isolate; }
.swatch { display: inline-block; width: 1em; height: 1em; border: 1px solid #444; vertical-align: middle; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #a33; }
"""


def _figure(title: str, file_name: str, figures: dict[str, str | None]) -> str:
    if file_name not in figures:
        return ""
    problem = figures[file_name]
    if problem is not None:
        return f'<h2>{escape(title)}</h2>\n<p class="note">Not drawn: {escape(problem)}</p>'
    return f'<h2>{escape(title)}</h2>\n<img src="{escape(file_name)}" alt="{escape(title)}">'


def swatch(table: ClassTable, i: int) -> str:
    """Class ``i``'s colour swatch and its name, isolated in a ``<bdi>`` (also for the evaluation report)."""
    red, green, blue = table.colors[i] if i < len(table) else (128, 128, 128)
    return (
        f'<span class="swatch" style="background: rgb({red},{green},{blue})"></span> <bdi>{escape(table.name(i))}</bdi>'
    )


def _swatch_and_name(table: ClassTable, i: int) -> str:
    return f'<td class="name">{swatch(table, i)}</td>'


def _class_rows(best: dict, table: ClassTable, train_pixels: list[int]) -> str:
    ious = best["per_class_iou"]
    dices = best.get("per_class_dice") or []  # none in a history written before Dice was recorded
    matrix = np.asarray(best["confusion_matrix"], dtype=np.int64)
    if matrix.shape != (len(ious), len(ious)):  # not this table's: its columns are left empty
        matrix = np.full((len(ious), len(ious)), -1)
    pixels, correct = matrix.sum(axis=1), np.diag(matrix)
    total = max(1, sum(train_pixels))
    rows = []
    for i, iou in enumerate(ious):
        share = f"{100 * train_pixels[i] / total:.2f}%" if i < len(train_pixels) else "n/a"
        accuracy, count = (f"{correct[i] / max(1, pixels[i]):.4f}", str(pixels[i])) if pixels[i] >= 0 else ("", "")
        dice = f"{dices[i]:.4f}" if i < len(dices) else ""
        rows.append(
            f"<tr><td>{i}</td>{_swatch_and_name(table, i)}<td>{iou:.4f}</td><td>{dice}</td><td>{accuracy}</td>"
            f"<td>{count}</td><td>{share}</td></tr>"
        )
    return "\n".join(rows)


SERVED = {  # the end of training's sections: title, what was scored
    "native": (
        "Validation as the endpoint serves it",
        "Each validation image segmented once at the end of training, at its own size, by the best epoch's model "
        "as the endpoint serves it",
    ),
    "test": (
        "Test subset, held out",
        "The test subset, never trained on and never used to choose an epoch, segmented once at the end of "
        "training, each image at its own size, as the endpoint serves it",
    ),
}
CENTRE_CROPS = (
    "Training's own validation figures, in the rest of this page, come from centre crops resized to "
    "crop_size: they choose the best epoch and are what #quality_metric reports to tuning jobs."
)


def _served(kind: str, figures: dict | str | None, table: ClassTable) -> str:
    """One end-of-training section: the split's figures and per-class table, or why it was not measured."""
    if figures is None:
        return ""
    title, what = SERVED[kind]
    if isinstance(figures, str):
        return f'<h2>{escape(title)}</h2>\n<p class="note">Not measured: {escape(figures)}.</p>'
    columns = ("per_class_iou", "per_class_dice", "per_class_precision", "per_class_recall")
    rows = [
        f"<tr><td>{i}</td>{_swatch_and_name(table, i)}"
        + "".join(f"<td>{figures[column][i]:.4f}</td>" for column in columns)
        + f"<td>{figures['labelled_pixels'][i]}</td></tr>"
        for i in range(len(figures["per_class_iou"]))
    ]
    return "\n".join(
        [
            f"<h2>{escape(title)}</h2>",
            f"<p>{escape(what)} ({escape(str(figures['engine']))}, {int(figures['images'])} images): "
            f"mIoU <b>{figures['mIoU']:.4f}</b>, mean Dice <b>{figures['mean_dice']:.4f}</b>, "
            f"pixel accuracy <b>{figures['pixel_accuracy']:.4f}</b>."
            + (f" {CENTRE_CROPS}" if kind == "native" else "")
            + "</p>",
            '<table><tr><th>id</th><th class="name">class</th><th>IoU</th><th>Dice</th><th>precision</th>'
            "<th>recall</th><th>pixels</th></tr>",
            *rows,
            "</table>",
        ]
    )


def render(
    history: list[dict],
    best: dict | None,
    table: ClassTable,
    train_pixels: list[int],
    figures: dict,
    native: dict | str | None = None,
    test: dict | str | None = None,
) -> str:
    """The whole page; ``figures`` maps each figure's file name to None (drawn) or why it was not;
    ``native`` and ``test``: the splits scored as the endpoint serves them, or why they were not."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Training report</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>Training report</h1>",
    ]
    if best is None:
        parts.append('<p class="note">No epoch was validated, so there is no best epoch to report.</p>')
    else:
        parts.append(
            f"<p>Best epoch: <b>{best['epoch']}</b> (epochs 0 to {history[-1]['epoch']}, numbered as in the log): "
            f"validation mIoU <b>{best['mIOU']:.4f}</b>, "
            + (f"mean Dice <b>{best['mean_dice']:.4f}</b>, " if "mean_dice" in best else "")
            + f"pixel accuracy <b>{best['pixel_accuracy']:.4f}</b> (centre crops at crop_size). The numbers are "
            'also in <a href="metrics.json">metrics.json</a>.</p>'
        )
    parts.append(_served("native", native, table))
    parts.append(_served("test", test, table))
    parts.append(_figure("Training curves", "curves.png", figures))
    if best is not None:
        parts += [
            "<h2>Classes at the best epoch</h2>",
            '<table><tr><th>id</th><th class="name">class</th><th>IoU</th><th>Dice</th><th>pixel accuracy</th>'
            "<th>validation pixels</th><th>share of training pixels</th></tr>",
            _class_rows(best, table, train_pixels),
            "</table>",
        ]
    parts.append(_figure("Per-class IoU", "class_iou.png", figures))
    parts.append(_figure("Confusion matrix", "confusion.png", figures))
    parts.append(_figure("Validation examples at the best epoch", "examples.png", figures))
    parts.append("</body></html>")
    return "\n".join(part for part in parts if part) + "\n"
