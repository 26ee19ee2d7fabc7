"""A stand-in HTTP server on 127.0.0.1 for the ``semseg predict`` tests, and ``semseg predict`` itself.

The tests that need a server answering ``/invocations`` without a model (a fixed answer, a chosen
failure) give ``serving`` their own request handler; ``predict`` runs the installed command.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.s3jobs import SEMSEG


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` answering on a free loopback port; yields the server's URL, stopped afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def predict(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``semseg predict ARGS``, its output captured."""
    return subprocess.run([SEMSEG, "predict", *args], capture_output=True, text=True, timeout=timeout, env=env)
