"""The algorithms beyond the built-in's three (unet, deeplabv3plus, fastscnn), each through a short real
``train`` job, its ONNX export and int8 copy, and a real ``serve`` answering odd sizes exactly."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest
from harness.serving_helpers import Server, encoded, mask_of, sample_image
from harness.trainjob import MODEL_FILES, SYNCBN_ON_STAND_INS, TWO_DEVICES, WITH_EXPORT, make_tree, run_train

from semseg.errors import UserError
from semseg.hyperparameters import MIN_CROP_SIZE, parse
from semseg.inference.mxnet_engine import MXNetEngine
from semseg.inference.onnx_engine import OnnxEngine
from semseg.logs import METRIC_REGEXES
from semseg.model import artifacts, quantize
from semseg.model.encoder import stage_sizes
from semseg.model.export import ONNX_FILE
from semseg.model.factory import build_network
from semseg.model.size import inference_size
from semseg.train import int8_gate

NEW = [("unet", "resnet-18"), ("deeplabv3plus", "resnet-34"), ("fastscnn", "resnet-50")]
ODD_SIZES = [(31, 17), (641, 480)]


def tree(root, algorithm: str, backbone: str, **hyperparameters):
    """``make_tree`` for ``algorithm``, with the ONNX export: fastscnn at its smallest crop (``MIN_CROP_SIZE``),
    the others at TINY's."""
    if algorithm in MIN_CROP_SIZE:
        hyperparameters = {"crop_size": str(MIN_CROP_SIZE[algorithm]), "base_size": "80", **hyperparameters}
    return make_tree(root, algorithm=algorithm, backbone=backbone, **{**WITH_EXPORT, **hyperparameters})


def test_every_backbone_is_refused_or_built_as_the_table_says():
    with pytest.raises(UserError) as refused:
        parse({"num_classes": 3, "num_training_samples": 4, "algorithm": "psp", "backbone": "resnet-18"})
    assert str(refused.value) == (
        "The algorithm 'psp' is built on the backbones 'resnet-50', 'resnet-101', not 'resnet-18'"
    )
    hp = parse({"num_classes": 3, "num_training_samples": 4, "algorithm": "UNet", "backbone": "ResNet34"})
    assert (hp["algorithm"], hp["backbone"]) == ("unet", "resnet-34")


def test_fastscnn_below_its_smallest_crop_is_one_sentence():
    base = {"num_classes": 3, "num_training_samples": 4, "algorithm": "fastscnn"}
    with pytest.raises(UserError) as refused:
        parse({**base, "crop_size": 56})
    assert str(refused.value) == (
        "crop_size is 56 but the algorithm 'fastscnn' needs at least 64, "
        "so that its stride-32 features are more than one pixel wide"
    )
    assert parse({**base, "crop_size": 64})["crop_size"] == 64


@pytest.mark.parametrize("algorithm, backbone", NEW + [("unet", "resnet-50"), ("deeplabv3plus", "resnet-101")])
@pytest.mark.parametrize("side", [40, 104])  # multiples of 8, not of 32: the stride-32 side is rounded up
def test_every_new_network_answers_at_the_input_side_with_and_without_aux(algorithm, backbone, side):
    for aux in (True, False):
        net = build_network(algorithm, backbone, 5, side, aux=aux)
        net.initialize(mx.init.Xavier(), force_reinit=True)
        outputs = net(mx.nd.zeros((2, 3, side, side)))
        assert [o.shape for o in outputs] == [(2, 5, side, side)] * (2 if aux else 1)


def test_stage_sizes_round_up_as_strided_layers_do():
    assert stage_sizes(104) == (104, 52, 26, 13, 7, 4)
    assert stage_sizes(240) == (240, 120, 60, 30, 15, 8)


def test_incremental_training_across_algorithms_is_one_sentence():
    base = {"num_classes": 3, "num_training_samples": 4}
    with pytest.raises(UserError, match=r"^The model channel holds .* algorithm is 'fcn' here but 'unet' in the model"):
        artifacts.check_same_architecture(parse(base), parse({**base, "algorithm": "unet", "backbone": "resnet-18"}))
    fastscnn = parse({**base, "algorithm": "fastscnn"})
    artifacts.check_same_architecture(fastscnn, {**fastscnn, "backbone": "resnet-18"})  # it has its own backbone


@pytest.fixture(scope="module", params=NEW, ids=[f"{a}-{b}" for a, b in NEW])
def trained(request, tmp_path_factory):
    algorithm, backbone = request.param
    root = tree(tmp_path_factory.mktemp(algorithm), algorithm, backbone, epochs="2")
    job = run_train(root)
    assert job.returncode == 0, job.log[-3000:]
    return job


@pytest.mark.slow
def test_a_short_job_writes_the_model_and_its_onnx_export(trained):
    hyperparameters = json.loads((trained.model_dir / "hyperparams.json").read_text())
    assert MODEL_FILES | {ONNX_FILE} <= {p.name for p in trained.model_dir.iterdir()}
    assert len(trained.lines(METRIC_REGEXES["validation:mIOU"])) == 2
    if hyperparameters["algorithm"] == "fastscnn":
        assert "the backbone hyperparameter does not apply" in trained.log


@pytest.mark.slow
def test_the_export_computes_what_the_network_computes(trained):
    hp = artifacts.read_hyperparameters(trained.model_dir)
    size = inference_size(hp)
    batch = np.random.RandomState(0).randn(2, 3, size, size).astype(np.float32)
    onnx = OnnxEngine(trained.model_dir / ONNX_FILE, threads=2).probabilities(batch)
    mxnet = MXNetEngine(hp, trained.model_dir, size, mx.cpu()).probabilities(batch)
    assert onnx.shape == (2, hp["num_classes"], size, size)
    np.testing.assert_allclose(onnx, mxnet, atol=5e-3)  # ONNX Runtime folds norms into convolutions
    assert (onnx.argmax(axis=1) == mxnet.argmax(axis=1)).mean() > 0.999


@pytest.mark.slow
def test_float32_and_int8_serve_odd_sizes_exactly(trained, tmp_path):
    hp = artifacts.read_hyperparameters(trained.model_dir)
    data = trained.root / "input" / "data"
    calibration, table = int8_gate.file_mode_split(data, "train", hp)
    images = (image for image, _ in quantize.prepared(calibration, inference_size(hp), table))
    quantize.quantize_file(trained.model_dir / ONNX_FILE, trained.model_dir / quantize.INT8_FILE, images)
    for engine, settings in (("model.int8.onnx", {}), ("model.onnx", {"SEMSEG_FORCE_FP32": "1"})):
        server = Server(trained.root, tmp_path / f"{engine}.log", **settings)
        try:
            assert server.wait_until_up().status_code == 200, server.log()
            assert f"from {engine}" in server.log()
            for width, height in ODD_SIZES:
                answer = server.invoke(encoded(sample_image(width, height)))
                assert answer.status_code == 200, answer.text
                mask = mask_of(answer.content)
                assert mask.shape == (height, width) and mask.max() < hp["num_classes"]
        finally:
            server.stop()


@SYNCBN_ON_STAND_INS
@pytest.mark.parametrize("algorithm, backbone", NEW, ids=[a for a, _ in NEW])
def test_syncbn_on_two_devices_trains_each_new_algorithm(tmp_path, algorithm, backbone):
    job = run_train(tree(tmp_path, algorithm, backbone, syncbn="True"), env=TWO_DEVICES)
    assert job.returncode == 0, job.log[-3000:]
    assert "syncbn: BatchNorm statistics are synchronized across 2 devices" in job.log
    net = build_network(algorithm, backbone, 4, 32)  # the saved weights are plain BatchNorm's
    net.load_parameters(str(job.model_dir / "model_algo-1"))
    assert net(mx.nd.zeros((1, 3, 32, 32)))[0].shape == (1, 4, 32, 32)


# unet in CI (its last layer is a convolution, whose bfloat16 scores once reached the loss); the others
# by `make test-long`
BFLOAT16_CASES = [pytest.param(*NEW[0], marks=pytest.mark.slow)] + [
    pytest.param(*c, marks=pytest.mark.long) for c in NEW[1:]
]


@pytest.mark.parametrize("algorithm, backbone", BFLOAT16_CASES, ids=[a for a, _ in NEW])
def test_bfloat16_trains_each_new_algorithm(tmp_path, algorithm, backbone):
    job = run_train(tree(tmp_path, algorithm, backbone, precision_dtype="bfloat16"))
    assert job.returncode == 0, job.log[-3000:]
    assert "Training precision: bfloat16" in job.log
    assert len(job.lines(METRIC_REGEXES["validation:mIOU"])) == 1
