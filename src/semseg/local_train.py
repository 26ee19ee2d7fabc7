"""``semseg train --dataset export.zip --output DIR [--<hyperparameter> VALUE ...]``: one command to
train outside SageMaker.

It lays out ``DIR`` as the /opt/ml tree a SageMaker job would see (the dataset as the ``dataset``
channel, the flags as ``hyperparameters.json``, every value a string) and runs the same ``train``
on it, so a local run and a SageMaker job cannot differ. The flags are made from the
hyperparameter table, with SageMaker's names; values are checked by the job, with its sentences.
The dataset is linked, not copied: a large zip costs no second copy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import hyperparameters, paths, sm_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, help="a dataset .zip (CVAT Segmentation Mask 1.1, or images/ + masks/)")
    parser.add_argument("--output", type=Path, help="the directory laid out as /opt/ml: model/, output/, input/")
    flags = parser.add_argument_group("hyperparameters (as in SageMaker; the job checks the values)")
    for name, spec in hyperparameters.TABLE.items():
        default = "required" if spec.required else f"default {hyperparameters.to_string(spec.default)}"
        choices = f"; one of {', '.join(spec.choices)}" if spec.choices else ""
        flags.add_argument(f"--{name}", metavar="VALUE", help=f"{spec.kind}, {default}{choices}")


def given_hyperparameters(args: argparse.Namespace) -> dict[str, str]:
    return {name: getattr(args, name) for name in hyperparameters.TABLE if getattr(args, name) is not None}


def lay_out(dataset: Path, root: Path, values: dict[str, str]) -> Path:
    """Make ``root`` an /opt/ml tree whose ``dataset`` channel is ``dataset``; returns ``root``.

    A zip is linked into the channel directory; an unzipped tree becomes the channel directory.
    A rerun on the same ``root`` replaces the configuration and the link, and keeps ``model/``.
    """
    dataset, root = dataset.resolve(), root.resolve()
    channel = paths.channel_dir(paths.DATASET_CHANNEL, base=root)
    if channel.is_symlink():
        channel.unlink()
    elif channel.is_dir():
        for entry in channel.iterdir():
            if not entry.is_symlink():
                raise SystemExit(f"semseg train: {channel} holds {entry.name}, which this command did not make")
            entry.unlink()
        channel.rmdir()
    channel.parent.mkdir(parents=True, exist_ok=True)
    if dataset.is_dir():
        channel.symlink_to(dataset, target_is_directory=True)
    else:
        channel.mkdir()
        (channel / dataset.name).symlink_to(dataset)
    channels = {paths.DATASET_CHANNEL: {"TrainingInputMode": "File", "ContentType": "application/zip"}}
    sm_config.write_config_files(root, values, channels, {"current_host": "algo-1", "hosts": ["algo-1"]})
    for directory in (paths.model_dir(root), paths.output_data_dir(root)):
        directory.mkdir(parents=True, exist_ok=True)
    return root


def main(args: argparse.Namespace) -> int:
    """Lay out the tree, run the job in this process, say where its results are; the job's exit code."""
    if args.dataset is None or args.output is None:
        raise SystemExit("semseg train: --dataset and --output go together (without both, train runs on /opt/ml)")
    if not args.dataset.exists():
        raise SystemExit(f"semseg train: the dataset {args.dataset} does not exist")
    root = lay_out(args.dataset, args.output, given_hyperparameters(args))
    os.environ["SAGEMAKER_BASE_DIR"] = str(root)
    from .train.command import train_main

    code = train_main()
    failure = paths.failure_file()
    print(f"Model: {paths.model_dir()}", flush=True)
    print(f"Training output (metrics and report): {paths.output_data_dir()}", flush=True)
    if code and failure.exists():
        print(f"The job failed: {failure.read_text().strip()} (see {failure})", flush=True)
    return code
