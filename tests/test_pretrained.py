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
