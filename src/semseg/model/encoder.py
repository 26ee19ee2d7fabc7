"""The ResNet encoder of the architectures GluonCV has no class for (``unet``, ``deeplabv3plus``).

The stages are GluonCV's own ResNetV1b blocks (v1s with the deep stem for resnet-50/101, as its
segmentation models use; plain v1b for resnet-18/34, the only 18/34 it publishes), kept under the
names the ImageNet file uses (``conv1``, ``bn1``, ``layer1`` ... ``layer4``) on the segmentation
network itself, so ``pretrained.load_backbone`` loads them by name as it does for FCN.

``stage_sizes`` is the one rule for the side of each stage's output: every stride-2 layer (3x3
with padding 1, 1x1 without, max pooling 3/2/1) maps a side n to ceil(n / 2).
"""

from __future__ import annotations

ENCODER_MODEL = {
    "resnet-18": "resnet18_v1b",
    "resnet-34": "resnet34_v1b",
    "resnet-50": "resnet50_v1s",
    "resnet-101": "resnet101_v1s",
}
STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def stage_channels(backbone: str) -> tuple[int, int, int, int, int]:
    """Channels of the stride 2, 4, 8, 16 and 32 features."""
    if backbone in ("resnet-18", "resnet-34"):
        return 64, 64, 128, 256, 512
    return 128, 256, 512, 1024, 2048  # the deep stem's 128, then Bottleneck stages (x4 expansion)


def stage_sizes(side: int) -> tuple[int, ...]:
    """Sides of the stride 1, 2, 4, 8, 16 and 32 features of a ``side`` x ``side`` input."""
    sizes = [side]
    for _ in range(5):
        sizes.append(-(-sizes[-1] // 2))
    return tuple(sizes)


def resnet(backbone: str, **norm):
    """GluonCV's ImageNet ResNet (uninitialised, not dilated) whose stages the encoder adopts."""
    from gluoncv.model_zoo import resnetv1b

    from ..data.images import set_pillow_limits

    set_pillow_limits()  # importing GluonCV turned truncated images on
    return getattr(resnetv1b, ENCODER_MODEL[backbone])(pretrained=False, dilated=False, **norm)


def adopt_stages(block, backbone_net) -> None:
    """Make ``backbone_net``'s stages children of ``block`` under their ImageNet names."""
    for name in STAGES:
        setattr(block, name, getattr(backbone_net, name))


def dilate_last_stage(layer4, dilation: int = 2) -> None:
    """Turn the stride of ``layer4`` into dilation: output stride 16 instead of 32.

    GluonCV's ResNetV1b offers stride 8 (``dilated=True``) or 32; DeepLabV3+ uses 16. As in
    GluonCV's own dilated stages, the first block keeps dilation 1 (only its stride goes) and the
    later ones dilate their 3x3 convolutions. The weights are unchanged, so ImageNet files still fit.
    """
    for index, unit in enumerate(layer4):
        for conv in (getattr(unit, "conv1", None), getattr(unit, "conv2", None)):
            if conv is None or conv._kwargs["kernel"] != (3, 3):
                continue
            conv._kwargs["stride"] = (1, 1)
            if index > 0:
                conv._kwargs["dilate"] = (dilation, dilation)
                conv._kwargs["pad"] = (dilation, dilation)
        if unit.downsample is not None:
            unit.downsample[0]._kwargs["stride"] = (1, 1)
