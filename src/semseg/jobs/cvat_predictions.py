"""``semseg predict --format cvat``: a folder or S3 prefix of images segmented into one CVAT
"Segmentation mask 1.1" zip (``data.dataset_channel.cvat_zip``), which CVAT imports as annotations of
the same images and the ``dataset`` channel trains on.

Each image is named in the zip by its name under ``--input`` without its extension, sub-folders kept,
as CVAT names the frames of a task made from those files; two inputs with one such name are refused
before anything is loaded. The answers are PNG masks (pixel values are class ids) from any of
``predict``'s three sources; the class table comes with them: the predictor's own (``--model``), the
server's ``GET /classes`` (``--url``), or, since SageMaker routes only ``/invocations`` to an endpoint
(``--endpoint``), two answers for a small blank image: the JSON one names the classes, the PNG one's
palette holds their colours (the model's, or the PASCAL VOC colours of a model without them).

The zip is written whole on every run, under a temporary name renamed once complete; a bad image is
reported and left out (exit code 1), and when no image at all is answered nothing is written.
"""

from __future__ import annotations

import io
import json
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from .. import classes
from .. import names as outside
from ..classes import ClassTable
from ..data.dataset_channel import cvat_zip
from ..data.dataset_channel.layouts import DEFAULT_SUBSET, LISTS
from ..data.dataset_channel.prepare import MAX_MASK_PIXELS
from ..data.images import MASK_MODES, open_image, upright_size
from ..errors import UserError, one_line
from . import predict
from .s3 import S3Location, read_object

PNG = "image/png"
PROBE_SIDE = 32  # the blank image whose answers tell an endpoint's classes


def zip_names(inputs: list[str], source: str) -> dict[str, str]:
    """Each input's image name in the zip: its name without the extension. Two inputs with one name,
    and names that a line of the ImageSets list cannot hold as they are, are refused in one sentence."""
    found: dict[str, str] = {}
    for name in inputs:
        stem = str(PurePosixPath(name).with_suffix(""))
        if stem != stem.strip() or "\\" in name:
            raise UserError(
                f"The file name '{outside.shown(name)}' under {source} holds a backslash or, without its extension, "
                f"begins or ends with a space, which a line of {LISTS}{DEFAULT_SUBSET}.txt cannot hold; rename it"
            )
        if stem in found:
            raise UserError(
                f"The inputs '{outside.shown(found[stem])}' and '{outside.shown(name)}' would both be the image "
                f"'{outside.shown(stem)}' of the CVAT zip, whose names have no extension; rename one"
            )
        found[stem] = name
    return {name: stem for stem, name in found.items()}


def checked_target(source: S3Location, target: S3Location) -> Path:
    if not target.is_local or target.local.suffix.lower() != ".zip" or target.local.is_dir():
        raise UserError(
            f"--format cvat writes one zip: give --output a local file name ending in .zip, not {target.uri}"
        )
    predict.refuse_overlap(source, target)
    return target.local


def table_via_url(url: str) -> ClassTable:
    """The class table of the server at ``url``: its ``GET /classes``."""
    import requests

    where = f"{outside.shown(url.rstrip('/'))}/classes"
    try:
        answer = requests.get(url.rstrip("/") + "/classes", timeout=predict.TIMEOUT_S)
    except requests.RequestException as exc:
        raise UserError(f"{where} could not be reached ({one_line(exc)})") from None
    if answer.status_code != 200:
        raise UserError(f"{where} answered HTTP {answer.status_code}; --format cvat needs the server's class table")
    return classes.from_text(answer.content, where)


def table_via_endpoint(name: str) -> ClassTable:
    """The class table of an endpoint, from its JSON and PNG answers for one small blank image."""
    buffer = io.BytesIO()
    Image.new("RGB", (PROBE_SIDE, PROBE_SIDE), (128, 128, 128)).save(buffer, format="JPEG")
    probe, source = buffer.getvalue(), f"the endpoint {outside.shown(name)}"
    try:
        names = json.loads(predict.via_endpoint(name, "application/json")(probe, "image/jpeg"))["classes"]
        with Image.open(io.BytesIO(predict.via_endpoint(name, PNG)(probe, "image/jpeg"))) as mask:
            palette = mask.getpalette() or []
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise UserError(f"{source} gave no class table for --format cvat ({one_line(exc)})") from None
    named = isinstance(names, list) and all(isinstance(name, str) and name for name in names)
    if not named or len(palette) < 3 * len(names):
        raise UserError(f"{source} gave no class table for --format cvat: its answers name no classes with colours")
    colours = [tuple(palette[3 * i : 3 * i + 3]) for i in range(len(names))]
    return classes.checked(names, colours, source)


def class_ids(answer: bytes, image: bytes) -> np.ndarray:
    """The class ids of a PNG answer, once it is a one-channel mask of the image's (upright) size."""
    try:
        with open_image(image) as picture:
            size = upright_size(picture)
        with open_image(answer, max_pixels=MAX_MASK_PIXELS) as mask:
            if mask.format != "PNG" or mask.mode not in MASK_MODES:
                raise UserError(f"the answer is not a PNG of class ids ({mask.format} of mode {mask.mode})")
            if mask.size != size:
                raise UserError(f"the answer is {mask.size[0]}x{mask.size[1]}, the image {size[0]}x{size[1]}")
            return np.asarray(mask, dtype=np.uint8)
    except UserError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UserError(f"the image or its answer could not be decoded ({one_line(exc)})") from None


def predict_to_zip(args, source: S3Location, target: S3Location) -> int:
    """``semseg predict --format cvat``, its flags checked by ``predict``: 0 when every image is in the zip."""
    path = checked_target(source, target)
    named = zip_names(predict.checked_inputs(source), source.uri)
    if args.url:
        table, invoke = table_via_url(args.url), predict.via_url(args.url, PNG)
    elif args.endpoint:
        table, invoke = table_via_endpoint(args.endpoint), predict.via_endpoint(args.endpoint, PNG)
    else:
        predictor = predict.load_predictor(Path(args.model))
        table, invoke = predictor.classes, predict.in_process(predictor, PNG)

    def fill(writer: cvat_zip.Writer) -> predict.BatchSummary:
        def one(name: str, zip_name: str) -> None:
            body = read_object(source.child(name))
            ids = class_ids(invoke(body, predict.content_type_of(name)), body)
            writer.add(zip_name, ids, body, PurePosixPath(name).suffix)

        summary = predict.answer_each(sorted(named.items()), one, args.concurrency)
        if not summary.done:
            raise _NothingAnswered(summary)
        return summary

    try:
        summary = cvat_zip.write(path, table, "the model's class table", fill)
        print(f"{summary.done} predicted into {path} (CVAT Segmentation mask 1.1), {len(summary.failures)} failed")
    except _NothingAnswered as nothing:
        summary = nothing.summary
        print(f"0 predicted, {len(summary.failures)} failed: nothing written", flush=True)
    predict.print_failures(summary)
    return 1 if summary.failures else 0


class _NothingAnswered(Exception):
    """No image was answered: the zip is not written (``write_atomically`` removes its temporary file)."""

    def __init__(self, summary: predict.BatchSummary):
        super().__init__("no image was answered")
        self.summary = summary
