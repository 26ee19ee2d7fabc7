"""The int8 copy of the ONNX export: ``model/model.int8.onnx``, kept only when it is as accurate.

CPUs with VNNI (and ONNX Runtime's int8 kernels on any x86) run an int8 network several times
faster than its float32 original. The copy is made with ONNX Runtime's own tools: its
pre-processing (batch norms folded into the convolutions, shapes inferred), then static
quantization in the QDQ format with per-channel int8 weights and uint8 activations, whose ranges
are calibrated on a sample of training images through the validation transform at the export
size. The classifier convolution and what follows it (the upsampling of the logits, the softmax)
stay float32: see ``float32_tail``.

The accuracy gate: both models segment the validation set (the validation transform at the export
size, up to ``MAX_GATE_IMAGES`` images evenly spread over it) and the int8 copy is kept only if its
mIoU is at most ``MAX_MIOU_DROP`` below float32's. Both figures are logged either way; serving
prefers the int8 copy whenever it exists, so a copy that fails the gate is never written.

PSP's fixed pooling (AveragePool + Slice + Concat) and DeepLab's ASPP (dilated convolutions, a
global average pool, Concat and Resize) are all operators of the QDQ registry and are quantized
like the rest (``tests/test_quantize.py`` checks both).
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import paths
from ..data import file_mode, label_map
from ..data.dataset import prepare_pair
from ..data.file_mode import Sample
from ..data.transforms import validation_transform
from ..errors import UserError
from ..train.metrics import ConfusionMatrix
from .artifacts import write_atomically
from .export import ONNX_FILE

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
MAX_MIOU_DROP = 0.01  # the most validation mIoU the int8 copy may lose against float32
CALIBRATION_IMAGES = 32  # training images whose activations set the int8 ranges
MAX_GATE_IMAGES = 200  # validation images the gate runs both models on (about 3 minutes on 4 cores at 520)
# Why the classifier and what follows it stay float32 (logged at quantization).
FLOAT32_TAIL_REASON = (
    "the class decision compares logits that differ by less than one int8 step; the classifier "
    "is a 1x1 convolution at 1/8 resolution, under 1% of the network's work"
)


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


def evenly_spread(samples: Sequence[Sample], count: int) -> list[Sample]:
    """At most ``count`` samples spread over the whole list (the same ones every time)."""
    if len(samples) <= count:
        return list(samples)
    return [samples[i * len(samples) // count] for i in range(count)]


def prepared(samples: Sequence[Sample], size: int, table: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(float32 (3, S, S) normalised image, (S, S) class ids, -1 ignored) through the validation transform."""
    transform = validation_transform(size)
    for sample in samples:
        yield prepare_pair(sample.image, sample.mask, transform, table, random.Random(0))


class _Calibration:
    """ONNX Runtime's ``CalibrationDataReader``: one normalised image per call, then None."""

    def __init__(self, images: Iterator[np.ndarray], input_name: str):
        self._images, self._input_name = images, input_name

    def get_next(self) -> dict | None:
        image = next(self._images, None)
        return None if image is None else {self._input_name: image[None]}


def float32_tail(model) -> list[str]:
    """Names of the nodes kept in float32: the classifier (the graph's last convolution) and every
    node after it (the upsampling of the logits to the input size, the softmax); logged with why.

    Quantizing them as well flipped the class of 9% of validation pixels on a briefly trained model;
    keeping them float32 brought that to about 1%.
    """
    nodes = list(model.graph.node)
    classifier = max(i for i, node in enumerate(nodes) if node.op_type == "Conv")
    tail = nodes[classifier:]
    kinds = ", ".join(sorted({node.op_type for node in tail}))
    log.info(
        "int8: the classifier and what follows it (%d nodes: %s) stay float32: %s",
        len(tail),
        kinds,
        FLOAT32_TAIL_REASON,
    )
    return [node.name for node in tail]


def quantize_file(source: Path, destination: Path, calibration_images: Iterator[np.ndarray]) -> Path:
    """Write the static QDQ int8 copy of the float32 ONNX file ``source``; raises on failure."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="semseg-int8-") as scratch:
        prepared_model = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared_model), skip_symbolic_shape=True)
        model = onnx.load(str(prepared_model))
        for number, node in enumerate(model.graph.node):  # nodes_to_exclude goes by name
            node.name = node.name or f"{node.op_type}_{number}"
        onnx.save(model, str(prepared_model))
        input_name = model.graph.input[0].name
        quantized = Path(scratch) / "int8.onnx"
        quantize_static(
            str(prepared_model),
            str(quantized),
            _Calibration(calibration_images, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float32_tail(model),
            # MinMax keeps two reduced numbers per tensor and image, so calibration memory stays small.
            calibrate_method=CalibrationMethod.MinMax,
        )
        result = onnx.load(str(quantized))
        original = onnx.load(str(source), load_external_data=False)
        result.ClearField("metadata_props")
        result.metadata_props.extend(original.metadata_props)
        onnx.helper.set_model_props(result, {**_props(original), "precision": "int8"})
        write_atomically(destination, lambda tmp: onnx.save(result, tmp))
    return destination


def _props(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def compare_on_validation(
    fp32: Path, int8: Path, samples: Sequence[Sample], size: int, table: np.ndarray, num_classes: int, threads: int
) -> GateResult:
    """Both models' mIoU on ``samples`` (the validation transform at ``size``), and their agreement."""
    from ..inference.onnx_engine import OnnxEngine

    engines = OnnxEngine(fp32, threads), OnnxEngine(int8, threads)
    matrices = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    same = total = 0
    for image, labels in prepared(samples, size, table):
        classes = [engine.probabilities(image[None])[0].argmax(axis=0) for engine in engines]
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
    from ..inference.onnx_engine import available_cores

    model_dir = Path(model_dir)
    source, destination = model_dir / ONNX_FILE, model_dir / INT8_FILE
    destination.unlink(missing_ok=True)
    size = _export_size(source)
    threads = threads or available_cores()
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


def _export_size(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(_props(model)["input_size"])


def file_mode_split(data_dir: Path, split: str, hp: dict) -> tuple[list[Sample], np.ndarray]:
    """A split's pairs and label table from ``data_dir`` in the File-mode layout (``<split>``,
    ``<split>_annotation`` and optionally ``label_map`` directories, as under /opt/ml/input/data)."""
    label_map_dir = data_dir / "label_map" if (data_dir / "label_map").is_dir() else None
    spec = label_map.load(label_map_dir, split)
    pairs = file_mode.find_pairs(data_dir / split, data_dir / f"{split}_annotation")
    return pairs, label_map.lookup_table(spec, hp["num_classes"], f"{split} label map")


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
    if not (paths.channel_dir("train").is_dir() and paths.channel_dir("validation").is_dir()):
        log.info(
            "No int8 model: the training and validation data are not in File mode here; "
            "run 'semseg quantize MODEL_DIR --data DIR' with the data in File-mode layout"
        )
        return None
    try:
        calibration, _ = file_mode_split(paths.data_dir(), "train", hp)
        validation, table = file_mode_split(paths.data_dir(), "validation", hp)
        return quantize_model(model_dir, hp, calibration, validation, table)
    except Exception as exc:  # noqa: BLE001 - the float32 model is the result; this only speeds it up
        (model_dir / INT8_FILE).unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        log.warning("The int8 model was not written (%s: %s); the float32 export serves", type(exc).__name__, first)
        return None


def quantize_command(model_dir: Path, data_dir: Path, max_gate_images: int = MAX_GATE_IMAGES) -> int:
    """``semseg quantize``: the int8 copy of an existing model; exit code 0 when it was kept, else 1.

    A model directory without ``model.onnx`` (from before exports) gets its export first.
    """
    from .artifacts import read_hyperparameters, weights_file
    from .export import export_onnx_file

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
