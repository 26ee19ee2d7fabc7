"""``algorithm=deeplabv3plus``: DeepLabV3's ASPP and the DeepLabV3+ decoder, on a ResNet encoder.

The paper's design (Chen et al. 2018) on ResNet: the encoder runs at output stride 16 (its last
stage dilated by 2), GluonCV's ASPP (rates 6, 12, 18 at that stride, image pooling, 256 channels)
summarises it, and the decoder upsamples that by 4 to meet the stride-4 features, reduced to 48
channels by a 1x1 convolution, concatenates both, refines them with two 3x3 convolutions of 256
and scores the classes, upsampled bilinearly to the input's side.

GluonCV's own DeepLabV3+ exists only with Xception and WideResNet backbones, hence this block.
"""

from __future__ import annotations

from mxnet.gluon import nn

from . import encoder
from .layers import aux_head, conv_bn_relu

ASPP_RATES = (6, 12, 18)
LOW_LEVEL_CHANNELS = 48
DECODER_CHANNELS = 256


class DeepLabV3Plus(nn.HybridBlock):
    """Returns (scores,) or, with ``aux``, (scores, aux scores), both at the input's side."""

    def __init__(self, num_classes: int, backbone: str, crop_size: int, aux: bool = True, **norm):
        from gluoncv.model_zoo.deeplabv3 import _ASPP

        super().__init__()
        self.aux = aux
        self._side = crop_size
        sizes = encoder.stage_sizes(crop_size)
        self._stride4_side = sizes[2]
        channels = encoder.stage_channels(backbone)
        norm_layer = norm.get("norm_layer", nn.BatchNorm)
        norm_kwargs = norm.get("norm_kwargs")
        with self.name_scope():
            encoder.adopt_stages(self, encoder.resnet(backbone, **norm))
            encoder.dilate_last_stage(self.layer4)
            self.aspp = _ASPP(channels[4], ASPP_RATES, norm_layer, norm_kwargs, height=sizes[4], width=sizes[4])
            self.reduce = conv_bn_relu(channels[1], LOW_LEVEL_CHANNELS, kernel=1, **norm)
            self.refine = nn.HybridSequential()
            self.refine.add(conv_bn_relu(DECODER_CHANNELS + LOW_LEVEL_CHANNELS, DECODER_CHANNELS, **norm))
            self.refine.add(conv_bn_relu(DECODER_CHANNELS, DECODER_CHANNELS, **norm))
            self.head = nn.Conv2D(num_classes, kernel_size=1, in_channels=DECODER_CHANNELS)
            if aux:
                self.auxlayer = aux_head(channels[3], num_classes, **norm)

    def hybrid_forward(self, F, x):
        stride4 = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        stride16 = self.layer3(self.layer2(stride4))
        context = self.aspp(self.layer4(stride16))
        side4 = self._stride4_side
        context = F.contrib.BilinearResize2D(context, height=side4, width=side4)
        y = self.refine(F.concat(context, self.reduce(stride4), dim=1))
        outputs = [F.contrib.BilinearResize2D(self.head(y), height=self._side, width=self._side)]
        if self.aux:
            aux = self.auxlayer(stride16)
            outputs.append(F.contrib.BilinearResize2D(aux, height=self._side, width=self._side))
        return tuple(outputs)
