"""The tables users compare models by, one row per algorithm and backbone, all measured here.

- ``params``: parameters of the network as trained (with its aux head), in millions.
- ``speed``: training images/s of a real ``train`` job at crop 240, batch 4 (median of the logged
  per-iteration speeds after the first).
- ``latency``: HTTP latency of one 512x512 JPEG through a real ``serve`` (median of 10 after 3 warm-ups),
  float32 (``model.onnx``) and int8 (``model.int8.onnx``, quantized from it here whatever its accuracy:
  this table measures speed). The model is the speed job's, trained with ``base_size`` 512.
- ``ceiling``: what a network predicting at output stride 1, 2, 4 or 8 and upsampling its scores
  bilinearly (fcn, psp, deeplab and fastscnn at 8, deeplabv3plus at 4, unet at 1) can draw of each
  task, as per-class IoU, two ways. ``shares``: its scores are each stride cell's class shares (the
  true masks averaged over the cells), upsampled, argmax: what a network that only learnt the local
  class mix would draw. ``drawable``: its scores are free, one value per class and cell, fitted to
  each true mask by gradient descent on the cross-entropy of their upsampled copy: at least this
  much is within the design's reach, however it is trained. No network is trained.
- ``learning``: best validation mIoU and per-class IoU of a real job at one fixed budget from random
  weights (no ImageNet weights can be fetched here), per synthetic task of ``tests/harness/tasks.py``.

    .venv/bin/python bench/architectures.py                            # everything (about an hour)
    .venv/bin/python bench/architectures.py --sections learning --tasks thin --models unet:resnet-18,fcn
    .venv/bin/python bench/architectures.py --sections learning --tasks thin --epochs 30 --models fcn,deeplabv3plus
    .venv/bin/python bench/architectures.py --sections ceiling --tasks thin,spots,digits
    .venv/bin/python bench/architectures.py --sections learning --tasks thin --set loss=cross_entropy+dice
    .venv/bin/python bench/architectures.py --sections learning --tasks digits --train 160 --epochs 30 \
        --models unet:resnet-18,fcn --augmentation shapes
    .venv/bin/python bench/architectures.py --output /tmp/architectures.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from harness.serving_helpers import Server, encoded, sample_image
from harness.tasks import LEARNING, SHAPE_AUGMENTATION, TASKS, class_shares, write_task
from harness.trainjob import run_train
from PIL import Image

from semseg import paths
from semseg.evaluation.scores import ConfusionMatrix
from semseg.model import artifacts, quantize
from semseg.model.export import ONNX_FILE
from semseg.model.size import inference_size
from semseg.train import int8_gate

MODELS = [
    ("fcn", "resnet-50"),
    ("psp", "resnet-50"),
    ("deeplab", "resnet-50"),
    ("unet", "resnet-18"),
    ("unet", "resnet-50"),
    ("deeplabv3plus", "resnet-50"),
    ("fastscnn", "resnet-50"),  # fastscnn has its own backbone; the name only fills the column
]
COMMON = {key: LEARNING[key] for key in ("use_pretrained_model", "_workers", "_int8")}  # every job's
SPEED = {
    **COMMON,
    "crop_size": "240",
    "base_size": "512",
    "mini_batch_size": "4",
    "validation_mini_batch_size": "4",
    "epochs": "1",
    "_logging_frequency": "1",
}
SPEED_PATTERN = r"#progress_notice\. epoch: \d+, iterations: \d+ speed: ([0-9.e+-]+) samples/sec"


def label(model: tuple[str, str]) -> str:
    algorithm, backbone = model
    return "fastscnn" if algorithm == "fastscnn" else f"{algorithm} {backbone}"


def parameters(model: tuple[str, str]) -> float:
    import mxnet as mx

    from semseg.model.factory import build_network

    net = build_network(*model, 4, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 64, 64)))
    return sum(p.data().size for p in net.collect_params().values()) / 1e6


def speed_job(model: tuple[str, str], scratch: Path) -> tuple[float, Path]:
    """Training images/s at crop 240, batch 4, and the job's root (its model serves the latency table)."""
    algorithm, backbone = model
    root = write_task("sample", scratch / "speed", 24, 4, {**SPEED, "algorithm": algorithm, "backbone": backbone})
    job = run_train(root)
    if job.returncode != 0:
        raise SystemExit(f"{label(model)}: the speed job failed\n{job.log[-2000:]}")
    speeds = [float(v) for v in job.lines(SPEED_PATTERN)][1:]
    return statistics.median(speeds), root


def latency(root: Path, scratch: Path) -> dict[str, float]:
    """Median HTTP seconds of one 512x512 JPEG, float32 and int8."""
    model_dir = paths.model_dir(base=root)
    hp = artifacts.read_hyperparameters(model_dir)
    calibration, table = int8_gate.file_mode_split(root / "input" / "data", "train", hp)
    images = (image for image, _ in quantize.prepared(calibration, inference_size(hp), table))
    quantize.quantize_file(model_dir / ONNX_FILE, model_dir / quantize.INT8_FILE, images)
    body = encoded(sample_image(512, 512))
    result = {}
    for engine, settings in (("int8", {}), ("float32", {"SEMSEG_FORCE_FP32": "1"})):
        server = Server(root, scratch / f"serve-{engine}.log", **settings)
        try:
            if server.wait_until_up().status_code != 200:
                raise SystemExit(server.log()[-2000:])
            times = []
            for attempt in range(13):
                start = time.perf_counter()
                answer = server.invoke(body)
                if answer.status_code != 200:
                    raise SystemExit(answer.text)
                if attempt >= 3:
                    times.append(time.perf_counter() - start)
            result[engine] = statistics.median(times)
        finally:
            server.stop()
    return result


def learning(model: tuple[str, str], task: str, scratch: Path, train: int, validation: int, budget: dict) -> dict:
    algorithm, backbone = model
    hyperparameters = {**budget, "algorithm": algorithm, "backbone": backbone}
    root = write_task(task, scratch / f"learn-{task}", train, validation, hyperparameters)
    start = time.time()
    job = run_train(root, timeout=7200)
    seconds = time.time() - start
    if job.returncode != 0:
        raise SystemExit(f"{label(model)} on {task}: the job failed\n{job.log[-2000:]}")
    best = json.loads((paths.output_data_dir(base=root) / "metrics.json").read_text())["best_epoch"]
    return {"mIoU": best["mIOU"], "per_class_iou": best["per_class_iou"], "seconds": seconds}


OUTPUT_STRIDE = {"fcn": 8, "psp": 8, "deeplab": 8, "fastscnn": 8, "deeplabv3plus": 4, "unet": 1}
CEILING_STRIDES = (1, 2, 4, 8)


def ceiling_masks(task: str, images: int = 32, seed: int = 7) -> np.ndarray:
    _, maker, _ = TASKS[task]
    rng = np.random.RandomState(seed)
    return np.stack([np.array(maker(rng)[1]) for _ in range(images)])


def shares_ceiling(masks: np.ndarray, num_classes: int, stride: int) -> list[float]:
    """Per-class IoU of the true masks' class shares per stride cell, upsampled bilinearly, argmax."""
    drawn = []
    for mask in masks:
        h, w = mask.shape
        onehot = np.stack([(mask == c).astype(np.float32) for c in range(num_classes)])
        coarse = onehot.reshape(num_classes, h // stride, stride, w // stride, stride).mean(axis=(2, 4))
        drawn.append(np.stack([np.array(Image.fromarray(c).resize((w, h), Image.BILINEAR)) for c in coarse]).argmax(0))
    return ConfusionMatrix.of(masks, np.stack(drawn), num_classes).iou().tolist()


def drawable_ceiling(masks: np.ndarray, num_classes: int, stride: int, steps: int = 600) -> list[float]:
    """Per-class IoU of free stride-cell scores fitted to each true mask through the networks' own
    upsampling (``BilinearResize2D``) by Adam on the cross-entropy, argmax."""
    import mxnet as mx
    from mxnet import autograd, nd

    side = masks.shape[1]
    truth = nd.array(masks)
    scores = nd.zeros((len(masks), num_classes, side // stride, side // stride))
    scores.attach_grad()
    optimizer = mx.optimizer.Adam(learning_rate=0.1)
    state = optimizer.create_state(0, scores)
    for _ in range(steps):
        with autograd.record():
            upsampled = nd.contrib.BilinearResize2D(scores, height=side, width=side)
            loss = -nd.pick(nd.log_softmax(upsampled, axis=1), truth, axis=1).mean()
        loss.backward()
        optimizer.update(0, scores, scores.grad, state)
    drawn = nd.contrib.BilinearResize2D(scores, height=side, width=side).argmax(axis=1).asnumpy()
    return ConfusionMatrix.of(masks, drawn, num_classes).iou().tolist()


def print_ceiling_table(task: str) -> None:
    num_classes, _, names = TASKS[task]
    masks = ceiling_masks(task)
    print(f"\n{task} task: per-class IoU within reach at each output stride, shares / drawable")
    print("| output stride | algorithms | " + " | ".join(names[1:]) + " |")  # the canvas is drawn at every stride
    print("|---|---|" + "---|" * (len(names) - 1))
    for stride in CEILING_STRIDES:
        algorithms = ", ".join(a for a, s in OUTPUT_STRIDE.items() if s == stride) or "-"
        shares, drawable = shares_ceiling(masks, num_classes, stride), drawable_ceiling(masks, num_classes, stride)
        cells = " | ".join(f"{a:.2f} / {b:.2f}" for a, b in zip(shares[1:], drawable[1:]))
        print(f"| {stride} | {algorithms} | {cells} |")


def print_speed_table(rows: list[tuple[str, dict]]) -> None:
    fcn = dict(rows).get("fcn resnet-50", {})
    print("\n| model | parameters (M) | train images/s (240, batch 4) | x fcn | float32 ms | int8 ms | int8 / fcn |")
    print("|---|---|---|---|---|---|---|")
    for name, entry in rows:
        speed, seconds = entry.get("train_images_per_s"), entry.get("latency_s", {})
        speed_ratio = speed / fcn["train_images_per_s"] if speed and fcn.get("train_images_per_s") else None
        int8_ratio = seconds["int8"] / fcn["latency_s"]["int8"] if "int8" in seconds and "latency_s" in fcn else None
        cells = [
            f"{entry['parameters_m']:.1f}" if "parameters_m" in entry else "",
            f"{speed:.2f}" if speed else "",
            f"{speed_ratio:.1f}" if speed_ratio else "",
            f"{1000 * seconds['float32']:.0f}" if "float32" in seconds else "",
            f"{1000 * seconds['int8']:.0f}" if "int8" in seconds else "",
            f"{int8_ratio:.2f}" if int8_ratio else "",
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def print_learning_table(rows: list[tuple[str, dict]], task: str) -> None:
    names = TASKS[task][2]
    print(f"\n{task} task: best mIoU and per-class IoU ({', '.join(names)})")
    print("| model | mIoU | " + " | ".join(names) + " | s |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for name, entry in rows:
        figures = entry.get("learning", {}).get(task)
        if figures:
            ious = " | ".join(f"{v:.3f}" for v in figures["per_class_iou"])
            print(f"| {name} | {figures['mIoU']:.3f} | {ious} | {figures['seconds']:.0f} |")


def print_tables(results: dict, tasks: list[str]) -> None:
    rows = list(results.items())
    if any("parameters_m" in entry or "train_images_per_s" in entry for _, entry in rows):
        print_speed_table(rows)
    for task in tasks:
        print_learning_table(rows, task)


def parse_models(text: str | None) -> list[tuple[str, str]]:
    if not text:
        return MODELS
    chosen = []
    for item in text.split(","):
        algorithm, _, backbone = item.partition(":")
        chosen.append((algorithm, backbone or "resnet-50"))
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="params,speed,latency,ceiling,learning")
    parser.add_argument("--tasks", default="sample,thin,spots")
    parser.add_argument("--models", help="algorithm[:backbone],... (default: the seven of the table)")
    parser.add_argument("--train", type=int, default=96)
    parser.add_argument("--validation", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=int(LEARNING["epochs"]), help="the learning budget's epochs")
    parser.add_argument(
        "--augmentation",
        choices=("default", "shapes"),
        default="default",
        help="shapes: tests/harness/tasks.py SHAPE_AUGMENTATION (no mirror, a narrow rescale)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter of every learning job (repeatable)",
    )
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    sections, tasks = args.sections.split(","), args.tasks.split(",")
    if "ceiling" in sections:
        for task in tasks:
            if TASKS[task][1] is not None:  # the sample task's large shapes are drawn by semseg.sample_data
                print_ceiling_table(task)
        if sections == ["ceiling"]:
            return 0
    steps = args.epochs * (args.train // int(LEARNING["mini_batch_size"]))
    budget = {**LEARNING, "epochs": str(args.epochs), **(SHAPE_AUGMENTATION if args.augmentation == "shapes" else {})}
    budget.update(item.split("=", 1) for item in args.set)
    print(f"learning budget: {args.train} training / {args.validation} validation images, {steps} steps, {budget}")
    results: dict[str, dict] = {}
    for model in parse_models(args.models):
        entry = results.setdefault(label(model), {})
        with tempfile.TemporaryDirectory(prefix="bench-architectures-") as scratch_name:
            scratch = Path(scratch_name)
            if "params" in sections:
                entry["parameters_m"] = parameters(model)
            if "speed" in sections or "latency" in sections:
                entry["train_images_per_s"], root = speed_job(model, scratch)
                if "latency" in sections:
                    entry["latency_s"] = latency(root, scratch)
            for task in tasks if "learning" in sections else []:
                figures = learning(model, task, scratch, args.train, args.validation, budget)
                entry.setdefault("learning", {})[task] = figures
                if task == tasks[0] and len(results) == 1:
                    shares = class_shares(scratch / f"learn-{task}", TASKS[task][0])
                    print(f"{task}: pixel share per class (%): {', '.join(f'{100 * s:.2f}' for s in shares)}")
        print(f"{label(model)}: {json.dumps(entry)}", flush=True)
    print_tables(results, tasks if "learning" in sections else [])
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
