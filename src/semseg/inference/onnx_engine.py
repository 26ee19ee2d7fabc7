"""The ONNX Runtime engine: the training job's ``model.onnx`` export, run on the CPU.

On CPUs it is faster than MXNet for the same network: ONNX Runtime folds the batch norms into the
convolutions, fuses convolution + add + ReLU, and runs its own tuned kernels. The session gets
every graph optimization and, per worker, ``ServingSettings.inference_threads`` intra-op threads,
or else the CPUs this process may run on (``cpu_threads.usable_cpu_count``: CPU sets and affinity
limits count) shared among the server's workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..cpu_threads import usable_cpu_count
from .settings import ServingSettings


def intra_op_threads(settings: ServingSettings) -> int:
    """Threads for one worker's session: the explicit setting, else its share of the available cores."""
    return settings.inference_threads or max(1, usable_cpu_count() // (settings.workers or 1))


def cpu_session(path: Path, threads: int):
    """An ONNX Runtime CPU session with every graph optimization and ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are about its own internals
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEngine:
    """Satisfies ``semseg.inference.engine.Engine`` for a ``model.onnx`` written by ``semseg.model.export``."""

    def __init__(self, path: Path, threads: int):
        self._session = cpu_session(path, threads)
        image = self._session.get_inputs()[0]
        output = self._session.get_outputs()[0]
        channels, height, width = image.shape[1:]
        if channels != 3 or height != width or not isinstance(height, int):
            raise ValueError(f"{path} takes {image.shape}, not a fixed square RGB image batch")
        self._input_name, self._output_name = image.name, output.name
        self.input_size = height
        self.num_classes = int(output.shape[1])
        self.threads = threads
        # the int8 copy says so in its metadata (semseg.model.quantize); the export is float32
        self.precision = self._session.get_modelmeta().custom_metadata_map.get("precision", "float32")
        self.name = f"onnxruntime (cpu, {self.precision}, {threads} thread{'s' if threads != 1 else ''})"

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self._session.run([self._output_name], {self._input_name: batch})[0]
