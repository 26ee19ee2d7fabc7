"""ONNX Runtime under the predictor: chosen at load time when the export fits, MXNet otherwise; the
same answers as MXNet on a trained model; exact output sizes at odd input sizes."""

from __future__ import annotations

import io
import logging
import shutil

import mxnet as mx
import numpy as np
import pytest
from harness.trainjob import make_tree, run_train
from PIL import Image

from semseg import sample_data
from semseg.data.images import read_rgb
from semseg.data.transforms import normalize
from semseg.errors import UserError
from semseg.inference.engine import load_engine
from semseg.inference.mxnet_engine import MXNetEngine
from semseg.inference.onnx_engine import OnnxEngine, intra_op_threads
from semseg.inference.predictor import Predictor
from semseg.inference.settings import ServingSettings, from_environment
from semseg.model import artifacts, export
from semseg.model.size import inference_size

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained by the real ``train`` command, with its ONNX export."""
    root = make_tree(tmp_path_factory.mktemp("job"), train=8, validation=6, epochs="2")
    job = run_train(root)
    assert job.returncode == 0, job.log[-3000:]
    hp = artifacts.read_hyperparameters(job.model_dir)
    if not (job.model_dir / export.ONNX_FILE).exists():  # training writes it once the loop calls export_onnx
        assert export.export_onnx(hp, job.model_dir) is not None
    return job.root, job.model_dir, hp


@pytest.fixture(scope="module")
def engines(trained):
    _, model_dir, hp = trained
    size = inference_size(hp)
    return OnnxEngine(model_dir / export.ONNX_FILE, threads=1), MXNetEngine(hp, model_dir, size, ctx=mx.cpu())


def test_onnx_runtime_is_chosen_when_the_export_fits(trained, caplog):
    _, model_dir, hp = trained
    with caplog.at_level(logging.INFO, logger="semseg"):
        engine = load_engine(model_dir, hp, inference_size(hp))
    assert isinstance(engine, OnnxEngine) and engine.name.startswith("onnxruntime (cpu")
    assert engine.num_classes == hp["num_classes"]
    assert "Engine: onnxruntime (cpu" in caplog.text


@pytest.mark.parametrize(
    "case, reason",
    [
        ("no export", "the model has no model.onnx"),
        ("damaged export", "its model.onnx could not be loaded"),
        ("other size", "the inference size is 72 but model.onnx takes"),
    ],
)
def test_mxnet_serves_when_the_export_is_missing_damaged_or_of_another_size(trained, tmp_path, caplog, case, reason):
    _, model_dir, hp = trained
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    size = inference_size(hp)
    if case == "no export":
        (copy / export.ONNX_FILE).unlink()
    elif case == "damaged export":
        (copy / export.ONNX_FILE).write_bytes(b"\x08\x07not a model")
    else:
        size = 72
    with caplog.at_level(logging.INFO, logger="semseg"):
        engine = load_engine(copy, hp, size)
    assert isinstance(engine, MXNetEngine) and engine.input_size == size
    assert f"Engine: MXNet, because {reason}" in caplog.text


def test_onnx_runtime_agrees_with_mxnet_on_the_validation_set(trained, engines):
    root, _, hp = trained
    onnx_engine, mxnet_engine = engines
    size = onnx_engine.input_size
    images = sorted((root / "input" / "data" / "validation").glob("*.jpg"))
    batch = np.stack(
        [normalize(np.asarray(Image.fromarray(read_rgb(p)).resize((size, size), Image.BILINEAR))) for p in images]
    )
    ours, reference = onnx_engine.probabilities(batch), mxnet_engine.probabilities(batch)
    assert ours.shape == reference.shape == (len(images), hp["num_classes"], size, size)
    # Folded batch norms and other kernels round differently in float32; a trained network's large
    # logits turn that into probability differences of up to a few 1e-3 at the most uncertain pixels
    # (measured 8e-4 and 2.9e-3 on two trained models); on average they stay below 1e-5.
    difference = np.abs(ours - reference)
    assert difference.max() < 1e-2 and difference.mean() < 1e-5
    assert (ours.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.999


@pytest.mark.parametrize("width, height", [(1, 1), (211, 37), (97, 333), (48, 48), (640, 481)])
def test_predictor_answers_at_the_exact_input_size_through_onnx_runtime(trained, engines, width, height):
    onnx_engine, mxnet_engine = engines
    image, _ = sample_data.make_pair(np.random.RandomState(width), width, height)
    body = io.BytesIO()
    image.save(body, format="PNG")
    ours = Predictor(onnx_engine, max_image_pixels=10**8).predict(body.getvalue())
    reference = Predictor(mxnet_engine, max_image_pixels=10**8).predict(body.getvalue())
    ids = ours.class_ids()
    assert ids.shape == (height, width)
    assert (ids == reference.class_ids()).mean() >= 0.999


def test_threads_come_from_the_setting_or_the_workers_share_of_the_cores():
    assert (
        intra_op_threads(from_environment({"SEMSEG_INFERENCE_THREADS": "3", "SAGEMAKER_MODEL_SERVER_WORKERS": "8"}))
        == 3
    )
    cores = intra_op_threads(from_environment({}))
    assert cores >= 1
    assert intra_op_threads(from_environment({"SAGEMAKER_MODEL_SERVER_WORKERS": str(cores * 4)})) == 1
    with pytest.raises(UserError, match="SEMSEG_INFERENCE_THREADS is 'many'; it must be a whole number"):
        from_environment({"SEMSEG_INFERENCE_THREADS": "many"})


def test_the_predictor_loads_the_onnx_engine_from_the_model_dir(trained):
    _, model_dir, _ = trained
    predictor = Predictor.from_model_dir(model_dir, ServingSettings())
    assert isinstance(predictor.engine, OnnxEngine)
