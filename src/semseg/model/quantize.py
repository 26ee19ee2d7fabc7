"""The int8 copy of an ONNX export, made with ONNX Runtime's own tools.

CPUs with VNNI (and ONNX Runtime's int8 kernels on any x86) run an int8 network several times
faster than its float32 original. The copy is made by ONNX Runtime's pre-processing (batch norms
folded into the convolutions, shapes inferred), then static quantization in the QDQ format with
per-channel int8 weights and uint8 activations, whose ranges are calibrated on images given by
the caller (training gives a sample of its training images through the validation transform at
the export size). The classifier convolution and what follows it (the upsampling of the logits,
the softmax) stay float32: see ``float32_tail``.

PSP's fixed pooling (AveragePool + Slice + Concat) and DeepLab's ASPP (dilated convolutions, a
global average pool, Concat and Resize) are all operators of the QDQ registry and are quantized
like the rest (``tests/test_quantize.py`` checks both). Whether a copy is accurate enough to be
kept is decided by ``semseg.train.int8_gate``.
"""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..data.dataset import prepare_pair
from ..data.file_mode import Sample
from ..data.transforms import validation_transform
from ..files import write_atomically

log = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
# Why the classifier and what follows it stay float32 (logged at quantization).
FLOAT32_TAIL_REASON = (
    "the class decision compares logits that differ by less than one int8 step; the classifier "
    "is a 1x1 convolution at 1/8 resolution, under 1% of the network's work"
)


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
        onnx.helper.set_model_props(result, {**_props(original), "precision": "int8"})
        write_atomically(destination, lambda tmp: onnx.save(result, tmp))
    return destination


def _props(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def export_size(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(_props(model)["input_size"])
