"""ImageNet backbone weights, staged on disk at image build time and never downloaded at run time.

GluonCV keeps them as ``$MXNET_HOME/models/<name>-<sha1 prefix>.params`` (``~/.mxnet/models``
without MXNET_HOME). We look for that file ourselves and load it by parameter name into the
segmentation network's backbone, so nothing writes lock files and nothing touches the network.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import mxnet as mx

from ..errors import UserError, one_line
from .encoder import ENCODER_MODEL

log = logging.getLogger(__name__)

# GluonCV's published file names (name-sha1[:8]) for the ImageNet backbones we use.
STAGED_FILE = {
    "resnet18_v1b": "resnet18_v1b-2d9d980c.params",
    "resnet34_v1b": "resnet34_v1b-8e16b848.params",
    "resnet50_v1s": "resnet50_v1s-25a187fa.params",
    "resnet101_v1s": "resnet101_v1s-bd93a83c.params",
}


def models_dir() -> Path:
    home = os.environ.get("MXNET_HOME") or os.path.join(os.path.expanduser("~"), ".mxnet")
    return Path(home) / "models"


def staged_file(backbone: str) -> Path:
    return models_dir() / STAGED_FILE[ENCODER_MODEL[backbone]]


def load_backbone(net: mx.gluon.Block, backbone: str, ctx) -> None:
    """Load the staged ImageNet weights into ``net``'s backbone layers, or fail saying how to fix it."""
    path = staged_file(backbone)
    if not path.is_file():
        raise UserError(
            f"use_pretrained_model is True but the ImageNet weights for {backbone} are not staged at {path}; "
            "build the image with the weights staged (see docs/training.md, 'Pretrained weights'), copy the GluonCV "
            f"file {path.name} there, or set use_pretrained_model to False to train from scratch"
        )
    log.info("Loading ImageNet %s weights from %s", backbone, path)
    try:
        net.load_parameters(str(path), ctx=ctx, allow_missing=True, ignore_extra=True)
    except Exception as exc:
        raise UserError(f"The staged ImageNet weights {path} could not be loaded ({one_line(exc)})") from None
