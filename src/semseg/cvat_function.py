"""``semseg cvat-function``: a nuclio function folder that registers a model with CVAT for automatic annotation.

The folder holds what ``nuctl deploy --path FOLDER`` needs, laid out as CVAT's own serverless functions:

- ``function.yaml``: the function's name in CVAT's ``cvat`` namespace; the annotations CVAT lists
  functions by (``type: detector``, a display ``name``, the ``framework``, and ``spec``: the labels
  as a JSON string, one ``{"id", "name", "type": "mask"}`` per non-background class of the model's
  class table); the python runtime with the handler ``main:handler``; the build on this product's
  CPU image (``semseg:cpu`` unless told otherwise), which has semseg installed; an HTTP trigger
  whose body limit bounds the frame size (32 MB, as CVAT's functions have), and a restart policy;
- ``main.py``: nuclio's handler, which loads the copy of the model with semseg's ``Predictor`` once
  (``init_context``) and answers each event with ``cvat_detector.detector_answer``, the answer of
  the server's CVAT route; a malformed request is its one sentence as JSON, with a 4xx status;
- ``model/``: a copy of the model's files that serving reads (unpacked from a model.tar.gz; the final
  weights ``model_<host>`` are left out where ``model_best.params`` is what serving loads).

The folder is written whole under a hidden name beside it and renamed at the end, so a failure
leaves nothing half-written; an existing non-empty folder is refused, never overwritten.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from . import classes, paths
from .errors import UserError, explained_write_failure
from .inference.cvat_detector import labelled_classes
from .model.artifacts import model_to_serve, read_hyperparameters, unpack_model_dir, weights_file
from .names import shown

log = logging.getLogger("semseg")

DEFAULT_BASE_IMAGE = "semseg:cpu"  # what `make image-cpu` and Dockerfile.cpu build
MODEL_FOLDER = "model"
FUNCTION_FILE = "function.yaml"
HANDLER_FILE = "main.py"
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # the trigger's body limit: a base64 frame is 4/3 of its file
EVENT_TIMEOUT = "120s"  # a large frame takes several forward passes on a CPU
PYTHON = "/opt/semseg/venv/bin/python3"  # the image's environment, where semseg is installed
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a Kubernetes (DNS-1123) label, as nuclio needs

HANDLER = '''\
"""CVAT's automatic annotation with the semseg model in ./model, as a nuclio function.

Written by `semseg cvat-function`; it runs in the semseg image that function.yaml builds on. Each
event is CVAT's detector request ({"image": base64, "threshold": float}); the answer is the list of
mask shapes semseg.inference.cvat_detector makes, the same as the server's CVAT route gives.
"""

import json
from pathlib import Path

from semseg.errors import UserError
from semseg.inference import settings
from semseg.inference.cvat_detector import detector_answer
from semseg.inference.predictor import Predictor

MODEL_DIR = Path(__file__).resolve().parent / "model"


def init_context(context):
    context.logger.info(f"Loading the model in {MODEL_DIR}")
    context.user_data.predictor = Predictor.from_model_dir(MODEL_DIR, settings.from_environment())
    context.logger.info("The model is loaded")


def _json(context, value, status_code):
    return context.Response(
        body=json.dumps(value), headers={}, content_type="application/json", status_code=status_code
    )


def handler(context, event):
    # nuclio hands a JSON request's body over already decoded; detector_answer takes either form.
    try:
        answer = detector_answer(context.user_data.predictor, event.body)
    except UserError as exc:
        return _json(context, {"error": str(exc)}, exc.http_status)
    return _json(context, answer, 200)
'''


class _Literal(str):
    """A string written as a YAML literal block, as CVAT's functions write their labels spec."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, "|"))


def default_name(hp: dict) -> str:
    """``semseg-<algorithm>-<backbone>``, lower case, with a dash for anything else."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"semseg-{hp['algorithm']}-{hp['backbone']}".lower()).strip("-")
    return slug[:63].rstrip("-")


def checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise UserError(
            f"The function name '{shown(name)}' is not one nuclio takes: use at most 63 lower-case letters, "
            "digits and dashes, starting and ending with a letter or digit"
        )
    return name


def function_config(hp: dict, table: classes.ClassTable, name: str, base_image: str) -> dict:
    """function.yaml's content: CVAT's annotations over nuclio's function spec."""
    labels = [{"id": class_id, "name": label, "type": "mask"} for class_id, label in labelled_classes(table)]
    return {
        "metadata": {
            "name": name,
            "namespace": "cvat",
            "annotations": {
                "name": f"semseg {hp['algorithm']} {hp['backbone']} ({name})",
                "type": "detector",
                "framework": "mxnet",
                "spec": _Literal(json.dumps(labels, indent=2) + "\n"),
            },
        },
        "spec": {
            "description": f"Semantic segmentation ({hp['algorithm']}, {hp['backbone']}, {len(table)} classes)",
            "runtime": "python:3.11",
            "handler": "main:handler",
            "eventTimeout": EVENT_TIMEOUT,
            "env": [{"name": "NUCLIO_PYTHON_EXE_PATH", "value": PYTHON}],
            "build": {
                "image": f"cvat.{name}",
                "baseImage": base_image,
                "directives": {
                    "preCopy": [{"kind": "USER", "value": "root"}, {"kind": "WORKDIR", "value": "/opt/nuclio"}]
                },
            },
            "triggers": {
                "myHttpTrigger": {
                    "kind": "http",
                    "maxWorkers": 1,
                    "workerAvailabilityTimeoutMilliseconds": 10000,
                    "attributes": {"maxRequestBodySize": MAX_REQUEST_BYTES},
                }
            },
            "platform": {
                "attributes": {"restartPolicy": {"name": "always", "maximumRetryCount": 3}, "mountMode": "volume"}
            },
        },
    }


def _copy_model(files: Path, target: Path) -> list[str]:
    """Copy into ``target`` the model's files that serving reads, their names: every file but archives
    and the weights it does not load (the final ``model_<host>`` beside ``model_best.params``)."""
    weights = weights_file(files)
    target.mkdir()
    copied = []
    for source in sorted(files.iterdir()):
        spare_weights = source.name.startswith(paths.HOST_MODEL_PREFIX) and source.suffix not in (".json", ".onnx")
        if not source.is_file() or source.name.endswith((".tar.gz", ".tgz")) or (spare_weights and source != weights):
            continue
        shutil.copy2(source, target / source.name)
        copied.append(source.name)
    return copied


def write_function(model: Path, output: Path, name: str | None = None, base_image: str = DEFAULT_BASE_IMAGE) -> Path:
    """Write the function folder ``output`` for ``model`` (a model directory, a model.tar.gz or a job root)."""
    model, output = model_to_serve(Path(model)), Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"{output} already exists and is not an empty folder; give a new folder for the function")
    if not base_image.strip() or any(character.isspace() for character in base_image):
        raise UserError(f"The base image '{shown(base_image)}' is not an image name such as semseg:cpu")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="semseg-model-") as scratch:
        files = unpack_model_dir(model, Path(scratch))
        hp = read_hyperparameters(files)
        table = classes.load(files, hp["num_classes"])
        name = checked_name(name if name is not None else default_name(hp))
        config = function_config(hp, table, name, base_image)
        partial = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        try:
            with explained_write_failure(partial):
                copied = _copy_model(files, partial / MODEL_FOLDER)
                (partial / HANDLER_FILE).write_text(HANDLER)
                text = yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
                (partial / FUNCTION_FILE).write_text(text, encoding="utf-8")
            partial.chmod(0o755)  # mkdtemp's 0700 would keep the folder from others on the build host
            os.replace(partial, output)  # onto an empty folder too
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    labels = [label for _, label in labelled_classes(table)]
    log.info(
        "Wrote the nuclio function %s to %s: labels %s; model files %s; deploy it with "
        "nuctl deploy --project-name cvat --path %s",
        name,
        output,
        ", ".join(shown(label) for label in labels),
        ", ".join(copied),
        output,
    )
    return output


def main(args: argparse.Namespace) -> int:
    """``semseg cvat-function --model DIR --output FOLDER [--name NAME] [--base-image IMAGE]``."""
    write_function(Path(args.model), Path(args.output), args.name, args.base_image or DEFAULT_BASE_IMAGE)
    return 0
