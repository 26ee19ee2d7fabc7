"""Command-line entry points: ``train``, ``serve`` and ``semseg <command>``.

Each entry point turns errors into the container contract: a ``UserError`` becomes one sentence
in ``output/failure`` and exit code 1; anything else is an internal error, logged with its
traceback, summarised in the failure file, exit code 2. SIGTERM stops training between
iterations with exit code 143 (128 + SIGTERM), as an interrupted process reports.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import logs, sm_config
from .errors import UserError, one_line
from .train.stop import StopFlag, Stopped

log = logging.getLogger("semseg")

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
EXIT_STOPPED = 143


def train_main() -> int:
    """Run the training job described by the /opt/ml tree (``$SAGEMAKER_BASE_DIR``).

    With several hosts, ``distributed.start`` sets up the parameter server before mxnet is
    imported, and ``Cluster.finish`` ends the process so that every host ends together.
    """
    stop = StopFlag().install()  # before anything slow: a SIGTERM during start-up is noticed too
    logs.setup_logging()
    from .train import distributed

    cluster, code, message = None, 0, ""
    try:
        cluster = distributed.start()
        from .train.loop import run

        try:
            run(stop, cluster)
        except Stopped:
            log.warning("Received SIGTERM: training stopped before completion; model_best.params, if any, is kept")
            code = EXIT_STOPPED
    except UserError as exc:
        log.error("%s", exc)
        sm_config.write_failure(str(exc))
        code, message = EXIT_USER_ERROR, str(exc)
    except Exception as exc:  # a bug of ours: full trace to the log, a short reason to SageMaker
        log.exception("Internal error")
        message = f"Internal error: {type(exc).__name__}: {one_line(exc)}"
        sm_config.write_failure(message)
        code = EXIT_INTERNAL_ERROR
    if cluster is not None:
        cluster.finish(code, message)
    return _exit(code)


def _exit(code: int) -> int:
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def train_command() -> None:
    """The ``train`` console script: the job, then an immediate exit with its code.

    Everything the job owes is written and flushed when ``train_main`` returns (its loader
    processes are already ended), so interpreter teardown has nothing left to do, and skipping
    it means no library finalizer or leftover thread can keep a finished job alive (and billed).
    """
    os._exit(train_main())


def serve_main() -> int:
    """Run the installed ``serve`` command, the model server, on ``$SAGEMAKER_BIND_TO_PORT`` or 8080.

    Found through its console-script entry point, so that this library never imports the HTTP layer.
    """
    from importlib.metadata import entry_points

    (command,) = entry_points(group="console_scripts", name="serve")
    return command.load()()


def _quantize(args) -> int:
    """``semseg quantize``: a user error is one sentence on stderr and exit code 1."""
    from . import paths
    from .train import int8_gate

    logs.setup_logging()
    try:
        return int8_gate.quantize_command(
            args.model_dir, args.data or paths.data_dir(), args.max_images or int8_gate.MAX_GATE_IMAGES
        )
    except UserError as exc:
        log.error("%s", exc)
        return EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="semseg", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="train from the /opt/ml tree at $SAGEMAKER_BASE_DIR (default /opt/ml)")
    commands.add_parser("serve", help="serve the model in $SAGEMAKER_BASE_DIR/model on port 8080")
    demo = commands.add_parser("demo", help="make a sample dataset, train on it, serve it and segment an image")
    demo.add_argument("--workdir", default="demo", help="where the sample /opt/ml tree is made (default: ./demo)")
    sample = commands.add_parser("sample-data", help="write a synthetic dataset laid out as an /opt/ml tree")
    sample.add_argument("root")
    sample.add_argument("--train", type=int, default=24)
    sample.add_argument("--validation", type=int, default=8)
    quantize = commands.add_parser("quantize", help="write the int8 copy of a model's ONNX export, kept if accurate")
    quantize.add_argument("model_dir", help="a model directory (hyperparams.json, model_best.params, model.onnx)")
    quantize.add_argument(
        "--data",
        help="File-mode data: train, validation and their _annotation directories "
        "(default: $SAGEMAKER_BASE_DIR/input/data)",
    )
    quantize.add_argument("--max-images", type=int, default=None, help="validation images the accuracy gate uses")
    args = parser.parse_args(argv)
    if args.command == "train":
        train_command()
    if args.command == "serve":
        return serve_main()
    if args.command == "quantize":
        return _quantize(args)
    if args.command == "sample-data":
        from .sample_data import write_opt_ml_tree

        write_opt_ml_tree(args.root, train=args.train, validation=args.validation)
        return 0
    from .demo import run_demo

    return run_demo(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
