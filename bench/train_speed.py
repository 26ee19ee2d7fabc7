"""Training speed per algorithm, and the share of step time spent waiting for data.

Method: a synthetic File-mode dataset of 320x240 JPEGs (semseg.sample_data) under a temporary
/opt/ml tree; for each algorithm, the real loader and loop functions of ``semseg.train.loop``
run one warm-up epoch, then a measured epoch of ``--steps`` iterations at crop 240, batch 4
(ResNet-50, random weights). Images/s and data-wait share come from that measured epoch.

    .venv/bin/python bench/train_speed.py [--steps 4] [--crop 240] [--batch 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from contextlib import closing

import mxnet as mx
from mxnet import gluon


def measure(algorithm: str, steps: int, crop: int, batch: int, workers: int) -> tuple[float, float]:
    from semseg import hyperparameters
    from semseg.data.loaders import data_splits
    from semseg.model.factory import build_from_hyperparameters
    from semseg.model.weights import initial_weights
    from semseg.train import loop
    from semseg.train.optim import lr_schedule, optimizer_settings
    from semseg.train.setup import Training, make_criterion
    from semseg.train.stop import StopFlag

    hp = hyperparameters.parse(
        {
            "algorithm": algorithm,
            "num_classes": "4",
            "num_training_samples": str(steps * batch),
            "crop_size": str(crop),
            "base_size": str(crop * 2),
            "mini_batch_size": str(batch),
            "use_pretrained_model": "False",
            "_workers": str(workers),
            "_logging_frequency": "1000",
        }
    )
    splits = data_splits(hp, {}, seed=0)
    ctx = [mx.cpu()]
    net = build_from_hyperparameters(hp)
    initial_weights(net, hp, ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    name, settings = optimizer_settings(hp)
    trainer = gluon.Trainer(net.collect_params(), name, settings)
    training = Training(hp, net, make_criterion(hp)[0], trainer, ctx, lr_schedule(hp, steps), StopFlag(), "algo-1")
    with closing(splits):
        loop.train_one_epoch(training, splits.train_loader, 0, 0)
        stats = loop.train_one_epoch(training, splits.train_loader, 1, steps)
    return stats.throughput, stats.data_wait


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--crop", type=int, default=240)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--algorithms", default="fcn,psp,deeplab")
    args = parser.parse_args()

    from semseg.logs import setup_logging
    from semseg.sample_data import write_opt_ml_tree

    setup_logging(level=40)
    with tempfile.TemporaryDirectory() as root:
        write_opt_ml_tree(root, train=16, validation=2, sizes=((320, 240),))
        os.environ["SAGEMAKER_BASE_DIR"] = root
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, MXNet {mx.__version__}, "
            f"contexts: cpu; crop {args.crop}, batch {args.batch}, {args.steps} measured steps, "
            f"{args.workers} loader processes"
        )
        print(f"{'algorithm':<10} {'images/s':>9} {'s/step':>8} {'data wait':>10}")
        for algorithm in args.algorithms.split(","):
            throughput, wait = measure(algorithm, args.steps, args.crop, args.batch, args.workers)
            print(f"{algorithm:<10} {throughput:>9.3f} {args.batch / throughput:>8.2f} {100 * wait:>9.1f}%", flush=True)


if __name__ == "__main__":
    main()
