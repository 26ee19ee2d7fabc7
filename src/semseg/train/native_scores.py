"""At the end of training: the saved model scored as its endpoint serves it, on the validation split
and, when the data has one, on the held-out test split.

Training's validation figure (``#quality_metric``) comes from centre crops resized to ``crop_size``;
it stays the tuning objective and chooses the best epoch. A user of the endpoint gets something
else: each image at its own size, resized and padded or in sliding windows, through the engine the
server picks (the int8 copy when it was kept, else ``model.onnx``, else MXNet). That figure can be
several points of mIoU away, so it is measured here once, with ``evaluation.native``, on the split
training validated on. The test split (the dataset's test subset, or the File-mode channels
``test`` and ``test_annotation``) is read nowhere else: scoring it once, after the epochs are
chosen, keeps it an honest estimate.

Both fail soft, as the int8 copy does: the trained model is the job's result, so a failure here is
a warning and the figure is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import paths
from ..data import file_mode, label_map
from ..data.file_mode import Sample
from ..evaluation import native
from ..inference.predictor import Predictor
from .int8_gate import file_mode_split, in_file_mode, training_data_root
from .stop import Stopped

log = logging.getLogger("semseg")

VALIDATION_KEY = "native_validation"  # the keys of metrics.json
TEST_KEY = "test"
TEST_SPLIT = "test"  # the File-mode directories test and test_annotation
NAMED = {
    VALIDATION_KEY: "Validation at each image's own size",
    TEST_KEY: "Test subset, held out, at each image's own size",
}


@dataclass
class EndScores:
    """What the end of training measured (metrics.json key -> figures) and, for each figure it could
    not measure, why (key -> a sentence, for the report)."""

    figures: dict[str, dict] = field(default_factory=dict)
    not_measured: dict[str, str] = field(default_factory=dict)

    def for_report(self, key: str) -> dict | str | None:
        return self.figures.get(key) or self.not_measured.get(key)


class _Checked(Sequence):
    """``samples`` with ``stop_check`` before each: a SIGTERM ends the scoring between two images."""

    def __init__(self, samples: Sequence[Sample], stop_check: Callable[[], None]):
        self.samples, self.stop_check = samples, stop_check

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        self.stop_check()
        return self.samples[index]


def test_pairs(data: Path, hp: dict) -> tuple[list[Sample], np.ndarray]:
    """The test pairs under ``data`` and their label table. Their label map is
    ``test_label_map.json`` of the label_map channel, else the validation one: test masks are
    usually encoded as the validation masks are."""
    maps = paths.channel_dir("label_map")
    split = TEST_SPLIT if (maps / f"{TEST_SPLIT}_label_map.json").is_file() else "validation"
    spec = label_map.load(maps if maps.is_dir() else None, split)
    pairs = file_mode.find_pairs(data / TEST_SPLIT, data / f"{TEST_SPLIT}_annotation")
    return pairs, label_map.lookup_table(spec, hp["num_classes"], f"{split} label map")


def figures_of(evaluation: native.Evaluation) -> dict:
    return {
        "engine": evaluation.engine,
        "images": len(evaluation.images),
        "seconds": evaluation.seconds,
        **evaluation.split.summary(),
    }


def score_after_training(hp: dict, model_dir: Path, stop_check: Callable[[], None]) -> EndScores:
    """The model in ``model_dir`` on the validation split and the test split, each image at its own size."""
    scores, data = EndScores(), training_data_root()
    wanted: dict[str, Callable[[], tuple[list[Sample], np.ndarray]]] = {}
    if not in_file_mode(data):
        _skip(
            scores,
            VALIDATION_KEY,
            "the training and validation data are not in File mode here (Pipe mode); 'semseg evaluate' scores "
            "a model on data as files",
        )
    elif not hp.get("_native_validation", True):
        _skip(scores, VALIDATION_KEY, "the hyperparameter _native_validation is False")
    else:
        wanted[VALIDATION_KEY] = lambda: file_mode_split(data, "validation", hp, paths.channel_dir("label_map"))
    if (data / TEST_SPLIT).is_dir() or (data / f"{TEST_SPLIT}_annotation").is_dir():
        wanted[TEST_KEY] = lambda: test_pairs(data, hp)
    if not wanted:
        return scores
    try:
        predictor = Predictor.from_model_dir(model_dir, native.settings_for(None, model_dir))
    except Stopped:
        raise
    except Exception as exc:  # noqa: BLE001 - the model is the job's result; this only describes it
        for key in wanted:
            _warn(scores, key, exc)
        return scores
    for key, split in wanted.items():
        try:
            samples, table = split()
            evaluation = native.evaluate(predictor, _Checked(samples, stop_check), table, keep_worst=0)
        except Stopped:
            raise
        except Exception as exc:  # noqa: BLE001 - as above
            _warn(scores, key, exc)
            continue
        scores.figures[key] = figures = figures_of(evaluation)
        log.info(
            "%s, as the endpoint serves it (%s): mIoU %.4f, mean Dice %.4f, pixel accuracy %.4f (%d images)",
            NAMED[key],
            figures["engine"],
            figures["mIoU"],
            figures["mean_dice"],
            figures["pixel_accuracy"],
            figures["images"],
        )
    return scores


def _skip(scores: EndScores, key: str, reason: str) -> None:
    scores.not_measured[key] = reason
    log.info("No %s%s: %s", NAMED[key][0].lower(), NAMED[key][1:], reason)


def _warn(scores: EndScores, key: str, exc: Exception) -> None:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    scores.not_measured[key] = f"it failed ({reason})"
    log.warning("%s was not measured (%s); the trained model is kept", NAMED[key], reason)
