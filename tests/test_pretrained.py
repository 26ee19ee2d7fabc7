"""Staged ImageNet weights load into the segmentation backbone by name, offline."""

import mxnet as mx
import numpy as np
import pytest

from semseg.errors import UserError
from semseg.model import pretrained
from semseg.model.factory import build_network


def test_staged_backbone_weights_are_loaded(tmp_path, monkeypatch):
    from gluoncv.model_zoo import resnet50_v1s

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    backbone = resnet50_v1s(pretrained=False)
    backbone.initialize(mx.init.Uniform(0.5))
    backbone(mx.nd.zeros((1, 3, 32, 32)))
    (tmp_path / "models").mkdir()
    backbone.save_parameters(str(pretrained.staged_file("resnet-50")))

    net = build_network("fcn", "resnet-50", 3, crop_size=32)
    net.initialize()
    pretrained.load_backbone(net, "resnet-50", mx.cpu())
    assert np.array_equal(net.conv1[0].weight.data().asnumpy(), backbone.conv1[0].weight.data().asnumpy())
    assert np.array_equal(net.layer4[2].conv3.weight.data().asnumpy(), backbone.layer4[2].conv3.weight.data().asnumpy())


def test_missing_weights_say_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    net = build_network("fcn", "resnet-101", 3, crop_size=32)
    with pytest.raises(UserError, match=r"resnet101_v1s-bd93a83c\.params.*use_pretrained_model to False"):
        pretrained.load_backbone(net, "resnet-101", mx.cpu())


@pytest.mark.parametrize("algorithm, backbone", [("unet", "resnet-18"), ("deeplabv3plus", "resnet-34")])
def test_staged_weights_load_into_the_encoders_written_here(tmp_path, monkeypatch, algorithm, backbone):
    from gluoncv.model_zoo import resnetv1b

    from semseg.model.encoder import ENCODER_MODEL

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    imagenet = getattr(resnetv1b, ENCODER_MODEL[backbone])(pretrained=False)
    imagenet.initialize(mx.init.Uniform(0.5))
    imagenet(mx.nd.zeros((1, 3, 32, 32)))
    (tmp_path / "models").mkdir()
    imagenet.save_parameters(str(pretrained.staged_file(backbone)))

    net = build_network(algorithm, backbone, 3, crop_size=32)
    net.initialize()
    pretrained.load_backbone(net, backbone, mx.cpu())
    assert np.array_equal(net.conv1.weight.data().asnumpy(), imagenet.conv1.weight.data().asnumpy())
    last = len(imagenet.layer4) - 1
    assert np.array_equal(
        net.layer4[last].conv2.weight.data().asnumpy(), imagenet.layer4[last].conv2.weight.data().asnumpy()
    )
