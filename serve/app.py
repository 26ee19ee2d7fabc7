"""The Flask app: routes, content negotiation and errors, nothing about images or models.

Each gunicorn worker calls ``create_app()`` once: it loads and warms up the model before the
worker accepts its first connection, so ``/ping`` answers 200 only from a worker that can
predict. A model that cannot be loaded leaves the server up with ``/ping`` answering 503 and the
reason in the log and in the body, which is where an operator looks first. Tests pass their own
``settings`` and ``predictor`` to build the app without gunicorn or a model directory.

Beyond SageMaker's routes (which routes only ``/ping`` and ``/invocations`` to a container), ``GET /``
is an inference page for local and ``docker run`` use, ``GET /classes`` the model's class names
and colours, which the page's legend shows, and ``GET /models`` the models served.

A model directory of several models (``semseg.inference.repository``) is served by name: a request
picks its model with SageMaker's ``X-Amzn-SageMaker-Target-Model`` header (``/classes`` also takes
``?model=``), the default model answers the others, and only the default is loaded before the first
request.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import time
from pathlib import Path

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from semseg import logs, paths
from semseg import names as outside
from semseg.errors import PayloadTooLarge, UserError
from semseg.inference import codecs, cvat_detector
from semseg.inference import settings as serving_settings
from semseg.inference.predictor import Predictor
from semseg.inference.repository import TARGET_MODEL_HEADER, ModelRepository, find_models

from . import metrics, responses

log = logging.getLogger("semseg.serve")

_HTTP_SENTENCES = {
    404: "There is no such path; this server answers GET /ping, POST /invocations, GET /execution-parameters, "
    "GET /classes, GET /models, GET /metrics, POST /cvat/detector and GET / (the inference page)",
    405: "That method is not allowed on this path; use POST for /invocations and /cvat/detector and GET for the others",
}
PAGE = (Path(__file__).parent / "page.html").read_bytes()
_INLINE_CODE = re.compile(rb"<(script|style)\b[^>]*>(.*?)</\1>", re.DOTALL)


def inline_hashes(page: bytes, tag: bytes) -> str:
    """The CSP sources that allow exactly the page's inline ``<script>`` (or ``<style>``) texts:
    one ``'sha256-...'`` each, taken from the page itself so they cannot go stale. The browser
    hashes the text after turning CR LF and CR into LF, so this does too."""
    texts = [text for found, text in _INLINE_CODE.findall(page) if found == tag]
    digests = (hashlib.sha256(text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")).digest() for text in texts)
    return " ".join(f"'sha256-{base64.b64encode(digest).decode()}'" for digest in digests) or "'none'"


# The page has its script and style inline and may reach nothing but this server: it works offline.
# Only its own inline code runs: an injected script or style, whatever its way in, does not.
PAGE_POLICY = (
    f"default-src 'none'; script-src {inline_hashes(PAGE, b'script')}; style-src {inline_hashes(PAGE, b'style')}; "
    "img-src blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_READ_BYTES = 1 << 20
MODEL_HEADER = "X-Semseg-Model"  # on every prediction: the name of the model that made it


def _error(message: str, status: int) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def _load(settings) -> tuple[ModelRepository | None, str | None]:
    """The worker's models, with the default one loaded and warmed up; or why there are none."""
    log.info("Worker process %d takes slot %d", os.getpid(), settings.worker_slot)
    try:
        models = find_models(settings.model_dir or paths.model_dir())
        repository = ModelRepository(
            models, settings, settings.default_model, on_load=metrics.model_loaded, on_unload=metrics.model_unloaded
        )
        repository.get(repository.default)
        return repository, None
    except UserError as exc:  # the repository logged a load failure with its reason already
        message = str(exc) if "could not be loaded" in str(exc) else f"The model could not be loaded: {exc}"
        log.error("%s", message)
        return None, message


class ServerNotReady(UserError):
    http_status = 503


def _too_large(settings) -> PayloadTooLarge:
    return PayloadTooLarge(responses.too_large(settings))


def read_body(settings) -> bytes:
    """The whole request body, refused with 413 as soon as it passes the payload limit.

    Read from the WSGI stream itself, which the server ends at the Content-Length or at the last
    chunk: Werkzeug's own limit would silently cut a chunked body at the limit. A body whose
    framing is broken (a bad chunk size, a connection that ends early) is the client's error.
    """
    limit = settings.max_payload_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(settings)
    stream, pieces, received = request.environ["wsgi.input"], [], 0
    try:
        while received <= limit:
            piece = stream.read(min(_READ_BYTES, limit + 1 - received))
            if not piece:
                break
            pieces.append(piece)
            received += len(piece)
    except Exception as exc:  # gunicorn's parse errors, resets and timeouts: all about the client's bytes
        log.info("Could not read a request body: %s: %s", type(exc).__name__, exc)
        raise UserError(
            "The request body could not be read: its chunked encoding is malformed or the connection ended early"
        ) from None
    if received > limit:
        raise _too_large(settings)
    return b"".join(pieces)


def create_app(
    settings: serving_settings.ServingSettings | None = None,
    predictor: Predictor | None = None,
    repository: ModelRepository | None = None,
) -> Flask:
    """The app; ``settings`` default to the environment's, the models to those of the model directory
    (/opt/ml/model); a test passes one ``predictor`` or a ``repository``."""
    logs.setup_logging()
    app = Flask("serve")
    load_error = None
    if settings is None:
        try:
            settings = serving_settings.from_environment()
        except UserError as exc:
            log.error("%s", exc)
            settings, load_error = serving_settings.ServingSettings(), str(exc)
    if predictor is not None:
        repository = ModelRepository(
            {"model": Path("model")}, settings, loader=lambda path, settings: predictor, on_load=metrics.model_loaded
        )
    if repository is None and load_error is None:
        repository, load_error = _load(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    workers = settings.workers or 1
    figures = metrics.PredictionFigures(settings.drift_window)
    if settings.worker_slot == 0 and settings.metrics_log_interval_s and metrics.multiprocess_dir():
        metrics.start_summary_log(settings.metrics_log_interval_s)  # one line for the server, from its first worker

    def chosen_model(requested: str | None = None) -> tuple[str, Predictor]:
        """The model the request names (its header, else ``requested``, else the default) and its predictor."""
        if repository is None:
            raise ServerNotReady(load_error)
        name = repository.resolve(request.headers.get(TARGET_MODEL_HEADER) or requested)
        return name, repository.get(name)

    @app.get("/ping")
    def ping():
        if repository is None:
            return _error(load_error, 503)
        return Response(status=200)

    @app.get("/models")
    def models():
        if repository is None:
            return _error(load_error, 503)
        return jsonify(
            models=[status.to_json() for status in repository.status()],
            default=repository.default,
            max_loaded=repository.max_loaded,
        )

    @app.get("/execution-parameters")
    def execution_parameters():
        return jsonify(
            MaxConcurrentTransforms=max(1, min(workers, 100 // settings.max_payload_mb)),
            BatchStrategy="MULTI_RECORD",
            MaxPayloadInMB=settings.max_payload_mb,
        )

    @app.get("/")
    def page():
        response = Response(PAGE, content_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = PAGE_POLICY
        return response

    @app.get("/classes")
    def class_table():
        return jsonify(chosen_model(request.args.get("model"))[1].classes.to_json())

    @app.get("/metrics")
    def figures_page():
        return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)

    @app.post("/invocations")
    def invocations():
        name, predictor = chosen_model()
        started = time.perf_counter()
        body = read_body(settings)
        media = codecs.negotiate(
            request.headers.get("Content-Type"), request.headers.get("Accept"), settings.default_accept
        )
        metrics.REQUEST_BYTES.observe(len(body))
        timings: dict[str, float] = {}
        prediction = predictor.predict(body, timings)
        figures.observe(name, predictor, prediction)
        encoding = time.perf_counter()
        encoded = codecs.encode(prediction, media)
        timings["encode"] = time.perf_counter() - encoding
        for stage, seconds in timings.items():
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)
        response = Response(encoded.chunks, content_type=encoded.content_type, direct_passthrough=True)
        response.content_length = encoded.length
        # The time spent predicting and encoding, so a client can tell it from network and queueing time.
        response.headers["Server-Timing"] = f"invoke;dur={(time.perf_counter() - started) * 1000:.1f}"
        response.headers[MODEL_HEADER] = outside.shown(name)
        return response

    @app.post("/cvat/detector")
    def cvat_detector_route():
        """CVAT's automatic annotation calls a "detector" so: JSON in, a JSON list of mask shapes out."""
        return jsonify(cvat_detector.detector_answer(chosen_model()[1], read_body(settings)))

    @app.post("/endpoints/<endpoint_name>/invocations")
    def runtime_invocations(endpoint_name: str):
        """SageMaker runtime's route: boto3's invoke_endpoint, pointed at this server, is answered as /invocations."""
        return invocations()

    @app.before_request
    def count_in_flight() -> None:
        g.started = time.perf_counter()
        metrics.IN_FLIGHT.inc()

    @app.teardown_request
    def count_done(exc) -> None:
        if "started" in g:
            metrics.IN_FLIGHT.dec()

    @app.after_request
    def no_sniffing(response: Response) -> Response:
        """Every answer is of the type it says (JSON, PNG, protobuf, the page): no browser may guess another.
        Also where every answer is counted, by route, status and type."""
        response.headers["X-Content-Type-Options"] = "nosniff"
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(route, str(response.status_code), response.mimetype or "none").inc()
        if "started" in g:
            metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - g.started)
        return response

    @app.errorhandler(UserError)
    def user_error(exc: UserError):
        return _error(str(exc), exc.http_status)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        return _error(str(_too_large(settings)), 413)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _error(_HTTP_SENTENCES.get(exc.code, exc.description or exc.name), exc.code)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        log.exception("Internal error while answering %s %s", request.method, request.path)
        return _error("The server failed to answer this request; its log has the details", 500)

    return app
