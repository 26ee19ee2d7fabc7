"""One factory that builds the network a configuration names, with the built-in's aux head.

For the built-in's three (``fcn``, ``psp``, ``deeplab``) the parameter names are those of a plain
``gluoncv.model_zoo.FCN/PSPNet/DeepLabV3(nclass, backbone=..., aux=True)``, so the files we write
load into GluonCV directly, as users of the built-in algorithm load ``model_algo-1``. ``fastscnn``
is GluonCV's ``FastSCNN``; ``unet`` and ``deeplabv3plus`` have no GluonCV class and are built here
(``build_network`` is how to load their files outside the container: docs/choices.md).
"""

from __future__ import annotations

import contextlib
import io
import logging

import mxnet as mx

from ..data.images import set_pillow_limits
from . import fastscnn
from .deeplabv3plus import DeepLabV3Plus
from .unet import UNet

log = logging.getLogger(__name__)

GLUONCV_BACKBONE = {"resnet-50": "resnet50", "resnet-101": "resnet101"}


def _gluoncv_class(algorithm: str):
    from gluoncv.model_zoo import FCN, DeepLabV3, PSPNet

    set_pillow_limits()  # importing GluonCV turned truncated images on
    return {"fcn": FCN, "psp": PSPNet, "deeplab": DeepLabV3}[algorithm]


def build_network(
    algorithm: str,
    backbone: str,
    num_classes: int,
    crop_size: int,
    base_size: int = 520,
    aux: bool = True,
    **norm,
) -> mx.gluon.HybridBlock:
    """An uninitialised network whose graph is shaped for ``crop_size`` x ``crop_size`` inputs.

    ``norm``: GluonCV's ``norm_layer`` and ``norm_kwargs``, to replace BatchNorm (``syncbn``).
    """
    if algorithm == "unet":
        return UNet(num_classes, backbone, crop_size, aux=aux, **norm)
    if algorithm == "deeplabv3plus":
        return DeepLabV3Plus(num_classes, backbone, crop_size, aux=aux, **norm)
    if algorithm == "fastscnn":
        return fastscnn.build(num_classes, crop_size, aux=aux, **norm)
    kwargs = dict(
        backbone=GLUONCV_BACKBONE[backbone], aux=aux, pretrained_base=False, crop_size=crop_size, base_size=base_size
    )
    kwargs.update(norm)
    with contextlib.redirect_stdout(io.StringIO()):  # PSPNet prints its crop size
        return _gluoncv_class(algorithm)(num_classes, **kwargs)


def build_from_hyperparameters(hp: dict, **kwargs) -> mx.gluon.HybridBlock:
    return build_network(
        hp["algorithm"], hp["backbone"], hp["num_classes"], hp["crop_size"], hp["base_size"], aux=True, **kwargs
    )
