"""``algorithm=unet``: a ResNet encoder and a U-Net decoder that predicts at the input's resolution.

The design is segmentation_models_pytorch's ``Unet``: five decoder blocks (256, 128, 64, 32 and 16
channels) each upsample by 2, concatenate the encoder's features of that stride (32 -> 16 -> 8 ->
4 -> 2; the last block has none), and apply two 3x3 convolution + norm + ReLU; a 3x3 convolution
gives the class scores. Fusing the stride-2 and stride-4 features is what keeps the thin and
small structures that the built-in's stride-8 heads blur away.

Upsampling is bilinear to the exact side of the skip it meets (``encoder.stage_sizes``), so any
input side works, as it must for inference sizes that are multiples of 8 but not of 32.
"""

from __future__ import annotations

from mxnet.gluon import nn

from . import encoder
from .layers import aux_head, conv_bn_relu

DECODER_CHANNELS = (256, 128, 64, 32, 16)


class DecoderBlock(nn.HybridBlock):
    """Upsample to ``side``, concatenate the skip (if any), two conv + norm + ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, channels: int, side: int, **norm):
        super().__init__()
        self._side = side
        with self.name_scope():
            self.conv1 = conv_bn_relu(in_channels + skip_channels, channels, **norm)
            self.conv2 = conv_bn_relu(channels, channels, **norm)

    def hybrid_forward(self, F, x, *skip):
        x = F.contrib.BilinearResize2D(x, height=self._side, width=self._side)
        if skip:
            x = F.concat(x, skip[0], dim=1)
        return self.conv2(self.conv1(x))


class UNet(nn.HybridBlock):
    """Returns (scores,) or, with ``aux``, (scores, aux scores), both at the input's side."""

    def __init__(self, num_classes: int, backbone: str, crop_size: int, aux: bool = True, **norm):
        super().__init__()
        self.aux = aux
        self._side = crop_size
        sizes = encoder.stage_sizes(crop_size)  # strides 1, 2, 4, 8, 16, 32
        skips = encoder.stage_channels(backbone)  # strides 2 .. 32
        with self.name_scope():
            encoder.adopt_stages(self, encoder.resnet(backbone, **norm))
            self.decoder = nn.HybridSequential()
            in_channels = skips[4]
            skip_channels = (skips[3], skips[2], skips[1], skips[0], 0)
            for index, (skip, channels) in enumerate(zip(skip_channels, DECODER_CHANNELS)):
                self.decoder.add(DecoderBlock(in_channels, skip, channels, sizes[4 - index], **norm))
                in_channels = channels
            self.head = nn.Conv2D(num_classes, kernel_size=3, padding=1, in_channels=in_channels)
            if aux:
                self.auxlayer = aux_head(skips[3], num_classes, **norm)

    def hybrid_forward(self, F, x):
        stride2 = self.relu(self.bn1(self.conv1(x)))
        stride4 = self.layer1(self.maxpool(stride2))
        stride8 = self.layer2(stride4)
        stride16 = self.layer3(stride8)
        y = self.layer4(stride16)
        for index, skip in enumerate((stride16, stride8, stride4, stride2)):
            y = self.decoder[index](y, skip)
        y = self.decoder[len(DECODER_CHANNELS) - 1](y)
        outputs = [self.head(y)]
        if self.aux:
            aux = self.auxlayer(stride16)
            outputs.append(F.contrib.BilinearResize2D(aux, height=self._side, width=self._side))
        return tuple(outputs)
