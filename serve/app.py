"""The Flask app: routes, content negotiation and errors, nothing about images or models.

Each gunicorn worker calls ``create_app()`` once: it loads and warms up the model before the
worker accepts its first connection, so ``/ping`` answers 200 only from a worker that can
predict. A model that cannot be loaded leaves the server up with ``/ping`` answering 503 and the
reason in the log and in the body, which is where an operator looks first.
"""

from __future__ import annotations

import logging
import os
import time

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from semseg import logs, paths
from semseg.errors import UserError
from semseg.inference import codecs
from semseg.inference import settings as serving_settings
from semseg.inference.predictor import Predictor

log = logging.getLogger("semseg.serve")

_HTTP_SENTENCES = {
    404: "There is no such path; this server answers GET /ping, POST /invocations and GET /execution-parameters",
    405: "That method is not allowed on this path; use GET for /ping and /execution-parameters, POST for /invocations",
}


def _error(message: str, status: int) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def _load(settings) -> tuple[Predictor | None, str | None]:
    try:
        worker_index = int(os.environ.get("SEMSEG_WORKER_INDEX", "0"))
        return Predictor.from_model_dir(paths.model_dir(), settings, worker_index), None
    except UserError as exc:
        log.error("The model could not be loaded: %s", exc)
        return None, f"The model could not be loaded: {exc}"
    except Exception as exc:  # a bug, or a file MXNet could not read: the trace goes to the log only
        log.exception("The model could not be loaded")
        return None, f"The model could not be loaded ({type(exc).__name__}); the server log has the details"


def create_app() -> Flask:
    logs.setup_logging()
    app = Flask("serve")
    try:
        settings = serving_settings.from_environment()
    except UserError as exc:
        log.error("%s", exc)
        settings, predictor, load_error = serving_settings.ServingSettings(), None, str(exc)
    else:
        predictor, load_error = _load(settings)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    workers = settings.workers or 1

    @app.get("/ping")
    def ping():
        if predictor is None:
            return _error(load_error, 503)
        return Response(status=200)

    @app.get("/execution-parameters")
    def execution_parameters():
        return jsonify(
            MaxConcurrentTransforms=max(1, min(workers, 100 // settings.max_payload_mb)),
            BatchStrategy="MULTI_RECORD",
            MaxPayloadInMB=settings.max_payload_mb,
        )

    @app.post("/invocations")
    def invocations():
        if predictor is None:
            return _error(load_error, 503)
        started = time.perf_counter()
        encoded = codecs.invoke(
            predictor,
            request.get_data(),
            request.headers.get("Content-Type"),
            request.headers.get("Accept"),
            settings.default_accept,
        )
        response = Response(encoded.chunks, content_type=encoded.content_type, direct_passthrough=True)
        response.content_length = encoded.length
        # The time spent predicting and encoding, so a client can tell it from network and queueing time.
        response.headers["Server-Timing"] = f"invoke;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    @app.errorhandler(UserError)
    def user_error(exc: UserError):
        return _error(str(exc), exc.http_status)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        return _error(f"The request body is larger than the limit of {settings.max_payload_mb} MB", 413)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return _error(_HTTP_SENTENCES.get(exc.code, exc.description or exc.name), exc.code)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        log.exception("Internal error while answering %s %s", request.method, request.path)
        return _error("The server failed to answer this request; its log has the details", 500)

    return app
