"""The engine interface: the forward pass, behind one small protocol, so MXNet and ONNX Runtime
are interchangeable under the predictor.

An engine runs a batch of normalised square images of its fixed ``input_size`` and returns class
probabilities of the same spatial size. Everything about image geometry (any input size, large
images, mapping back to the exact input height and width) belongs to the predictor, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Engine(Protocol):
    name: str  # shown in the log at load time, e.g. "mxnet (cpu)" or "onnxruntime (2 threads)"
    num_classes: int
    input_size: int  # side of the square input the engine's graph is built for

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, S, S) normalised images -> float32 (N, C, S, S) softmax probabilities."""
        ...


def load_engine(model_dir: Path, hp: dict, input_size: int, worker_index: int = 0) -> Engine:
    """The engine that runs the model in ``model_dir``: the one place that chooses between engines.

    MXNet serves every model, on the GPU when one is visible (worker ``i`` takes GPU ``i mod n``).
    """
    from .mxnet_engine import MXNetEngine, pick_context

    return MXNetEngine(hp, model_dir, input_size, pick_context(worker_index))
