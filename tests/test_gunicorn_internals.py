"""The parts of gunicorn's ``gthread`` worker that ``serve/worker.py`` builds on, as it expects them.

``BufferingWorker`` overrides gthread's accept path and reaches into its state (the poller, the
connection counters, the keep-alive queue, ``TConn``'s parser and socket). None of it is public
API, so an upgrade could change it silently; these checks fail first, naming what moved.
"""

from __future__ import annotations

import inspect
import os
import socket
from importlib.metadata import version

import pytest
from gunicorn.config import Config
from gunicorn.workers.gthread import TConn, ThreadWorker

from serve.worker import BufferingWorker

# gthread's methods the worker overrides or calls, with the parameters it passes.
METHODS = {
    "accept": ["self", "listener"],
    "on_client_socket_readable": ["self", "conn", "client"],
    "murder_pending": ["self"],
    "enqueue_req": ["self", "conn"],
    "handle": ["self", "conn"],
    "finish_request": ["self", "conn", "fs"],
}
# State the worker reads or changes, set by gthread's constructor.
ATTRIBUTES = ("cfg", "log", "nr_conns", "keepalived_conns", "poller", "tpool", "alive")


class _QuietLog:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def test_gunicorn_is_the_tested_release():
    assert version("gunicorn").split(".")[0] == "27", "serve/worker.py was checked against gunicorn 27"


@pytest.mark.parametrize("name, parameters", METHODS.items())
def test_each_gthread_method_the_worker_uses_has_the_expected_signature(name, parameters):
    assert list(inspect.signature(getattr(ThreadWorker, name)).parameters) == parameters


def test_the_worker_overrides_only_methods_gthread_has():
    own = {name for name, value in vars(BufferingWorker).items() if callable(value) and not name.startswith("_")}
    assert own - set(dir(ThreadWorker)) == set()


def test_gthread_sets_the_state_the_worker_reads():
    worker = ThreadWorker(0, os.getpid(), [], None, 30, Config(), _QuietLog())
    missing = [name for name in ATTRIBUTES if not hasattr(worker, name)]
    assert missing == []
    assert worker.nr_conns == 0 and len(worker.keepalived_conns) == 0
    assert "self.poller" in inspect.getsource(ThreadWorker.init_process)  # made there, used by the overrides


def test_a_connection_takes_back_buffered_bytes_through_its_parser():
    ours, theirs = socket.socketpair()
    try:
        conn = TConn(Config(), ours, ("127.0.0.1", 1), ("127.0.0.1", 8080))
        assert list(inspect.signature(TConn.__init__).parameters) == ["self", "cfg", "sock", "client", "server"]
        conn.init()
        conn.parser.unreader.unread(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        request = next(conn.parser)
        assert (request.method, request.path) == ("GET", "/ping")
        assert hasattr(conn, "data_ready") and conn.sock is ours and conn.client == ("127.0.0.1", 1)
    finally:
        ours.close()
        theirs.close()
