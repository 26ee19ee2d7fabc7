"""Small building blocks shared by the architectures written here (``unet``, ``deeplabv3plus``)."""

from __future__ import annotations

from mxnet.gluon import nn


def conv_bn_relu(in_channels: int, channels: int, kernel: int = 3, norm_layer=nn.BatchNorm, norm_kwargs=None):
    """Convolution (no bias: the norm has one), normalisation, ReLU."""
    block = nn.HybridSequential()
    with block.name_scope():
        block.add(nn.Conv2D(channels, kernel_size=kernel, padding=kernel // 2, in_channels=in_channels, use_bias=False))
        block.add(norm_layer(in_channels=channels, **(norm_kwargs or {})))
        block.add(nn.Activation("relu"))
    return block


def aux_head(in_channels: int, num_classes: int, norm_layer=nn.BatchNorm, norm_kwargs=None):
    """The built-in's auxiliary head (GluonCV's FCN head) on the stride-16 features, for ``_aux_loss``."""
    from gluoncv.model_zoo.fcn import _FCNHead

    return _FCNHead(in_channels, num_classes, norm_layer=norm_layer, norm_kwargs=norm_kwargs)
