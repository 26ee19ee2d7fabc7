"""Serving a model from S3 outside SageMaker: ``SEMSEG_MODEL_URI`` fetched and unpacked at start.

SageMaker unpacks ``ModelDataUrl`` into /opt/ml/model before the container starts; on ECS,
Kubernetes or a plain VM nobody does, so ``serve`` does it once, before any worker loads the model,
when the model directory is empty and ``SEMSEG_MODEL_URI`` names an ``s3://`` object or a local
tarball. The archive checks of ``semseg.archives`` apply (no absolute paths, ``..`` or links; a
size cap). Meanwhile a placeholder answers every request with 503 on the serving socket, which is
then handed to gunicorn as it is (systemd's socket-passing convention, which gunicorn reads), so a
health check never meets a closed port between the two.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from semseg.archives import extract_archive
from semseg.errors import UserError
from semseg.jobs.s3 import S3Location, any_object_under, object_exists, parse_uri
from semseg.jobs.transfer import download, make_own_folder, remove_own_folder
from semseg.names import relative_path, shown

log = logging.getLogger("semseg")

MODEL_URI_VARIABLE = "SEMSEG_MODEL_URI"
PASSED_FD = 3  # systemd's SD_LISTEN_FDS_START: the first socket a started program inherits


def wanted(model_dir: Path) -> str | None:
    """The URI to fetch: set, and the model directory empty (a mounted model always wins)."""
    uri = os.environ.get(MODEL_URI_VARIABLE, "").strip()
    if not uri:
        return None
    if model_dir.is_dir() and any(model_dir.iterdir()):
        log.info("%s is set but %s already holds a model: serving that one", MODEL_URI_VARIABLE, model_dir)
        return None
    return uri


def _not_the_folder(folder: S3Location) -> UserError:
    return UserError(f"{MODEL_URI_VARIABLE} must name the model.tar.gz object, not the folder {shown(folder.uri)}")


def check_names_an_object(source: S3Location) -> None:
    """Before anything is downloaded: ``source`` is one object, never a bucket or a folder, whose
    every object would be fetched only for the unpacking to fail on a directory."""
    if not source.key or source.key.endswith("/"):
        raise _not_the_folder(source)
    if object_exists(source):
        return
    folder = source.child("")
    if any_object_under(folder):
        raise _not_the_folder(folder)
    raise UserError(f"There are no objects under {shown(source.uri)}")  # the sentence of any download


def fetch(uri: str, model_dir: Path) -> None:
    """Unpack the model archive at ``uri`` into ``model_dir``; whole or not at all."""
    source = parse_uri(uri, MODEL_URI_VARIABLE)
    if source.is_local and not source.local.is_file():
        raise UserError(f"{MODEL_URI_VARIABLE} names {shown(source.local)}, which is not a file")
    if not source.is_local:
        check_names_an_object(source)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = make_own_folder(model_dir.parent / f".{model_dir.name}.fetch")
    try:
        if source.is_local:
            archive = source.local
        else:
            download(source, scratch / "archive", scratch / "staging", label="model")
            archive = scratch / "archive" / relative_path(source.key, MODEL_URI_VARIABLE).name
        unpacked = scratch / "model"
        unpacked.mkdir(parents=True)
        extract_archive(archive, unpacked)
        model_dir.mkdir(parents=True, exist_ok=True)
        for path in unpacked.iterdir():
            os.replace(path, model_dir / path.name)
        log.info("Unpacked the model from %s into %s", shown(source.uri), model_dir)
    finally:
        remove_own_folder(scratch)


class _NotReady(BaseHTTPRequestHandler):
    message = "The model is being fetched"

    def _answer(self) -> None:
        body = json.dumps({"error": self.message}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Retry-After", "5")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def placeholder(host: str, port: int, message: str) -> Iterator[socket.socket]:
    """Listen on ``host:port`` (the address gunicorn will serve on) answering 503 with ``message`` until
    the block ends; yields the socket, still open."""
    handler = type("NotReady", (_NotReady,), {"message": message})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server_class = type("PlaceholderServer", (ThreadingHTTPServer,), {"address_family": family})
    server = server_class((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server.socket
    finally:
        server.shutdown()  # stops answering; the socket stays open and keeps queueing connections
        thread.join()


def pass_to_gunicorn(listener: socket.socket) -> None:
    """Have the program this process execs next (gunicorn) serve on ``listener``, already bound."""
    if listener.fileno() != PASSED_FD:
        os.dup2(listener.fileno(), PASSED_FD)
    listener.detach()  # no garbage collection may close it before the exec
    os.set_inheritable(PASSED_FD, True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())  # exec keeps the process id


def fetch_while_answering_503(uri: str, model_dir: Path, host: str, port: int) -> None:
    """``fetch`` with the placeholder on ``host:port``; the socket is passed on for gunicorn to take over."""
    with placeholder(host, port, f"The model is being fetched from {uri}") as listener:
        fetch(uri, model_dir)
        pass_to_gunicorn(listener)
