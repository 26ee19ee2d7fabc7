"""``semseg cv --dataset D --folds K --output DIR [--<hyperparameter> VALUE ...]``: K models trained
on K splits of a dataset, to see whether a model performs alike on different subsets of the data.

The pairs of every subset but the test subset are pooled, shuffled with ``--seed`` and dealt into
K folds (logged, by name); fold k validates on its own pairs and trains on the others. Each fold
is a dataset folder in the annotation platform's layout (``images/{train,val}``, ``masks/...``,
the source's ``labelmap.txt``), masks written as class ids by the dataset channel's own code, and
is trained by ``semseg train --dataset`` in a child process, so a fold trains exactly as any
local job does. Results: each fold's best validation figures (``metrics.json``), and their mean
and sample standard deviation, printed and written to ``DIR/cv.json``.

SIGTERM stops the fold in training (``train`` checkpoints and exits) and starts no other.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from . import exit_codes, hyperparameters, local_train, processes
from .data.dataset_channel import layouts
from .data.dataset_channel.prepare import Dataset, open_dataset_at, write_pairs
from .errors import UserError
from .files import write_atomically
from .names import shown

log = logging.getLogger("semseg")

RESULTS_FILE = "cv.json"
FIGURES = ("mIOU", "pixel_accuracy", "mean_dice", "native_mIoU")  # of each fold, as metrics.json holds them
MIN_FOLDS, MAX_FOLDS = 2, 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folds", type=int, default=5, help=f"K, {MIN_FOLDS} to {MAX_FOLDS} (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the deal of pairs into folds (default 0)")
    local_train.add_arguments(parser)


def deal(pairs: list[layouts.Pair], folds: int, seed: int) -> list[list[layouts.Pair]]:
    """``pairs`` shuffled with ``seed`` and dealt into ``folds`` folds whose sizes differ by at most one."""
    order = sorted(pairs, key=lambda pair: pair.name)
    random.Random(seed).shuffle(order)
    return [sorted(order[k::folds], key=lambda pair: pair.name) for k in range(folds)]


def pooled_pairs(subsets: dict[str, list[layouts.Pair]]) -> tuple[list[layouts.Pair], list[str]]:
    """Every pair of the subsets that are not the test subset, and the names of those left out."""
    test = layouts.test_subset(subsets)
    held_out = [test[0]] if test else []
    pairs = [pair for name, members in sorted(subsets.items()) if name not in held_out for pair in members]
    return pairs, held_out


def write_fold(opened: Dataset, train: list, validation: list, folder: Path, num_classes: int) -> Path:
    """One fold as a dataset folder in the platform's layout; returns ``folder``."""
    for split, pairs in (("train", train), ("val", validation)):
        write_pairs(opened, pairs, folder / "images" / split, folder / "masks" / split, num_classes, split)
    if opened.layout.label_map is not None:
        (folder / layouts.LABEL_MAP).write_bytes(opened.archive.read(opened.layout.label_map))
    return folder


class _Children:
    """The fold being trained; SIGTERM is passed on to it, and no fold starts after one."""

    def __init__(self):
        self.current: subprocess.Popen | None = None
        self.stopped = False

    def on_sigterm(self, signum, frame) -> None:
        self.stopped = True
        if self.current is not None and self.current.poll() is None:
            self.current.send_signal(signal.SIGTERM)

    def run(self, command: list[str], log_path: Path) -> int:
        with open(log_path, "wb") as output:
            self.current = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=processes.die_with_parent
            )
            return self.current.wait()


def fold_figures(job: Path) -> dict:
    """A fold's figures from its ``metrics.json``: the best epoch's, and the mIoU at each image's own
    size when the job measured it (``native_mIoU``); a figure the job did not write is absent."""
    metrics = json.loads((job / "output" / "data" / "metrics.json").read_text())
    found = {**(metrics.get("best_epoch") or {}), "native_mIoU": (metrics.get("native_validation") or {}).get("mIoU")}
    return {figure: found[figure] for figure in FIGURES if isinstance(found.get(figure), float | int)}


def summary(per_fold: list[dict]) -> dict:
    """Mean and sample standard deviation (n - 1) of each figure over the folds."""
    result = {}
    for figure in FIGURES:
        values = [fold[figure] for fold in per_fold if figure in fold]
        if len(values) == len(per_fold):
            result[figure] = {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))}
    return result


def main(args: argparse.Namespace) -> int:
    if args.dataset is None or args.output is None:
        raise UserError("semseg cv needs --dataset and --output")
    if not MIN_FOLDS <= args.folds <= MAX_FOLDS:
        raise UserError(f"--folds is {args.folds}; give a number of folds from {MIN_FOLDS} to {MAX_FOLDS}")
    if not args.dataset.exists():
        raise UserError(f"The dataset {args.dataset} does not exist")
    values = local_train.given_hyperparameters(args)
    output = args.output.resolve()
    if output.exists() and any(output.iterdir()):
        raise UserError(f"The output folder {output} is not empty; give cross-validation a new one")
    with open_dataset_at(args.dataset) as opened:
        pairs, held_out = pooled_pairs(opened.layout.subsets)
        if held_out:
            log.info("The subset %s is held out of every fold", ", ".join(map(shown, held_out)))
        if len(pairs) < args.folds:
            raise UserError(
                f"The dataset has {len(pairs)} image/mask pairs outside its test subset; {args.folds} folds need "
                "at least one each"
            )
        num_classes = len(opened.table) if opened.table is not None else None
        if num_classes is None:
            num_classes = hyperparameters.parse_one("num_classes", values)
        folds = deal(pairs, args.folds, args.seed)
        for k, fold in enumerate(folds):
            log.info("Fold %d validates on %d pairs: %s", k, len(fold), ", ".join(shown(pair.name) for pair in fold))
            train = [pair for other, members in enumerate(folds) if other != k for pair in members]
            write_fold(opened, train, fold, output / f"fold-{k}" / "dataset", num_classes)
    children = _Children()
    previous = signal.signal(signal.SIGTERM, children.on_sigterm)
    per_fold = []
    try:
        for k in range(args.folds):
            if children.stopped:
                break
            folder = output / f"fold-{k}"
            command = [str(Path(sys.executable).parent / "semseg"), "train", "--dataset", str(folder / "dataset")]
            command += ["--output", str(folder / "job"), *[f"--{name}={value}" for name, value in values.items()]]
            log.info("Fold %d (%d of %d): training (log: %s)", k, k + 1, args.folds, folder / "train.log")
            code = children.run(command, folder / "train.log")
            if code:
                failure = folder / "job" / "output" / "failure"
                reason = failure.read_text().strip() if failure.exists() else f"see {folder / 'train.log'}"
                if children.stopped:
                    break
                raise UserError(f"Fold {k} failed (exit code {code}): {reason}")
            figures = fold_figures(folder / "job")
            per_fold.append({"fold": k, "validation_pairs": len(folds[k]), **figures})
            log.info("Fold %d: %s", k, ", ".join(f"{name} {value:.4f}" for name, value in figures.items()))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if children.stopped:
        log.warning("Received SIGTERM: cross-validation stopped after %d of %d folds", len(per_fold), args.folds)
        return exit_codes.STOPPED
    result = {"folds": args.folds, "seed": args.seed, "per_fold": per_fold, "summary": summary(per_fold)}
    text = json.dumps(result, indent=2)
    write_atomically(output / RESULTS_FILE, lambda tmp: Path(tmp).write_text(text))
    _print(result)
    return 0


def _print(result: dict) -> None:
    figures = [figure for figure in FIGURES if figure in result["summary"]]
    print(f"{'fold':>4} {'pairs':>6} " + " ".join(f"{figure:>15}" for figure in figures))
    for fold in result["per_fold"]:
        print(f"{fold['fold']:>4} {fold['validation_pairs']:>6} " + " ".join(f"{fold[f]:>15.4f}" for f in figures))
    spread = " ".join(f"{result['summary'][f]['mean']:>7.4f}±{result['summary'][f]['std']:<7.4f}" for f in figures)
    print(f"{'mean ± std':>11} {spread}")
