"""``semseg train --dataset export.zip --output DIR [--<hyperparameter> VALUE ...]``: one command to
train outside SageMaker.

It lays out ``DIR`` as the /opt/ml tree a SageMaker job would see (the dataset as the ``dataset``
channel, ``--model`` as the ``model`` channel of incremental training, the flags as
``hyperparameters.json``, every value a string) and runs the same ``train`` on it, so a local run
and a SageMaker job cannot differ. The flags are made from the hyperparameter table, with
SageMaker's names; values are checked by the job, with its sentences. With ``--model``, the
architecture hyperparameters that incremental training must repeat (``ARCHITECTURE_KEYS``) default
to that model's.
The dataset and the model are linked, not copied: a large zip costs no second copy.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from . import hyperparameters, paths, sm_config
from .archives import model_archive, read_member
from .errors import UserError

MODEL_CONTENT_TYPE = "application/x-sagemaker-model"  # what the SageMaker SDK gives a model channel
MAX_HYPERPARAMETERS_BYTES = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, help="a dataset .zip (CVAT Segmentation Mask 1.1, or images/ + masks/)")
    parser.add_argument("--output", type=Path, help="the directory laid out as /opt/ml: model/, output/, input/")
    parser.add_argument(
        "--model",
        type=Path,
        help="a model to continue (incremental training): its directory, model.tar.gz or job root, laid out as "
        "the 'model' channel; the dataset must name its classes",
    )
    flags = parser.add_argument_group("hyperparameters (as in SageMaker; the job checks the values)")
    for name, spec in hyperparameters.TABLE.items():
        default = "required" if spec.required else f"default {hyperparameters.to_string(spec.default)}"
        choices = f"; one of {', '.join(spec.choices)}" if spec.choices else ""
        flags.add_argument(f"--{name}", metavar="VALUE", help=f"{spec.kind}, {default}{choices}")


def given_hyperparameters(args: argparse.Namespace) -> dict[str, str]:
    return {name: getattr(args, name) for name in hyperparameters.TABLE if getattr(args, name) is not None}


def _unlink_channel(channel: Path) -> None:
    """Remove what an earlier run of this command laid out as ``channel``: a link, or a folder of links."""
    if channel.is_symlink():
        channel.unlink()
    elif channel.is_dir():
        for entry in channel.iterdir():
            if not entry.is_symlink():
                raise SystemExit(f"semseg train: {channel} holds {entry.name}, which this command did not make")
            entry.unlink()
        channel.rmdir()


def _link_channel(channel: Path, source: Path) -> None:
    """A folder becomes the channel directory; a file (a zip, a model.tar.gz) is linked into it."""
    _unlink_channel(channel)
    channel.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        channel.symlink_to(source, target_is_directory=True)
    else:
        channel.mkdir()
        (channel / source.name).symlink_to(source)


def lay_out(dataset: Path, root: Path, values: dict[str, str], model: Path | None = None) -> Path:
    """Make ``root`` an /opt/ml tree whose ``dataset`` channel is ``dataset`` and, when given, whose
    ``model`` channel is ``model`` (a model directory or model.tar.gz, for incremental training);
    returns ``root``.

    A zip or tarball is linked into its channel directory; an unzipped tree becomes the channel
    directory. A rerun on the same ``root`` replaces the configuration and the links (a rerun
    without ``model`` has no model channel), and keeps ``model/``.
    """
    dataset, root = dataset.resolve(), root.resolve()
    _link_channel(paths.channel_dir(paths.DATASET_CHANNEL, base=root), dataset)
    channels = {paths.DATASET_CHANNEL: {"TrainingInputMode": "File", "ContentType": "application/zip"}}
    model_channel = paths.channel_dir(paths.MODEL_CHANNEL, base=root)
    if model is None:
        _unlink_channel(model_channel)
    else:
        _link_channel(model_channel, model.resolve())
        channels[paths.MODEL_CHANNEL] = {"TrainingInputMode": "File", "ContentType": MODEL_CONTENT_TYPE}
    sm_config.write_config_files(root, values, channels, {"current_host": "algo-1", "hosts": ["algo-1"]})
    for directory in (paths.model_dir(root), paths.output_data_dir(root)):
        directory.mkdir(parents=True, exist_ok=True)
    return root


def prior_architecture(model: Path) -> dict[str, str]:
    """The architecture hyperparameters of the model ``model`` names (its files or model.tar.gz), which a
    run continuing it must repeat; empty when they cannot be read (the job then says why)."""
    try:
        if model.is_file():
            text = read_member(model, paths.HYPERPARAMS_FILE, MAX_HYPERPARAMETERS_BYTES)
        elif (model / paths.HYPERPARAMS_FILE).is_file():
            text = (model / paths.HYPERPARAMS_FILE).read_bytes()
        else:
            archive = model_archive(model)
            text = read_member(archive, paths.HYPERPARAMS_FILE, MAX_HYPERPARAMETERS_BYTES) if archive else None
        values = json.loads(text) if text is not None else {}
    except (UserError, ValueError, OSError):
        return {}
    if not isinstance(values, dict):
        return {}
    return {key: str(values[key]) for key in hyperparameters.ARCHITECTURE_KEYS if key in values}


def _prior_model(model: Path, root: Path) -> Path:
    """The model files ``--model`` names (``model_to_serve``'s rule), once they are not this run's own."""
    from .model.artifacts import model_to_serve

    try:
        found = model_to_serve(model)
    except UserError as exc:
        raise SystemExit(f"semseg train: --model: {exc}") from None
    written = paths.model_dir(root.resolve())
    if found == written or written in found.parents:
        raise SystemExit(
            f"semseg train: --model {model} is the model this run writes ({written}); give another --output"
        )
    return found


def main(args: argparse.Namespace) -> int:
    """Lay out the tree, run the job in this process, say where its results are; the job's exit code."""
    if args.dataset is None or args.output is None:
        raise SystemExit(
            "semseg train: --dataset and --output go together (without both, train runs on /opt/ml), and --model "
            "needs them"
        )
    if not args.dataset.exists():
        raise SystemExit(f"semseg train: the dataset {args.dataset} does not exist")
    values = given_hyperparameters(args)
    model = None
    if args.model is not None:
        model = _prior_model(args.model, args.output)
        taken = {key: value for key, value in prior_architecture(model).items() if key not in values}
        if taken:
            listed = ", ".join(f"{key}={value}" for key, value in taken.items())
            print(f"From the model {args.model}, as incremental training needs: {listed}", flush=True)
        values = {**taken, **values}
    root = lay_out(args.dataset, args.output, values, model)
    os.environ["SAGEMAKER_BASE_DIR"] = str(root)
    from .train.command import train_main

    code = train_main()
    failure = paths.failure_file()
    print(f"Model: {paths.model_dir()}", flush=True)
    print(f"Training output (metrics and report): {paths.output_data_dir()}", flush=True)
    if code and failure.exists():
        print(f"The job failed: {failure.read_text().strip()} (see {failure})", flush=True)
    return code
