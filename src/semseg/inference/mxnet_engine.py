"""The MXNet engine: a GluonCV network built for one fixed square input, hybridized with static
shapes, on the GPU when one is visible.

GluonCV bakes ``crop_size`` into its graphs (FCN silently returns a crop-size map for other
inputs; PSP and DeepLab fail), so the serving network is built with ``crop_size`` equal to the
inference size ``S``. Parameters load by name whatever ``crop_size`` was at training, and the
auxiliary head, which only helps training, is left out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mxnet as mx
import numpy as np

from ..errors import UserError
from ..model.artifacts import weights_file
from ..model.factory import build_network

log = logging.getLogger(__name__)


def pick_context(worker_index: int = 0) -> mx.Context:
    """The GPU ``worker_index mod #GPUs`` when GPUs are visible, else the CPU."""
    gpus = mx.context.num_gpus()
    return mx.gpu(worker_index % gpus) if gpus else mx.cpu()


class MXNetEngine:
    """Satisfies ``semseg.inference.engine.Engine``."""

    def __init__(self, hp: dict, model_dir: Path, input_size: int, ctx: mx.Context):
        self.input_size = input_size
        self.num_classes = hp["num_classes"]
        self.ctx = ctx
        self.name = f"mxnet ({ctx.device_type}{f':{ctx.device_id}' if ctx.device_type == 'gpu' else ''})"
        params = weights_file(model_dir)
        net = build_network(hp["algorithm"], hp["backbone"], hp["num_classes"], input_size, hp["base_size"], aux=False)
        try:
            net.load_parameters(str(params), ctx=ctx, ignore_extra=True)
        except Exception as exc:  # MXNet reports a wrong or corrupt file as a bare MXNetError/AssertionError
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"The weights {params} do not fit a {hp['algorithm']}/{hp['backbone']} network with "
                f"{hp['num_classes']} classes ({reason[:300]})"
            ) from None
        net.hybridize(static_alloc=True, static_shape=True)
        self._net = net

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        data = mx.nd.array(batch, ctx=self.ctx, dtype="float32")
        outputs = self._net(data)
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        return mx.nd.softmax(logits, axis=1).asnumpy()
