"""The weights a training run starts from: a model to continue (incremental training), the staged
ImageNet backbone, or random ones.

Every layer not loaded from a file gets He (MSRA) initialisation: MXNet's default (uniform 0.07)
starves a 50-layer ResNet trained from scratch, He's keeps activations at scale through depth.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import mxnet as mx

from .. import paths
from ..errors import UserError, one_line
from ..hyperparameters import ALGORITHM_BACKBONES
from . import artifacts, pretrained

log = logging.getLogger("semseg")

HE_INIT = mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


def initial_weights(net, hp: dict, ctx: list) -> None:
    """Initialise, then load weights from the model channel or the staged ImageNet backbone."""
    with warnings.catch_warnings():  # GluonCV heads initialise some parameters in their constructors
        warnings.simplefilter("ignore", UserWarning)
        net.initialize(HE_INIT, ctx=ctx)
    net.collect_params().reset_ctx(ctx)
    model_channel = paths.channel_dir(paths.MODEL_CHANNEL)
    if model_channel.is_dir() and any(model_channel.iterdir()):
        load_model_channel(net, hp, ctx, model_channel)
    elif hp["use_pretrained_model"] and not ALGORITHM_BACKBONES[hp["algorithm"]]:
        log.info(
            "%s has no ImageNet backbone: it starts from random weights (use_pretrained_model does not apply)",
            hp["algorithm"],
        )
    elif hp["use_pretrained_model"]:
        pretrained.load_backbone(net, hp["backbone"], ctx)
    else:
        log.info("use_pretrained_model is False: the backbone starts from random weights")


def load_model_channel(net, hp: dict, ctx: list, model_channel: Path) -> None:
    """Incremental training: every weight from the model in the channel, whose architecture must match."""
    with tempfile.TemporaryDirectory() as scratch:
        source = artifacts.unpack_model_dir(model_channel, Path(scratch))
        previous = artifacts.read_hyperparameters(source)
        artifacts.check_same_architecture(hp, previous)
        weights = artifacts.weights_file(source)
        log.info("Incremental training: initializing all weights from %s", weights.name)
        try:
            net.load_parameters(str(weights), ctx=ctx)
        except Exception as exc:
            raise UserError(
                f"The weights {weights.name} of the model channel could not be loaded ({one_line(exc)})"
            ) from None
