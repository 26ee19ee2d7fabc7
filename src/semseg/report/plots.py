"""The report's figures, drawn with matplotlib's Agg canvas (no display, no global pyplot state).

Each function takes plain lists and arrays and writes one PNG atomically. Their cost is bounded by
the number of epochs and classes (at most 256) and by the few examples kept, never by the dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..classes import ClassTable
from ..files import write_atomically
from ..names import one_line

DPI = 100
MAX_SIDE_INCHES = 30  # a figure of 256 classes stays under 3000 pixels a side
IGNORE_COLOR = (128, 128, 128)  # pixels labelled "ignore" in the truth column of the examples
MAX_LABEL_CHARS = 32  # of a class name on an axis; the report's table has it whole


def label(name: str) -> str:
    """A class name as an axis label: controls and bidi marks as visible escapes (a right-to-left
    override would reverse the label), ``$`` kept literal (matplotlib reads ``$..$`` as math, and
    refuses a bad formula), and cut at MAX_LABEL_CHARS so a long name cannot squeeze the plot."""
    text = one_line(name)
    if len(text) > MAX_LABEL_CHARS:
        text = text[: MAX_LABEL_CHARS - 1] + "\u2026"
    return text.replace("$", r"\$")


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))


def _label_size(count: int) -> float:
    return 9 if count <= 30 else max(4.0, 9 - count / 30)


def curves(history: list[dict], path: Path) -> None:
    """Training loss, validation mIoU and pixel accuracy per epoch."""
    epochs = [entry["epoch"] for entry in history]
    figure = Figure(figsize=(10, 4))
    loss, quality = figure.subplots(1, 2)
    loss.plot(epochs, [entry["train_loss"] for entry in history], marker="o")
    loss.set(title="Training loss", xlabel="epoch", ylabel="mean loss per sample")
    quality.plot(epochs, [entry["mIOU"] for entry in history], marker="o", label="mIoU")
    quality.plot(epochs, [entry["pixel_accuracy"] for entry in history], marker="s", label="pixel accuracy")
    quality.set(title="Validation", xlabel="epoch", ylim=(0, 1.02))
    quality.legend(loc="lower right")
    for axes in (loss, quality):
        axes.grid(alpha=0.3)
        if len(epochs) <= 20:
            axes.set_xticks(epochs)
        else:
            axes.xaxis.get_major_locator().set_params(integer=True)
    _save(figure, path)


def class_iou(ious: list[float], table: ClassTable, path: Path) -> None:
    """Horizontal bars of each class's IoU at the best epoch, in the class's own colour."""
    count = len(ious)
    figure = Figure(figsize=(8, min(MAX_SIDE_INCHES, 1.5 + 0.3 * count)))
    axes = figure.subplots()
    positions = np.arange(count)
    colors = [tuple(c / 255 for c in table.colors[i]) for i in range(count)]
    axes.barh(positions, ious, color=colors, edgecolor="black", linewidth=0.5)
    axes.set_yticks(positions, [f"{i} {label(table.name(i))}" for i in range(count)], fontsize=_label_size(count))
    axes.invert_yaxis()  # class 0 on top, as in the table of the report
    axes.set(xlim=(0, 1), xlabel="IoU", title="Per-class IoU at the best epoch")
    axes.grid(axis="x", alpha=0.3)
    if count <= 40:
        for position, value in zip(positions, ious):
            axes.text(min(value, 0.88) + 0.01, position, f"{value:.3f}", va="center", fontsize=8)
    _save(figure, path)


def normalised_rows(matrix: np.ndarray) -> np.ndarray:
    """Each truth row divided by its pixel count: row i shows where class i's pixels went."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.maximum(1.0, matrix.sum(axis=1, keepdims=True))


def confusion(matrix: np.ndarray, table: ClassTable, path: Path) -> None:
    """The row-normalised confusion matrix as a heatmap, with its values written when it is small."""
    shares = normalised_rows(matrix)
    count = len(shares)
    side = min(MAX_SIDE_INCHES - 1.5, 3 + 0.4 * count)  # plus the colour bar
    figure = Figure(figsize=(side + 1.5, side))
    axes = figure.subplots()
    shown = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the true class's pixels")
    names = [label(table.name(i)) for i in range(count)]
    axes.set_xticks(range(count), names, rotation=90, fontsize=_label_size(count))
    axes.set_yticks(range(count), names, fontsize=_label_size(count))
    axes.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (rows sum to 1)")
    if count <= 15:
        for row in range(count):
            for column in range(count):
                value = shares[row, column]
                color = "white" if value > 0.5 else "black"
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
    _save(figure, path)


def colorize(ids: np.ndarray, table: ClassTable) -> np.ndarray:
    """uint8 (H, W, 3): each class id in its colour, ignored pixels (negative ids) grey."""
    lookup = np.array(table.palette(), dtype=np.uint8).reshape(256, 3)
    rgb = lookup[np.clip(ids, 0, 255)]
    rgb[ids < 0] = IGNORE_COLOR
    return rgb


def examples(images: list, truths: list, predictions: list, table: ClassTable, path: Path) -> None:
    """One row per validation sample: the image, its true mask, the predicted mask."""
    rows = len(images)
    figure = Figure(figsize=(9, 3 * rows))
    grid = figure.subplots(rows, 3, squeeze=False)
    for row, (image, truth, prediction) in enumerate(zip(images, truths, predictions)):
        for axes, picture in zip(grid[row], (image, colorize(truth, table), colorize(prediction, table))):
            axes.imshow(picture, interpolation="nearest")
            axes.set_axis_off()
    for axes, title in zip(grid[0], ("image", "truth", "prediction")):
        axes.set_title(title)
    _save(figure, path)
