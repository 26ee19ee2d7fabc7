"""Command-line entry points: ``semseg <command>``, and the ``train`` console script.

``train`` itself is ``train.command`` (the container contract around the training loop); the
commands outside the contract end a ``UserError`` as its one sentence and exit code 1
(``exit_codes``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING

from . import cross_validation, exit_codes, local_train, logs
from .errors import UserError
from .train.command import train_command

if TYPE_CHECKING:
    from .inference.settings import ServingSettings

log = logging.getLogger("semseg")


_THIS_MACHINE = ("0.0.0.0", "::", "127.0.0.1", "::1", "localhost")  # hosts whose page is at localhost


def local_serve_settings(
    model: str | None, port: int | None, host: str | None, environ: MutableMapping[str, str]
) -> ServingSettings:
    """The settings of ``semseg serve``, written into ``environ`` for the server it starts.

    ``--model``, ``--port`` and ``--host`` win over the environment. Unlike the image's ``serve``
    (SageMaker's contract: every interface), it listens on loopback unless ``--host`` or
    ``$SEMSEG_BIND_HOST`` says otherwise: a model served on a laptop is not offered to its network.
    """
    from .inference import settings
    from .inference.repository import find_models

    if model is not None:  # one model (its files, wherever they are under PATH), or a directory of models
        models = find_models(Path(model))
        served = next(iter(models.values())) if len(models) == 1 else Path(model).resolve()
        environ[settings.MODEL_DIR_VARIABLE] = str(served)
    if port is not None:
        port = settings.whole_number(str(port), "--port", settings.MIN_PORT, settings.MAX_PORT)
        environ["SAGEMAKER_BIND_TO_PORT"] = str(port)
    if host is not None:
        environ[settings.HOST_VARIABLE] = settings.checked_host(host, "--host")
    elif not environ.get(settings.HOST_VARIABLE, "").strip():
        environ[settings.HOST_VARIABLE] = settings.LOCAL_HOST
    return settings.from_environment(environ)


def page_url(settings: ServingSettings) -> str:
    """Where a browser on this machine finds the inference page of a server with ``settings``."""
    host = "localhost" if settings.host in _THIS_MACHINE else settings.host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.port}/"


def serve_main(model: str | None = None, port: int | None = None, host: str | None = None) -> int:
    """Run the installed ``serve`` command, the model server, with ``local_serve_settings``.

    ``model``: a model directory, model.tar.gz or job root to serve instead of ``$SAGEMAKER_BASE_DIR/model``;
    ``port`` and ``host``: where to listen instead of the environment's (loopback by default). The
    server is found through its console-script entry point, so that this library never imports the
    HTTP layer.
    """
    from importlib.metadata import entry_points

    try:
        settings = local_serve_settings(model, port, host, os.environ)
    except UserError as exc:
        print(f"semseg serve: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    if model is not None:
        print(f"Serving {settings.model_dir}; its page: {page_url(settings)}", flush=True)
    (command,) = entry_points(group="console_scripts", name="serve")
    return command.load()()


def _user_command(run, *args) -> int:
    """A command outside the container contract: a ``UserError`` is its one sentence on stderr and exit 1."""
    logs.setup_logging()
    try:
        return run(*args)
    except UserError as exc:
        log.error("%s", exc)
        return exit_codes.FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train from the /opt/ml tree at $SAGEMAKER_BASE_DIR (default /opt/ml), or from --dataset into --output",
    )
    local_train.add_arguments(train)
    serve = commands.add_parser("serve", help="serve a model, with an inference page at http://localhost:8080/")
    serve.add_argument(
        "--model", help="a model directory, a model.tar.gz or a job's /opt/ml root (default: $SAGEMAKER_BASE_DIR/model)"
    )
    serve.add_argument("--port", type=int, help="the port to listen on (default: $SAGEMAKER_BIND_TO_PORT or 8080)")
    serve.add_argument(
        "--host",
        help="the address to listen on, e.g. 0.0.0.0 for every interface (default: $SEMSEG_BIND_HOST or 127.0.0.1)",
    )
    demo = commands.add_parser("demo", help="make a sample dataset, train on it, serve it and segment an image")
    demo.add_argument("--workdir", default="demo", help="where the sample /opt/ml tree is made (default: ./demo)")
    sample = commands.add_parser("sample-data", help="write a synthetic dataset laid out as an /opt/ml tree")
    sample.add_argument("root")
    sample.add_argument("--train", type=int, default=24)
    sample.add_argument("--validation", type=int, default=8)
    job = commands.add_parser("job", help="run a CreateTrainingJob request here, with S3 or file:// channels")
    job.add_argument("request", help="the request as JSON, as passed to boto3's create_training_job")
    job.add_argument("--workdir", help="the job's /opt/ml folder (default: ./semseg-jobs/<TrainingJobName>)")
    predict = commands.add_parser("predict", help="segment every image of a folder or S3 prefix into another")
    predict.add_argument("--input", required=True, help="folder, s3://bucket/prefix/ or file:// of images")
    predict.add_argument("--output", required=True, help="folder or s3://bucket/prefix/ for the answers")
    predict.add_argument("--url", help="a running server, e.g. http://host:8080")
    predict.add_argument("--endpoint", help="a SageMaker endpoint's name (boto3 sagemaker-runtime)")
    predict.add_argument("--model", help="a model directory, used in this process")
    predict.add_argument("--accept", help="answer type (default image/png)")
    predict.add_argument(
        "--format",
        choices=("files", "cvat"),
        default="files",
        help="files: one answer per image (default); cvat: one CVAT Segmentation mask 1.1 zip at --output",
    )
    predict.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    evaluate = commands.add_parser(
        "evaluate", help="score a model on held-out data as its endpoint serves it, optionally against a baseline"
    )
    evaluate.add_argument("--model", required=True, help="a model directory, a model.tar.gz or a job's /opt/ml root")
    evaluate.add_argument(
        "--data",
        required=True,
        help="File-mode pairs (test/test_annotation or validation/validation_annotation), a dataset zip or "
        "its folder, or an s3:// prefix of either",
    )
    evaluate.add_argument(
        "--subset", help="the dataset subset or File-mode pair to score (default: test, else the validation split)"
    )
    evaluate.add_argument("--baseline", help="a second model, scored on the same images and compared")
    evaluate.add_argument("--output", help="where the report and files go (default: ./evaluation)")
    evaluate.add_argument(
        "--engine", choices=("float32", "int8"), help="the engine (default: the one the server picks)"
    )
    evaluate.add_argument(
        "--fail-below",
        action="append",
        metavar="FIGURE=VALUE",
        help="exit with code 3 when a figure (mIoU, mean_dice, pixel_accuracy, frequency_weighted_iou) is below "
        "VALUE; a bare VALUE is for mIoU; may be repeated",
    )
    cv = commands.add_parser(
        "cv", help="cross-validation: train K models on K splits of a dataset, report each fold and mean ± std"
    )
    cross_validation.add_arguments(cv)
    quantize = commands.add_parser("quantize", help="write the int8 copy of a model's ONNX export, kept if accurate")
    quantize.add_argument("model_dir", help="a model directory (hyperparams.json, model_best.params, model.onnx)")
    quantize.add_argument(
        "--data",
        help="File-mode data: train, validation and their _annotation directories "
        "(default: $SAGEMAKER_BASE_DIR/input/data)",
    )
    quantize.add_argument("--max-images", type=int, default=None, help="validation images the accuracy gate uses")
    cvat = commands.add_parser("cvat-function", help="write the nuclio function that serves a model to CVAT's AI tools")
    cvat.add_argument("--model", required=True, help="a model directory, a model.tar.gz or a job's /opt/ml root")
    cvat.add_argument("--output", required=True, help="the function folder to write (new or empty)")
    cvat.add_argument("--name", help="the function's name in nuclio and CVAT (default: semseg-<algorithm>-<backbone>)")
    cvat.add_argument("--base-image", help="the semseg image to build on, as nuclio finds it (default: semseg:cpu)")
    args = parser.parse_args(argv)
    if args.command == "predict":
        from .jobs.predict import main as predict_main

        return _user_command(predict_main, args)
    if args.command == "evaluate":
        from .jobs.evaluate import main as evaluate_main

        return _user_command(evaluate_main, args)
    if args.command == "cv":
        return _user_command(cross_validation.main, args)
    if args.command == "job":
        from pathlib import Path

        from .jobs.training_job import main as job_main

        return _user_command(job_main, Path(args.request), Path(args.workdir) if args.workdir else None)
    if args.command == "train" and (
        args.dataset or args.output or args.model or local_train.given_hyperparameters(args)
    ):
        os._exit(local_train.main(args))
    if args.command == "train":
        train_command()
    if args.command == "serve":
        return serve_main(args.model, args.port, args.host)
    if args.command == "quantize":
        from pathlib import Path

        from . import paths, quantize_command

        data = Path(args.data) if args.data else paths.data_dir()
        return _user_command(
            quantize_command.main, args.model_dir, data, args.max_images or quantize_command.MAX_GATE_IMAGES
        )
    if args.command == "cvat-function":
        from .cvat_function import main as cvat_function_main

        return _user_command(cvat_function_main, args)
    if args.command == "sample-data":
        from .sample_data import write_opt_ml_tree

        write_opt_ml_tree(args.root, train=args.train, validation=args.validation)
        return 0
    from .demo import run_demo

    return run_demo(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
