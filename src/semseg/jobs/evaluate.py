"""``semseg evaluate``: a model scored on held-out data as its endpoint serves it, optionally beside
a baseline model, with a report that shows the worst images.

Data may be a local folder or zip (``evaluation.data``) or an ``s3://`` prefix, downloaded first.
Both models see the same images in the same order, so their per-image scores pair up for the
bootstrap interval of the mIoU difference. ``--fail-below FIGURE=VALUE`` makes the exit code a gate
for a pipeline: ``exit_codes.BELOW_BAR`` when a figure is below its bar, after every file is written.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import classes, exit_codes
from ..errors import UserError
from ..evaluation import native
from ..evaluation import report as evaluation_report
from ..evaluation.data import held_out
from ..evaluation.scores import SPLIT_FIGURES, bootstrap_difference
from ..inference.predictor import Predictor
from ..model.artifacts import model_to_serve, read_hyperparameters, unpack_model_dir
from ..names import shown
from .s3 import parse_uri
from .transfer import download

log = logging.getLogger("semseg")

DEFAULT_OUTPUT = "evaluation"
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class Loaded:
    path: str
    hp: dict
    predictor: Predictor
    table: classes.ClassTable


def parse_bar(raw: str) -> tuple[str, float]:
    """``--fail-below``: ``FIGURE=VALUE`` (a figure of ``SPLIT_FIGURES``) or a bare VALUE, for mIoU."""
    figure, _, value = raw.rpartition("=")
    figure = figure.strip() or "mIoU"
    if figure not in SPLIT_FIGURES:
        raise UserError(f"--fail-below names '{shown(figure)}', which is not one of {', '.join(SPLIT_FIGURES)}")
    try:
        bar = float(value)
    except ValueError:
        bar = float("nan")
    if not 0 <= bar <= 1:
        raise UserError(f"--fail-below {shown(raw)} needs a number from 0 to 1 after the '='")
    return figure, bar


def _load(path: str, engine: str | None, scratch: Path) -> Loaded:
    files = unpack_model_dir(model_to_serve(Path(path)), scratch)
    hp = read_hyperparameters(files)
    predictor = Predictor.from_model_dir(files, native.settings_for(engine, files))
    return Loaded(path, hp, predictor, classes.load(files, hp["num_classes"]))


def _data_path(data: str, scratch: Path) -> Path:
    if not data.startswith("s3://"):
        return Path(data)
    target = scratch / "data"
    download(parse_uri(data, "--data"), target, scratch / "staging", label="evaluation data")
    return target


def _print_figures(model: evaluation_report.Scored, table: classes.ClassTable) -> None:
    split = model.evaluation.split
    width = max(12, *(len(shown(name)) for name in table.names))
    print(f"{'class':<{width + 4}} {'IoU':>7} {'Dice':>7} {'prec.':>7} {'recall':>7} {'pixels':>10}")
    for i in range(split.num_classes):
        print(
            f"{i:>3} {shown(table.name(i)):<{width}} {split.iou()[i]:7.4f} {split.dice()[i]:7.4f} "
            f"{split.precision()[i]:7.4f} {split.recall()[i]:7.4f} {int(split.labelled[i]):>10}"
        )
    print(
        f"mIoU {split.mean_iou():.4f}  mean Dice {split.mean_dice():.4f}  pixel accuracy {split.pixel_accuracy():.4f}  "
        f"frequency-weighted IoU {split.frequency_weighted_iou():.4f}"
    )


def main(args) -> int:
    """Run ``semseg evaluate`` with its parsed arguments; the exit code."""
    bars = [parse_bar(raw) for raw in args.fail_below or []]  # every flag checked before anything is loaded
    output = Path(args.output or DEFAULT_OUTPUT)
    with tempfile.TemporaryDirectory(prefix="semseg-evaluate-") as scratch_name:
        scratch = Path(scratch_name)
        for folder in ("model", "baseline", "pairs"):
            (scratch / folder).mkdir()
        model = _load(args.model, args.engine, scratch / "model")
        baseline = _load(args.baseline, args.engine, scratch / "baseline") if args.baseline else None
        if baseline is not None and baseline.hp["num_classes"] != model.hp["num_classes"]:
            raise UserError(
                f"The model has {model.hp['num_classes']} classes and the baseline {baseline.hp['num_classes']}; "
                "models compared on one dataset must share its classes"
            )
        data = held_out(_data_path(args.data, scratch), args.subset, model.hp, scratch / "pairs")
        log.info("Evaluating %s on %s", shown(args.model), data.description)
        ours = native.evaluate(model.predictor, data.samples, data.table)
        scored = evaluation_report.Scored("model", args.model, model.hp, ours)
        other = difference = baseline_worst = None
        if baseline is not None:
            theirs = native.evaluate(baseline.predictor, data.samples, data.table, keep_worst=0)
            other = evaluation_report.Scored("baseline", args.baseline, baseline.hp, theirs)
            difference = bootstrap_difference(ours.matrices, theirs.matrices, BOOTSTRAP_RESAMPLES)
            baseline_worst = [baseline.predictor.predict(kept.image.read_bytes()).class_ids() for kept in ours.worst]
        evaluation_report.write(output, scored, data.description, model.table, other, difference, baseline_worst)
    print(f"{shown(args.model)} on {data.description}, each image at its own size through {ours.engine}:")
    _print_figures(scored, model.table)
    if other is not None and difference is not None:
        print(f"baseline {shown(args.baseline)}:")
        _print_figures(other, model.table)
        print(
            f"mIoU difference {difference.difference:+.4f}, {100 * difference.confidence:g}% bootstrap interval "
            f"[{difference.low:+.4f}, {difference.high:+.4f}] ({difference.resamples} paired resamples of "
            f"{len(ours.images)} images)"
        )
    print(f"Report: {output / evaluation_report.REPORT_FILE}")
    summary = ours.split.summary()
    below = [(figure, bar) for figure, bar in bars if not summary[figure] >= bar]
    for figure, bar in below:
        log.error("%s is %.4f, below the bar of %g that --fail-below sets", figure, summary[figure], bar)
    return exit_codes.BELOW_BAR if below else 0
