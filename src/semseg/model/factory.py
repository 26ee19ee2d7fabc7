"""One factory that builds the network a configuration names, with the built-in's aux head.

The parameter names are those of a plain ``gluoncv.model_zoo.FCN/PSPNet/DeepLabV3(nclass,
backbone=..., aux=True)``, so the files we write load into GluonCV directly, as users of the
built-in algorithm load ``model_algo-1``.
"""

from __future__ import annotations

import contextlib
import io
import logging

import mxnet as mx

from ..data.images import set_pillow_limits

log = logging.getLogger(__name__)

GLUONCV_BACKBONE = {"resnet-50": "resnet50", "resnet-101": "resnet101"}
PRETRAINED_BACKBONE_MODEL = {"resnet-50": "resnet50_v1s", "resnet-101": "resnet101_v1s"}


def _network_class(algorithm: str):
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
    kwargs = dict(
        backbone=GLUONCV_BACKBONE[backbone], aux=aux, pretrained_base=False, crop_size=crop_size, base_size=base_size
    )
    kwargs.update(norm)
    with contextlib.redirect_stdout(io.StringIO()):  # PSPNet prints its crop size
        return _network_class(algorithm)(num_classes, **kwargs)


def build_from_hyperparameters(hp: dict, **kwargs) -> mx.gluon.HybridBlock:
    return build_network(
        hp["algorithm"], hp["backbone"], hp["num_classes"], hp["crop_size"], hp["base_size"], aux=True, **kwargs
    )
