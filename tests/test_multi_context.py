"""Several devices on one host, with CPU contexts standing in for GPUs (``SEMSEG_CPU_CONTEXTS``)."""

from __future__ import annotations

import mxnet as mx
import pytest
from harness.trainjob import SYNCBN_ON_STAND_INS, TWO_DEVICES, make_tree, run_train


def assert_loads_into_plain_gluoncv(job) -> None:
    """The weights a several-device job saved load into GluonCV's own FCN and answer at its size."""
    from gluoncv.model_zoo import FCN

    net = FCN(4, backbone="resnet50", aux=True, pretrained_base=False, crop_size=32)
    net.load_parameters(str(job.model_dir / "model_algo-1"))
    assert net(mx.nd.zeros((1, 3, 32, 32)))[0].shape == (1, 4, 32, 32)


@pytest.mark.slow
def test_two_devices_split_the_batch_and_save_plain_gluoncv_weights(tmp_path):
    job = run_train(make_tree(tmp_path), env=TWO_DEVICES)
    assert job.returncode == 0, job.log[-3000:]
    assert "2 CPU contexts stand in for GPUs" in job.log
    assert_loads_into_plain_gluoncv(job)


@SYNCBN_ON_STAND_INS
def test_syncbn_trains_across_two_devices_and_saves_plain_gluoncv_weights(tmp_path):
    job = run_train(make_tree(tmp_path, syncbn="True"), env=TWO_DEVICES)
    assert job.returncode == 0, job.log[-3000:]
    assert "2 CPU contexts stand in for GPUs" in job.log
    assert "syncbn: BatchNorm statistics are synchronized across 2 devices" in job.log
    assert_loads_into_plain_gluoncv(job)


@pytest.mark.slow
def test_a_batch_smaller_than_the_number_of_devices_is_a_user_error(tmp_path):
    job = run_train(make_tree(tmp_path, mini_batch_size="1", num_training_samples="2"), env=TWO_DEVICES)
    assert job.returncode == 1
    assert job.failure == "mini_batch_size is 1 but 2 GPUs are in use; it must be at least the number of GPUs"
