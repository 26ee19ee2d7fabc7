"""mIoU of serving through the fixed-shape ONNX export (resize-and-pad) against full-resolution MXNet.

Method: the real ``train`` command learns the synthetic task (``semseg.sample_data``, the demo's
settings: FCN-ResNet50 from scratch, crop 64, base 96), and training's ONNX export is taken as is. A held-out
set drawn with another seed, at sizes from 50x75 to 500x375 and aspect ratios up to 3:1, is then
segmented three ways and scored with the training metric (mIoU over the whole set):

- served, ONNX Runtime: the predictor fits the longer side to the export size S (= base_size),
  pads, runs ``model.onnx``, crops the valid region and resizes the probabilities back;
- served, MXNet: the same predictor over the MXNet engine (the engines must agree);
- native, MXNet: no resize at all; the network is built for each image's own size (padded to a
  multiple of 8), which is what a variable-shape runtime would do.

    .venv/bin/python bench/onnx_size_mapping.py [--epochs 8] [--per-size 4] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mxnet as mx
import numpy as np
from PIL import Image

from semseg import sample_data
from semseg.data.transforms import normalize
from semseg.demo import DEMO_HYPERPARAMETERS
from semseg.inference.mxnet_engine import MXNetEngine
from semseg.inference.onnx_engine import OnnxEngine, intra_op_threads
from semseg.inference.predictor import Predictor
from semseg.inference.settings import ServingSettings
from semseg.model import artifacts, export
from semseg.model.factory import build_network
from semseg.model.size import inference_size
from semseg.train.metrics import ConfusionMatrix

HELD_OUT_SIZES = ((96, 96), (160, 112), (240, 180), (320, 240), (500, 375), (75, 50), (64, 192), (300, 100))


def train(root: Path, epochs: int) -> Path:
    settings = {**DEMO_HYPERPARAMETERS, "epochs": str(epochs), "_workers": "0"}
    sample_data.write_opt_ml_tree(root, train=32, validation=12, hyperparameters=settings)
    command = [str(Path(sys.executable).parent / "train")]
    result = subprocess.run(
        command,
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if result.returncode != 0:
        sys.exit(f"training failed:\n{result.stdout[-3000:]}")
    return root / "model"


class NativeSize:
    """The trained network at each image's own size: one network per padded shape, weights by name."""

    def __init__(self, hp: dict, model_dir: Path):
        self.hp, self.params, self.nets = hp, str(artifacts.weights_file(model_dir)), {}

    def class_ids(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        side = -(-max(height, width) // 8) * 8
        if side not in self.nets:
            net = build_network(
                self.hp["algorithm"], self.hp["backbone"], self.hp["num_classes"], side, self.hp["base_size"], aux=False
            )
            net.load_parameters(self.params, ignore_extra=True)
            net.hybridize(static_alloc=True, static_shape=True)
            self.nets[side] = net
        x = normalize(np.zeros((side, side, 3), dtype=np.uint8))[None]  # black, as the predictor pads
        x[0, :, :height, :width] = normalize(rgb)
        logits = self.nets[side](mx.nd.array(x))[0].asnumpy()[0]
        return logits[:, :height, :width].argmax(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=int(DEMO_HYPERPARAMETERS["epochs"]))
    parser.add_argument("--per-size", type=int, default=4)
    parser.add_argument("--workdir", help="keep the training tree here, and reuse the model trained there before")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        started = time.time()
        root = Path(args.workdir or scratch)
        trained = (root / "model" / "hyperparams.json").exists()
        model_dir = root / "model" if trained else train(root, args.epochs)
        hp = artifacts.read_hyperparameters(model_dir)
        if not (model_dir / export.ONNX_FILE).exists():  # model dirs from before the loop exported
            export.export_onnx(hp, model_dir)
        size = inference_size(hp)
        how = (
            "reused the model trained before"
            if trained
            else f"trained for {args.epochs} epochs in {time.time() - started:.0f} s"
        )
        print(
            f"# machine: {platform.processor() or platform.machine()}; {hp['algorithm']}/{hp['backbone']} "
            f"crop {hp['crop_size']} base {hp['base_size']}, {how}; export size {size}"
        )
        served_onnx = Predictor(OnnxEngine(model_dir / export.ONNX_FILE, intra_op_threads(ServingSettings())), 10**8)
        served_mxnet = Predictor(MXNetEngine(hp, model_dir, size, mx.cpu()), 10**8)
        native = NativeSize(hp, model_dir)
        matrices = {name: ConfusionMatrix(hp["num_classes"]) for name in ("onnx", "mxnet", "native")}
        by_size = {}  # (width, height) -> {method: ConfusionMatrix}
        agree, pixels = 0, 0
        rng = np.random.RandomState(1234)
        for width, height in HELD_OUT_SIZES:
            per_size = by_size.setdefault((width, height), {n: ConfusionMatrix(hp["num_classes"]) for n in matrices})
            for _ in range(args.per_size):
                image, mask = sample_data.make_pair(rng, width, height)
                body = io.BytesIO()
                image.save(body, format="JPEG", quality=95)
                labels = np.asarray(mask)
                onnx_ids = served_onnx.predict(body.getvalue()).class_ids()
                matrices["onnx"].update(labels, onnx_ids)
                per_size["onnx"].update(labels, onnx_ids)
                mxnet_ids = served_mxnet.predict(body.getvalue()).class_ids()
                matrices["mxnet"].update(labels, mxnet_ids)
                per_size["mxnet"].update(labels, mxnet_ids)
                decoded = np.asarray(Image.open(io.BytesIO(body.getvalue())).convert("RGB"))
                native_ids = native.class_ids(decoded)
                matrices["native"].update(labels, native_ids)
                per_size["native"].update(labels, native_ids)
                agree += int((onnx_ids == mxnet_ids).sum())
                pixels += onnx_ids.size
        count = len(HELD_OUT_SIZES) * args.per_size
        print(f"# held-out set: {count} images, sizes {', '.join(f'{w}x{h}' for w, h in HELD_OUT_SIZES)}")
        print("| method | mIoU | pixel accuracy |")
        print("|---|---|---|")
        labels = {
            "onnx": f"served: resize-and-pad to {size}, ONNX Runtime",
            "mxnet": f"served: resize-and-pad to {size}, MXNet",
            "native": "native size, MXNet",
        }
        for name, matrix in matrices.items():
            print(f"| {labels[name]} | {matrix.mean_iou():.4f} | {matrix.pixel_accuracy():.4f} |")
        print("| image size | served mIoU (ONNX Runtime) | native-size mIoU |")
        print("|---|---|---|")
        for (width, height), per_size in by_size.items():
            print(f"| {width}x{height} | {per_size['onnx'].mean_iou():.4f} | {per_size['native'].mean_iou():.4f} |")
        print(
            f"# mIoU change of the served method vs native size: "
            f"{matrices['onnx'].mean_iou() - matrices['native'].mean_iou():+.4f}; "
            f"ONNX Runtime vs MXNet class agreement through the predictor: {100 * agree / pixels:.3f}% of pixels"
        )


if __name__ == "__main__":
    main()
