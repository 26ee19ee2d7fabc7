"""``semseg predict``: batch prediction from a folder or S3 prefix to a folder or S3 prefix.

Each image becomes one answer with the same base name and the extension of ``--accept`` (a PNG
mask by default; two inputs that would share an answer keep their own extensions in its name),
through a running server (``--url``), a SageMaker endpoint (``--endpoint``, boto3
``sagemaker-runtime`` ``invoke_endpoint``: its region, credentials and ``AWS_ENDPOINT_URL`` are
boto3's) or this process (``--model``). Requests run concurrently; outputs already there are
skipped, so a rerun resumes; one bad file is listed with its reason and never stops the batch.
Names from the input folder or prefix become output paths only once checked (``names``), and
every flag is checked before anything is listed, loaded or written. ``--format cvat`` writes one
CVAT zip instead (``cvat_predictions``).
"""

from __future__ import annotations

import logging
import mimetypes
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .. import names as outside
from ..errors import UserError, one_line
from ..inference import codecs
from ..inference.settings import DEFAULT_ACCEPT
from .s3 import MAX_POOL_CONNECTIONS, S3Location, client, list_objects, parse_uri, read_object, write_object

if TYPE_CHECKING:
    from ..inference.predictor import Predictor

log = logging.getLogger("semseg")

TIMEOUT_S = 120
# More requests in flight than the S3 client keeps connections would only queue for one.
MAX_CONCURRENCY = MAX_POOL_CONNECTIONS

Invoke = Callable[[bytes, str], bytes]


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """The batch decided before any model is loaded: each input name and the output name it gets."""

    todo: list[tuple[str, str]]
    skipped: int


def _prefix(key: str) -> str:
    return key if key.endswith("/") or not key else key + "/"


def listed_names(location: S3Location) -> list[str]:
    """Relative names of the files under ``location`` (hidden local files left out)."""
    if location.is_local:
        root = location.local
        if not root.is_dir():
            return []
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    prefix = _prefix(location.key)
    return [o.key[len(prefix) :] for o in list_objects(S3Location(location.bucket, prefix))]


def output_names(inputs: list[str], accept: str) -> dict[str, str]:
    """Each input's output: its name with the answer type's extension instead of its own. Where two
    inputs would share one output (``dup.jpg`` and ``dup.png``), each keeps its own extension in
    front (``dup.jpg.png``, ``dup.png.png``), so no answer overwrites another."""
    extension = codecs.CONTENT_TYPES[accept].extension
    plain = {name: str(PurePosixPath(name).with_suffix(extension)) for name in inputs}
    shared = Counter(plain.values())
    outputs = {name: output if shared[output] == 1 else name + extension for name, output in plain.items()}
    clashing = [name for name, count in Counter(outputs.values()).items() if count > 1]
    if clashing:
        first = sorted(name for name, output in outputs.items() if output == clashing[0])
        raise UserError(
            f"The inputs {', '.join(repr(outside.shown(n)) for n in first)} would all be answered in "
            f"'{outside.shown(clashing[0])}'; rename one"
        )
    return outputs


def refuse_overlap(source: S3Location, target: S3Location) -> None:
    """An output folder inside (or equal to) the input folder would make every rerun segment the
    masks of the run before, and count inputs as answers already there."""
    if source.is_local and target.is_local:
        inside = source.local.resolve() in (target.local.resolve(), *target.local.resolve().parents)
    elif not source.is_local and not target.is_local:
        inside = source.bucket == target.bucket and _prefix(target.key).startswith(_prefix(source.key))
    else:
        inside = False
    if inside:
        raise UserError(
            f"--output {target.uri} is inside --input {source.uri}; give an output folder outside the input"
        )


def checked_inputs(source: S3Location) -> list[str]:
    """The names of the files under ``source``, each checked as a relative path; none is a sentence."""
    inputs = listed_names(source)
    if not inputs:
        raise UserError(f"There are no files under {source.uri}")
    outside.relative_paths(inputs, f"file name under {source.uri}")
    return inputs


def plan(source: S3Location, target: S3Location, accept: str) -> Plan:
    """The inputs to answer, each checked as a name, and the outputs they get; nothing written yet."""
    refuse_overlap(source, target)
    inputs = checked_inputs(source)
    outputs = output_names(inputs, accept)
    outside.relative_paths(outputs.values(), f"output name under {target.uri}")
    existing = set(listed_names(target))
    todo = [(name, output) for name, output in outputs.items() if output not in existing]
    return Plan(todo, len(inputs) - len(todo))


def content_type_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/x-image"


def via_url(url: str, accept: str) -> Invoke:
    import requests

    session = threading.local()

    def invoke(body: bytes, content_type: str) -> bytes:
        if not hasattr(session, "http"):
            session.http = requests.Session()
        answer = session.http.post(
            url.rstrip("/") + "/invocations",
            data=body,
            headers={"Content-Type": content_type, "Accept": accept},
            timeout=TIMEOUT_S,
        )
        if answer.status_code != 200:
            try:
                reason = answer.json().get("error") or answer.text
            except ValueError:
                reason = answer.text.strip() or answer.reason
            raise UserError(f"HTTP {answer.status_code}: {reason}")
        return answer.content

    return invoke


def via_endpoint(name: str, accept: str) -> Invoke:
    runtime = client("sagemaker-runtime")

    def invoke(body: bytes, content_type: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = runtime.invoke_endpoint(EndpointName=name, ContentType=content_type, Accept=accept, Body=body)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise UserError(f"the endpoint {name} answered {error.get('Code')}: {error.get('Message')}") from None
        except BotoCoreError as exc:
            raise UserError(f"the endpoint {name} could not be reached ({one_line(exc)})") from None
        return answer["Body"].read()

    return invoke


def load_predictor(model: Path) -> Predictor:
    """The model in this process; ``model`` is what ``semseg serve --model`` takes."""
    from ..inference.predictor import Predictor
    from ..inference.settings import ServingSettings
    from ..model.artifacts import model_to_serve

    return Predictor.from_model_dir(model_to_serve(model), ServingSettings())


def in_process(predictor: Predictor, accept: str) -> Invoke:
    """``predictor``'s answers, encoded as ``/invocations`` encodes them."""

    def invoke(body: bytes, content_type: str) -> bytes:
        return b"".join(codecs.invoke(predictor, body, content_type, accept, DEFAULT_ACCEPT).chunks)

    return invoke


def answer_each(names: list[tuple[str, str]], one: Callable[[str, str], None], concurrency: int) -> BatchSummary:
    """``one(*pair)`` for every pair of ``names`` (an input's name first), ``concurrency`` at a time; the
    summary counts exactly the calls that returned."""
    from tqdm import tqdm

    summary = BatchSummary()
    with ThreadPoolExecutor(concurrency) as pool, tqdm(total=len(names), unit="file", file=sys.stderr) as bar:
        futures = {pool.submit(one, *pair): pair[0] for pair in names}
        for future in as_completed(futures):
            try:
                future.result()
                summary.done += 1
            except Exception as exc:  # one bad file is reported, never the end of the batch
                summary.failures[futures[future]] = str(exc) if isinstance(exc, UserError) else one_line(exc)
            bar.update()
    return summary


def run_batch(source: S3Location, target: S3Location, batch: Plan, invoke: Invoke, concurrency: int) -> BatchSummary:
    """Answer every input of ``batch``; the summary counts exactly the answers written."""

    def one(name: str, output: str) -> None:
        body = read_object(source.child(name))
        write_object(target.child(output), invoke(body, content_type_of(name)))

    summary = answer_each(batch.todo, one, concurrency)
    summary.skipped = batch.skipped
    return summary


def print_failures(summary: BatchSummary) -> None:
    for name, reason in sorted(summary.failures.items()):
        print(f"FAILED {outside.shown(name)}: {outside.shown(reason)}", flush=True)


def _checked_flags(args) -> str:
    """The answer type, once every flag is known good: nothing is listed or loaded before."""
    if sum(bool(x) for x in (args.url, args.endpoint, args.model)) != 1:
        raise UserError("Give exactly one of --url, --endpoint and --model")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise UserError(f"--concurrency is {args.concurrency}; give 1 to {MAX_CONCURRENCY} requests in flight")
    if args.format == "cvat" and args.accept:
        raise UserError("--accept does not go with --format cvat, whose zip holds PNG masks")
    return codecs.response_type(args.accept, DEFAULT_ACCEPT)


def main(args) -> int:
    """The ``semseg predict`` command: 0 when every file has its answer, 1 when some failed."""
    accept = _checked_flags(args)
    source, target = parse_uri(args.input, "--input"), parse_uri(args.output, "--output")
    if args.format == "cvat":
        from .cvat_predictions import predict_to_zip

        return predict_to_zip(args, source, target)
    batch = plan(source, target, accept)
    if args.url:
        invoke = via_url(args.url, accept)
    elif args.endpoint:
        invoke = via_endpoint(args.endpoint, accept)
    else:
        invoke = in_process(load_predictor(Path(args.model)), accept)
    summary = run_batch(source, target, batch, invoke, args.concurrency)
    print(f"{summary.done} predicted, {summary.skipped} already there, {len(summary.failures)} failed", flush=True)
    print_failures(summary)
    return 1 if summary.failures else 0
