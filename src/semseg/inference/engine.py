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

    ONNX Runtime on the CPU when training wrote an ONNX export (``model.onnx``) for this input size;
    MXNet on the GPU when one is visible (the worker in slot ``i`` takes GPU ``i mod n``), and for every model
    without a usable export (older model directories, another ``SEMSEG_INFERENCE_SIZE``).
    """
    from ..model.export import ONNX_FILE
    from .mxnet_engine import MXNetEngine, pick_context
    from .onnx_engine import OnnxEngine, intra_op_threads

    settings = settings or ServingSettings()
    ctx = pick_context(settings.worker_slot)
    export = model_dir / ONNX_FILE
    if ctx.device_type == "gpu":
        reason = "a GPU is visible"
    elif not export.is_file():
        reason = f"the model has no {ONNX_FILE}"
    else:
        threads = intra_op_threads(settings)
        try:
            engine = OnnxEngine(export, threads)
        except Exception as exc:  # a damaged or foreign file: MXNet still serves the weights
            reason = f"its {ONNX_FILE} could not be loaded ({type(exc).__name__}: {str(exc).strip()[:200]})"
        else:
            if engine.input_size == input_size:
                log.info("Engine: %s, from %s", engine.name, ONNX_FILE)
                return engine
            reason = f"the inference size is {input_size} but {ONNX_FILE} takes {engine.input_size}"
    log.info("Engine: MXNet, because %s", reason)
    return MXNetEngine(hp, model_dir, input_size, ctx)
