"""``algorithm=fastscnn``: GluonCV's Fast-SCNN, with its pyramid pooling sized for any input side.

Fast-SCNN has its own small backbone, made to train from scratch, so ``backbone`` and
``use_pretrained_model`` do not apply to it. GluonCV sizes the upsampling in its pyramid pooling
as side // 32, which differs from the stride-32 features' real side (ceil(side / 32)) unless the
side is a multiple of 32; the class here gives it the real side, so every multiple of 8 works.
"""

from __future__ import annotations

from .encoder import stage_sizes


def build(num_classes: int, crop_size: int, aux: bool = True, **norm):
    from gluoncv.model_zoo.fastscnn import FastSCNN

    net = FastSCNN(num_classes, aux=aux, pretrained_base=False, crop_size=crop_size, base_size=crop_size, **norm)
    side = stage_sizes(crop_size)[5]
    net.global_feature_extractor.ppm._up_kwargs = {"height": side, "width": side}
    return net


def pyramid_pooling(net):
    """The block whose adaptive pooling the ONNX export replaces (as PSPNet's ``head.psp``)."""
    return net.global_feature_extractor.ppm
