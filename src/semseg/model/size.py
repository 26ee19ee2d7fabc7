"""The square side a trained network sees at inference: one rule for the ONNX export and the predictor.

Training rescales images so their longer side is around ``base_size``; the predictor fits an
image's longer side to this size, so objects appear at the scale the network learnt. The export
is fixed at the default; a server may ask for another size (``SEMSEG_INFERENCE_SIZE``). Either is
rounded up to a multiple of 8, as ``crop_size`` is.
"""

from __future__ import annotations

from ..hyperparameters import round_up_to_multiple_of_8


def inference_size(hp: dict, requested: int | None = None) -> int:
    """``requested``, else the model's ``base_size``, rounded up to a multiple of 8."""
    return round_up_to_multiple_of_8(requested or hp["base_size"])
