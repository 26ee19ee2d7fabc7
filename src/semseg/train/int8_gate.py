"""The accuracy gate of the int8 copy (``model/model.int8.onnx``), at the end of training and in
``semseg quantize``.

Both models segment the validation set (the validation transform at the export size, up to
``MAX_GATE_IMAGES`` images evenly spread over it, scored with the training metric) and the int8
copy is kept only if its mIoU is at most ``MAX_MIOU_DROP`` below float32's. Both figures are
logged either way; serving prefers the int8 copy whenever it exists, so a copy that fails the
gate is never written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import paths
from ..cpu_threads import usable_cpu_count
from ..data import file_mode, label_map
from ..data.file_mode import Sample
from ..evaluation.scores import ConfusionMatrix
from ..files import write_atomically
from ..model.export import ONNX_FILE
from ..model.quantize import INT8_FILE, evenly_spread, export_size, prepared, quantize_file

log = logging.getLogger(__name__)

MAX_MIOU_DROP = 0.01  # the most validation mIoU the int8 copy may lose against float32
CALIBRATION_IMAGES = 32  # training images whose activations set the int8 ranges
MAX_GATE_IMAGES = 200  # validation images the gate runs both models on (about 3 minutes on 4 cores at 520)


@dataclass
class GateResult:
    """The validation figures of both models, and whether the int8 copy was kept."""

    fp32_miou: float
    int8_miou: float
    agreement: float  # share of validation pixels where both models pick the same class
    images: int

    @property
    def drop(self) -> float:
        return self.fp32_miou - self.int8_miou

    @property
    def kept(self) -> bool:
        return self.drop <= MAX_MIOU_DROP


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_on_validation(
    fp32: Path, int8: Path, samples: Sequence[Sample], size: int, table: np.ndarray, num_classes: int, threads: int
) -> GateResult:
    """Both models' mIoU on ``samples`` (the validation transform at ``size``), and their agreement."""
    sessions = _session(fp32, threads), _session(int8, threads)
    matrices = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    same = total = 0
    for image, labels in prepared(samples, size, table):
        feed = {sessions[0].get_inputs()[0].name: image[None]}
        classes = [session.run(None, feed)[0][0].argmax(axis=0) for session in sessions]
        for matrix, predicted in zip(matrices, classes):
            matrix.update(labels, predicted)
        same += int((classes[0] == classes[1]).sum())
        total += classes[0].size
    return GateResult(matrices[0].mean_iou(), matrices[1].mean_iou(), same / max(1, total), len(samples))


def quantize_model(
    model_dir: Path,
    hp: dict,
    calibration: Sequence[Sample],
    validation: Sequence[Sample],
    table: np.ndarray,
    threads: int | None = None,
    max_gate_images: int = MAX_GATE_IMAGES,
) -> GateResult:
    """Write ``model_dir/model.int8.onnx`` from ``model.onnx`` if it passes the gate; log both mIoUs.

    ``table`` maps the masks' encoded values to class ids (``data.label_map``). Any earlier int8
    copy is removed first: it may belong to other weights. Raises when a step fails.
    """
    model_dir = Path(model_dir)
    source, destination = model_dir / ONNX_FILE, model_dir / INT8_FILE
    destination.unlink(missing_ok=True)
    size = export_size(source)
    threads = threads or usable_cpu_count()
    with tempfile.TemporaryDirectory(prefix="semseg-int8-") as scratch:
        candidate = Path(scratch) / INT8_FILE
        images = (image for image, _ in prepared(evenly_spread(calibration, CALIBRATION_IMAGES), size, table))
        quantize_file(source, candidate, images)
        gate = evenly_spread(validation, max_gate_images)
        result = compare_on_validation(source, candidate, gate, size, table, hp["num_classes"], threads)
        figures = (
            f"validation mIoU {result.int8_miou:.4f} int8 vs {result.fp32_miou:.4f} float32 "
            f"(drop {result.drop:+.4f}, at most {MAX_MIOU_DROP} allowed; classes agree on "
            f"{100 * result.agreement:.2f}% of pixels; {result.images} of {len(validation)} validation images "
            f"at {size}x{size})"
        )
        if result.kept:
            write_atomically(destination, lambda tmp: shutil.copyfile(candidate, tmp))
            log.info("Wrote the int8 model %s: %s", destination, figures)
        else:
            log.warning("The int8 model was not kept, because it loses too much accuracy: %s", figures)
    return result


def file_mode_split(
    data_dir: Path, split: str, hp: dict, label_map_dir: Path | None = None
) -> tuple[list[Sample], np.ndarray]:
    """A split's pairs and label table from ``data_dir`` in the File-mode layout (``<split>`` and
    ``<split>_annotation`` directories, as under /opt/ml/input/data), with the label maps of
    ``label_map_dir`` (default: ``data_dir/label_map``; the built-in's default map where there is none)."""
    label_map_dir = label_map_dir or data_dir / "label_map"
    spec = label_map.load(label_map_dir if label_map_dir.is_dir() else None, split)
    pairs = file_mode.find_pairs(data_dir / split, data_dir / f"{split}_annotation")
    return pairs, label_map.lookup_table(spec, hp["num_classes"], f"{split} label map")


def training_data_root() -> Path:
    """Where a job's File-mode splits are: the 'dataset' channel as training wrote it out, else the channels."""
    return paths.prepared_dataset_dir() if paths.prepared_dataset_dir().is_dir() else paths.data_dir()


def in_file_mode(data: Path) -> bool:
    """Whether ``data`` holds the train and validation splits as File-mode directories (in Pipe mode it does not)."""
    return (data / "train").is_dir() and (data / "validation").is_dir()


def quantize_after_training(hp: dict, model_dir: Path) -> GateResult | None:
    """At the end of training: the int8 copy of ``model.onnx`` from the File-mode channels.

    Fails soft, as the export does: the float32 export still serves, so a failure is a warning.
    """
    model_dir = Path(model_dir)
    (model_dir / INT8_FILE).unlink(missing_ok=True)
    if not hp.get("_int8", True):
        log.info("No int8 model: the hyperparameter _int8 is False")
        return None
    if not (model_dir / ONNX_FILE).is_file():
        log.info("No int8 model: there is no %s to quantize", ONNX_FILE)
        return None
    data = training_data_root()
    if not in_file_mode(data):
        log.info(
            "No int8 model: the training and validation data are not in File mode here; "
            "run 'semseg quantize MODEL_DIR --data DIR' with the data in File-mode layout"
        )
        return None
    try:
        calibration, _ = file_mode_split(data, "train", hp, paths.channel_dir("label_map"))
        validation, table = file_mode_split(data, "validation", hp, paths.channel_dir("label_map"))
        return quantize_model(model_dir, hp, calibration, validation, table)
    except Exception as exc:  # noqa: BLE001 - the float32 model is the result; this only speeds it up
        (model_dir / INT8_FILE).unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        log.warning("The int8 model was not written (%s: %s); the float32 export serves", type(exc).__name__, first)
        return None
