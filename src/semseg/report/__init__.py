"""The training report: figures and one offline ``report.html`` beside ``metrics.json``.

Written once at the end of a job into ``output/data/`` (which SageMaker uploads as
``output.tar.gz``) from what the job already holds: the per-epoch history, the best epoch's
confusion matrix (its per-class IoU and the heatmap come from the metric's counts, not from
pixels), a few validation examples kept at the best epoch, and the end of training's figures as
the endpoint serves (the validation split at each image's own size, the held-out test split). A
figure that fails is logged as a warning and left out of the page; the report never fails the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..classes import ClassTable
from ..files import write_atomically
from . import html, plots
from .examples import ValidationExamples

log = logging.getLogger("semseg")

REPORT_FILE = "report.html"


def _draw(name: str, draw: Callable[[], None], figures: dict[str, str | None]) -> None:
    try:
        draw()
        figures[name] = None
    except Exception as exc:  # a plotting failure must never cost the trained model
        log.warning("The training report's %s could not be drawn: %s: %s", name, type(exc).__name__, exc)
        figures[name] = f"{type(exc).__name__}: {exc}"


def write(
    out_dir: Path,
    history: list[dict],
    best: dict | None,
    table: ClassTable,
    train_pixels: list[int],
    examples: ValidationExamples | None,
    native: dict | str | None = None,
    test: dict | str | None = None,
) -> Path | None:
    """Draw the figures and ``report.html`` into ``out_dir``; returns the page, None if it failed.

    ``native`` and ``test``: the validation and test splits scored as the endpoint serves them
    (``ConfusionMatrix.summary()`` with ``engine`` and ``images``), or why they were not; None: no section.
    """
    figures: dict[str, str | None] = {}
    if history:
        _draw("curves.png", lambda: plots.curves(history, out_dir / "curves.png"), figures)
    if best is not None:
        ious, matrix = best["per_class_iou"], np.asarray(best["confusion_matrix"])
        _draw("class_iou.png", lambda: plots.class_iou(ious, table, out_dir / "class_iou.png"), figures)
        _draw("confusion.png", lambda: plots.confusion(matrix, table, out_dir / "confusion.png"), figures)
    if examples:
        _draw(
            "examples.png",
            lambda: plots.examples(
                examples.images, examples.truths, examples.predictions, table, out_dir / "examples.png"
            ),
            figures,
        )
    elif best is not None:
        figures["examples.png"] = "the best epoch was validated before this job resumed from a checkpoint"
    page = out_dir / REPORT_FILE
    try:
        text = html.render(history, best, table, train_pixels, figures, native, test)
        write_atomically(page, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except Exception as exc:
        log.warning("The training report %s could not be written: %s: %s", page, type(exc).__name__, exc)
        return None
    log.info("Training report: %s", page)
    return page
