"""mIoU of serving through the fixed-shape ONNX export (resize-and-pad, sliding windows, flip, int8)
against full-resolution MXNet.

Method: the real ``train`` command learns the synthetic task (``semseg.sample_data``, the demo's
settings: FCN-ResNet50 from scratch, crop 64, base 96), and training's ONNX export is taken as is. A held-out
set drawn with another seed, at sizes from 50x75 to 500x375 and aspect ratios up to 3:1, is then
segmented three ways and scored with the training metric (mIoU over the whole set):

- served, ONNX Runtime: the predictor fits the longer side to the export size S (= base_size),
  pads, runs ``model.onnx``, crops the valid region and resizes the probabilities back;
- served, MXNet: the same predictor over the MXNet engine (the engines must agree);
- served, sliding windows: images whose longer side exceeds ``--factor`` x S are covered by S x S
  windows at their own size (overlap of a third, probabilities averaged); smaller ones as above;
  then the same with flip test-time augmentation, and with the int8 copy (made here with
  ``semseg.model.quantize`` when the model directory has none; the gate's figures are printed);
- native, MXNet: no resize at all; the network is built for each image's own size (padded to a
  multiple of 8), which is what a variable-shape runtime would do.

    .venv/bin/python bench/onnx_size_mapping.py [--epochs 8] [--per-size 4] [--factor 1.5] [--workdir DIR]

Times are per image through the predictor (decode to class ids), on whatever load the machine has.
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
from semseg.evaluation.scores import ConfusionMatrix
from semseg.inference.mxnet_engine import MXNetEngine
from semseg.inference.onnx_engine import OnnxEngine, intra_op_threads
from semseg.inference.predictor import Predictor
from semseg.inference.settings import DEFAULT_SLIDING_WINDOW_FACTOR, ServingSettings
from semseg.model import artifacts, export, quantize
from semseg.model.factory import build_network
from semseg.model.size import inference_size
from semseg.train import int8_gate

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


def served(engine, **options) -> Predictor:
    return Predictor(engine, 10**8, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=int(DEMO_HYPERPARAMETERS["epochs"]))
    parser.add_argument("--per-size", type=int, default=4)
    parser.add_argument("--factor", type=float, default=DEFAULT_SLIDING_WINDOW_FACTOR, help="sliding-window factor")
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
            f"# machine: {platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f}; "
            f"{hp['algorithm']}/{hp['backbone']} crop {hp['crop_size']} base {hp['base_size']}, {how}; "
            f"export size {size}"
        )
        threads = intra_op_threads(ServingSettings())
        fp32 = OnnxEngine(model_dir / export.ONNX_FILE, threads)
        int8_path = model_dir / quantize.INT8_FILE
        if not int8_path.exists():
            calibration, _ = int8_gate.file_mode_split(root / "input" / "data", "train", hp)
            validation, table = int8_gate.file_mode_split(root / "input" / "data", "validation", hp)
            gate = int8_gate.quantize_model(model_dir, hp, calibration, validation, table)
            print(
                f"# int8 gate on the validation set: mIoU {gate.int8_miou:.4f} int8 vs {gate.fp32_miou:.4f} float32 "
                f"(drop {gate.drop:+.4f}), kept: {gate.kept}"
            )
        int8 = OnnxEngine(int8_path, threads) if int8_path.exists() else None
        methods = {
            "pad": (f"served: resize-and-pad to {size}, ONNX Runtime", served(fp32, sliding_window_factor=0)),
            "mxnet": (
                f"served: resize-and-pad to {size}, MXNet",
                served(MXNetEngine(hp, model_dir, size, mx.cpu()), sliding_window_factor=0),
            ),
            "slide": (
                f"served: sliding windows above {args.factor:g}x{size}, ONNX Runtime",
                served(fp32, sliding_window_factor=args.factor),
            ),
            "flip": (
                f"served: sliding windows above {args.factor:g}x{size} + flip, ONNX Runtime",
                served(fp32, sliding_window_factor=args.factor, flip=True),
            ),
        }
        if int8 is not None:
            methods["int8"] = (
                f"served: sliding windows above {args.factor:g}x{size}, ONNX Runtime int8",
                served(int8, sliding_window_factor=args.factor),
            )
        native = NativeSize(hp, model_dir)
        names = [*methods, "native"]
        matrices = {name: ConfusionMatrix(hp["num_classes"]) for name in names}
        seconds = dict.fromkeys(names, 0.0)
        by_size = {}  # (width, height) -> {method: ConfusionMatrix}
        agree, pixels = 0, 0
        rng = np.random.RandomState(1234)
        for width, height in HELD_OUT_SIZES:
            per_size = by_size.setdefault((width, height), {n: ConfusionMatrix(hp["num_classes"]) for n in names})
            for _ in range(args.per_size):
                image, mask = sample_data.make_pair(rng, width, height)
                body = io.BytesIO()
                image.save(body, format="JPEG", quality=95)
                labels = np.asarray(mask)
                answers = {}
                for name, (_, predictor) in methods.items():
                    begun = time.perf_counter()
                    answers[name] = predictor.predict(body.getvalue()).class_ids()
                    seconds[name] += time.perf_counter() - begun
                decoded = np.asarray(Image.open(io.BytesIO(body.getvalue())).convert("RGB"))
                begun = time.perf_counter()
                answers["native"] = native.class_ids(decoded)
                seconds["native"] += time.perf_counter() - begun
                for name, ids in answers.items():
                    matrices[name].update(labels, ids)
                    per_size[name].update(labels, ids)
                agree += int((answers["pad"] == answers["mxnet"]).sum())
                pixels += answers["pad"].size
        count = len(HELD_OUT_SIZES) * args.per_size
        labels = {**{name: label for name, (label, _) in methods.items()}, "native": "native size, MXNet"}
        print(f"# held-out set: {count} images, sizes {', '.join(f'{w}x{h}' for w, h in HELD_OUT_SIZES)}")
        print("| method | mIoU | pixel accuracy | vs native | ms per image |")
        print("|---|---|---|---|---|")
        for name, matrix in matrices.items():
            print(
                f"| {labels[name]} | {matrix.mean_iou():.4f} | {matrix.pixel_accuracy():.4f} | "
                f"{matrix.mean_iou() - matrices['native'].mean_iou():+.4f} | {1000 * seconds[name] / count:.0f} |"
            )
        print("| image size | longer side / S | " + " | ".join(f"{n} mIoU" for n in names) + " |")
        print("|---|---|" + "---|" * len(names))
        for (width, height), per_size in by_size.items():
            cells = " | ".join(f"{per_size[n].mean_iou():.4f}" for n in names)
            print(f"| {width}x{height} | {max(width, height) / size:.2f} | {cells} |")
        print(
            f"# ONNX Runtime vs MXNet class agreement through the predictor (resize-and-pad): "
            f"{100 * agree / pixels:.3f}% of pixels"
        )


if __name__ == "__main__":
    main()
