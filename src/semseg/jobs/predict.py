"""``semseg predict``: batch prediction from a folder or S3 prefix to a folder or S3 prefix.

Each image becomes one answer with the same base name and the extension of ``--accept`` (a PNG
mask by default), through a running server (``--url``), a SageMaker endpoint (``--endpoint``, boto3
``sagemaker-runtime`` ``invoke_endpoint``: its region, credentials and ``AWS_ENDPOINT_URL`` are
boto3's) or this process (``--model``). Requests run concurrently; outputs already there are
skipped, so a rerun resumes; one bad file is listed with its reason and never stops the batch.
"""

from __future__ import annotations

import logging
import mimetypes
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, one_line
from .s3 import S3Location, client, list_objects, parse_uri, read_object, write_object

log = logging.getLogger("semseg")

EXTENSIONS = {"image/png": ".png", "application/json": ".json", "application/x-recordio-protobuf": ".pb"}
TIMEOUT_S = 120

Invoke = Callable[[bytes, str], bytes]


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)


def _names(location: S3Location) -> list[str]:
    """Relative names of the files under ``location`` (hidden local files left out)."""
    if location.is_local:
        root = location.local
        if not root.is_dir():
            return []
        return sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
    prefix = location.key if location.key.endswith("/") or not location.key else location.key + "/"
    return [o.key[len(prefix) :] for o in list_objects(S3Location(location.bucket, prefix))]


def output_name(name: str, accept: str) -> str:
    return str(Path(name).with_suffix(EXTENSIONS.get(accept, ".out")))


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


def in_process(model_dir: Path, accept: str) -> Invoke:
    from ..inference import codecs
    from ..inference.predictor import Predictor
    from ..inference.settings import ServingSettings

    settings = ServingSettings()
    predictor = Predictor.from_model_dir(model_dir, settings)

    def invoke(body: bytes, content_type: str) -> bytes:
        return b"".join(codecs.invoke(predictor, body, content_type, accept, settings.default_accept).chunks)

    return invoke


def run_batch(source: S3Location, target: S3Location, invoke: Invoke, accept: str, concurrency: int) -> BatchSummary:
    from tqdm import tqdm

    names = _names(source)
    if not names:
        raise UserError(f"There are no files under {source.uri}")
    existing = set(_names(target))
    summary = BatchSummary()
    todo = [n for n in names if output_name(n, accept) not in existing]
    summary.skipped = len(names) - len(todo)

    def one(name: str) -> None:
        body = read_object(source.child(name))
        write_object(target.child(output_name(name, accept)), invoke(body, content_type_of(name)))

    with ThreadPoolExecutor(concurrency) as pool, tqdm(total=len(todo), unit="file", file=sys.stderr) as bar:
        futures = {pool.submit(one, name): name for name in todo}
        for future in as_completed(futures):
            try:
                future.result()
                summary.done += 1
            except Exception as exc:  # one bad file is reported, never the end of the batch
                summary.failures[futures[future]] = str(exc) if isinstance(exc, UserError) else one_line(exc)
            bar.update()
    return summary


def main(args) -> int:
    """The ``semseg predict`` command: 0 when every file has its answer, 1 when some failed."""
    accept = args.accept
    if sum(bool(x) for x in (args.url, args.endpoint, args.model)) != 1:
        raise UserError("Give exactly one of --url, --endpoint and --model")
    if args.url:
        invoke = via_url(args.url, accept)
    elif args.endpoint:
        invoke = via_endpoint(args.endpoint, accept)
    else:
        invoke = in_process(Path(args.model), accept)
    source, target = parse_uri(args.input, "--input"), parse_uri(args.output, "--output")
    summary = run_batch(source, target, invoke, accept, args.concurrency)
    print(f"{summary.done} predicted, {summary.skipped} already there, {len(summary.failures)} failed", flush=True)
    for name, reason in sorted(summary.failures.items()):
        print(f"FAILED {name}: {reason}", flush=True)
    return 1 if summary.failures else 0
