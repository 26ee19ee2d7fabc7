"""The ONNX export written at the end of training: its form, its agreement with MXNet, its failures,
and its use outside this package with nothing but onnxruntime, numpy and Pillow."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import onnx
import pytest

from semseg import sample_data
from semseg.data.transforms import normalize
from semseg.hyperparameters import parse
from semseg.inference.onnx_engine import OnnxEngine
from semseg.model import artifacts, export
from semseg.model.factory import build_network
from semseg.paths import BEST_PARAMS

SIZE = 64  # small, and its 8x8 feature map makes PSPNet's 3- and 6-bin pooling windows overlap


def random_model_dir(root: Path, algorithm: str) -> tuple[dict, Path]:
    """A model directory as training writes it, with random weights (aux head included)."""
    hp = parse(
        {
            "algorithm": algorithm,
            "num_classes": "4",
            "crop_size": str(SIZE),
            "base_size": str(SIZE),
            "num_training_samples": "8",
            "use_pretrained_model": "False",
        }
    )
    net = build_network(algorithm, hp["backbone"], hp["num_classes"], hp["crop_size"], hp["base_size"])
    mx.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.initialize(mx.init.Xavier(magnitude=2))
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    model_dir = root / "model"
    artifacts.save_hyperparameters(hp, model_dir)
    artifacts.save_parameters(net, model_dir / BEST_PARAMS)
    return hp, model_dir


def mxnet_probabilities(hp: dict, model_dir: Path, batch: np.ndarray) -> np.ndarray:
    """The reference: the trained network as GluonCV runs it (adaptive pooling and all)."""
    net = build_network(hp["algorithm"], hp["backbone"], hp["num_classes"], SIZE, hp["base_size"], aux=False)
    net.load_parameters(str(model_dir / BEST_PARAMS), ignore_extra=True)
    return mx.nd.softmax(net(mx.nd.array(batch))[0], axis=1).asnumpy()


def synthetic_batch(count: int = 4) -> np.ndarray:
    rng = np.random.RandomState(7)
    images = [sample_data.make_pair(rng, SIZE, SIZE)[0] for _ in range(count)]
    return np.stack([normalize(np.asarray(image)) for image in images])


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """algorithm -> (hyperparameters, model dir with model.onnx), exported once per algorithm."""
    made = {}

    def get(algorithm: str):
        if algorithm not in made:
            hp, model_dir = random_model_dir(tmp_path_factory.mktemp(algorithm), algorithm)
            assert export.export_onnx(hp, model_dir) == model_dir / export.ONNX_FILE
            made[algorithm] = hp, model_dir
        return made[algorithm]

    return get


@pytest.mark.parametrize("height, width", [(8, 8), (7, 5), (60, 60)])
def test_fixed_pooling_equals_adaptive_pooling(height, width):
    x = mx.nd.array(np.random.RandomState(0).randn(1, 2, height, width))

    class Pyramid:
        _up_kwargs = {"height": height, "width": width}

    for bins in (1, 2, 3, 6):
        ours = export._fixed_pool(Pyramid(), mx.nd, x, bins)
        reference = mx.nd.contrib.AdaptiveAvgPooling2D(x, output_size=bins)
        np.testing.assert_allclose(ours.asnumpy(), reference.asnumpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["fcn", "psp", "deeplab"])
def test_export_matches_mxnet(exports, algorithm):
    hp, model_dir = exports(algorithm)
    batch = synthetic_batch()
    expected = mxnet_probabilities(hp, model_dir, batch)
    got = OnnxEngine(model_dir / export.ONNX_FILE, threads=1).probabilities(batch)
    assert got.shape == expected.shape == (4, 4, SIZE, SIZE)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.999
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_weights_are_initializers_not_inputs_and_the_file_describes_itself(exports):
    _, model_dir = exports("fcn")
    model = onnx.load(str(model_dir / export.ONNX_FILE))
    onnx.checker.check_model(model)
    assert [value.name for value in model.graph.input] == ["image"]
    assert [value.name for value in model.graph.output] == ["probabilities"]
    assert len(model.graph.initializer) > 100
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 13)]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["input_size"] == str(SIZE) and metadata["num_classes"] == "4"
    assert metadata["mean"] == "0.485,0.456,0.406" and metadata["std"] == "0.229,0.224,0.225"
    ops = {node.op_type for node in model.graph.node}
    assert {"Exp", "ReduceSum", "BatchNormalization"} <= ops and "Softmax" not in ops  # see _channel_softmax


def test_the_export_leaves_the_aux_head_out(exports):
    _, model_dir = exports("fcn")
    names = {init.name for init in onnx.load(str(model_dir / export.ONNX_FILE)).graph.initializer}
    assert not [name for name in names if "aux" in name]
    assert sorted(p.name for p in model_dir.iterdir()) == ["hyperparams.json", "model.onnx", "model_best.params"]


def test_a_failed_export_is_a_warning_and_leaves_no_file(tmp_path, caplog):
    hp, model_dir = random_model_dir(tmp_path, "fcn")
    (model_dir / export.ONNX_FILE).write_bytes(b"an export of other weights")
    mismatched = {**hp, "num_classes": 7}  # the weights hold 4 classes
    with caplog.at_level(logging.WARNING):
        assert export.export_onnx(mismatched, model_dir) is None
    assert not (model_dir / export.ONNX_FILE).exists()
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "serves through MXNet" in warning[0].getMessage()


OUTSIDE = r"""
import sys
import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
size = int(meta["input_size"])
mean, std = (np.array(meta[k].split(","), dtype=np.float32) for k in ("mean", "std"))

image = Image.open(sys.argv[2]).convert("RGB")
scale = size / max(image.size)
w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
x = np.zeros((size, size, 3), dtype=np.float32)  # the longer side fits, the rest is black
x[:h, :w] = np.asarray(image.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
x = ((x - mean) / std).transpose(2, 0, 1)[None]

probabilities = session.run(["probabilities"], {"image": x})[0][0, :, :h, :w]
mask = Image.fromarray(probabilities.argmax(axis=0).astype(np.uint8)).resize(image.size, Image.NEAREST)
print(mask.size[0], mask.size[1], probabilities.shape[0], float(probabilities.sum(axis=0).mean()))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("semseg", "mxnet", "gluoncv")))
"""


def test_model_onnx_loads_outside_this_package_with_onnxruntime_numpy_and_pillow(exports, tmp_path):
    _, model_dir = exports("deeplab")
    image_path = tmp_path / "photo.jpg"
    sample_data.make_pair(np.random.RandomState(3), 150, 97)[0].save(image_path)
    result = subprocess.run(
        [sys.executable, "-I", "-c", OUTSIDE, str(model_dir / export.ONNX_FILE), str(image_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sizes, modules = result.stdout.strip().splitlines()
    width, height, classes, total = sizes.split()
    assert (int(width), int(height), int(classes)) == (150, 97, 4)
    assert abs(float(total) - 1.0) < 1e-4
    assert modules == "[]"
