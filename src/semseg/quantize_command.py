"""``semseg quantize``: the int8 copy of a model trained earlier, kept only if the accuracy gate passes.

Training makes the copy itself at its end (``train.int8_gate.quantize_after_training``); this
command makes it for a model directory from before, with the data in File-mode layout.
"""

from __future__ import annotations

import logging
from pathlib import Path

from . import paths
from .errors import UserError
from .model.artifacts import read_hyperparameters, weights_file
from .model.export import ONNX_FILE, export_onnx_file
from .train.int8_gate import MAX_GATE_IMAGES, file_mode_split, quantize_model

log = logging.getLogger("semseg")


def main(model_dir: Path, data_dir: Path, max_gate_images: int = MAX_GATE_IMAGES) -> int:
    """``semseg quantize``: the int8 copy of an existing model; exit code 0 when it was kept, else 1.

    A model directory without ``model.onnx`` (from before exports) gets its export first.
    """
    model_dir, data_dir = Path(model_dir), Path(data_dir)
    if not (model_dir / paths.HYPERPARAMS_FILE).is_file():
        raise UserError(f"{model_dir} is not a model directory: it has no {paths.HYPERPARAMS_FILE}")
    hp = read_hyperparameters(model_dir)
    for split in ("train", "validation"):
        for name in (split, f"{split}_annotation"):
            if not (data_dir / name).is_dir():
                raise UserError(
                    f"{data_dir} has no '{name}' directory; --data must hold train, train_annotation, "
                    "validation and validation_annotation directories (the File-mode layout)"
                )
    if not (model_dir / ONNX_FILE).is_file():
        log.info("%s has no %s: exporting it first", model_dir, ONNX_FILE)
        export_onnx_file(hp, weights_file(model_dir), model_dir / ONNX_FILE)
    calibration, _ = file_mode_split(data_dir, "train", hp)
    validation, table = file_mode_split(data_dir, "validation", hp)
    result = quantize_model(model_dir, hp, calibration, validation, table, max_gate_images=max_gate_images)
    return 0 if result.kept else 1
