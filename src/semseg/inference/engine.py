"""The engine interface: the forward pass, behind one small protocol, so MXNet and ONNX Runtime
are interchangeable under the predictor.

An engine runs a batch of normalised square images of its fixed ``input_size`` and returns class
probabilities of the same spatial size. Everything about image geometry (any input size, large
images, mapping back to the exact input height and width) belongs to the predictor, not here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from .settings import ServingSettings

log = logging.getLogger(__name__)


class Engine(Protocol):
    name: str  # shown in the log at load time, e.g. "mxnet (cpu)" or "onnxruntime (2 threads)"
    num_classes: int
    input_size: int  # side of the square input the engine's graph is built for

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, S, S) normalised images -> float32 (N, C, S, S) softmax probabilities."""
        ...


def load_engine(model_dir: Path, hp: dict, input_size: int, settings: ServingSettings | None = None) -> Engine:
    """The engine that runs the model in ``model_dir``: the one place that chooses between engines.

    ONNX Runtime on the CPU when training wrote an ONNX export for this input size: its int8 copy
    (``model.int8.onnx``, written only when it passed its accuracy gate) unless
    ``SEMSEG_FORCE_FP32`` asks for float32, else ``model.onnx``; MXNet on the GPU when one is visible
    (the worker in slot ``i`` takes GPU ``i mod n``), and for every model without a usable export
    (older model directories, another ``SEMSEG_INFERENCE_SIZE``).
    """
    from ..model.export import ONNX_FILE
    from ..model.quantize import INT8_FILE
    from .mxnet_engine import MXNetEngine, pick_context
    from .onnx_engine import OnnxEngine, intra_op_threads

    settings = settings or ServingSettings()
    ctx = pick_context(settings.worker_slot)
    if ctx.device_type == "gpu":
        log.info("Engine: MXNet, because a GPU is visible")
        return MXNetEngine(hp, model_dir, input_size, ctx)
    exports = [ONNX_FILE] if settings.force_fp32 else [INT8_FILE, ONNX_FILE]
    if settings.force_fp32 and (model_dir / INT8_FILE).is_file():
        log.info("Not serving %s: SEMSEG_FORCE_FP32 asks for float32", INT8_FILE)
    reasons = []
    for name in exports:
        if not (model_dir / name).is_file():
            reasons.append(f"the model has no {name}")
            continue
        try:
            engine = OnnxEngine(model_dir / name, intra_op_threads(settings))
        except Exception as exc:  # a damaged or foreign file: the next choice still serves the weights
            reasons.append(f"its {name} could not be loaded ({type(exc).__name__}: {str(exc).strip()[:200]})")
            continue
        if engine.input_size == input_size:
            log.info("Engine: %s, from %s%s", engine.name, name, f" ({reasons[-1]})" if reasons else "")
            return engine
        reasons.append(f"the inference size is {input_size} but {name} takes {engine.input_size}")
    log.info("Engine: MXNet, because %s", "; ".join(reasons[-1:]))
    return MXNetEngine(hp, model_dir, input_size, ctx)
