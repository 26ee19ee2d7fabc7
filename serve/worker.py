"""A gunicorn worker that gives a thread only to a request it has received in full.

gunicorn's ``gthread`` worker hands a connection to a thread as soon as its first byte arrives;
the thread then reads the request line, headers and body from the socket itself. A client that
sends a few bytes a second holds that thread for as long as it likes, and a handful of them take
every thread, so ``/ping`` waits behind them (SageMaker restarts a container whose ``/ping`` does
not answer). This worker reads every request in its event loop instead, with non-blocking reads,
and hands the connection to the thread pool only once the head and the whole body are buffered
(as nginx does in front of an application server). Slow clients then cost a buffer each, never a
thread, and a request not received in full within ``client_timeout_s`` of its first byte (or of
the connection, for a new one) is answered 408 and closed. ``/ping`` (and the equally trivial
``/execution-parameters``) is answered by the event loop itself, so it never waits for a thread
either, however many predictions are queued.

The framing rules here only decide *when* a request is complete; gunicorn's own parser still
parses it. Whatever this module cannot frame (a malformed chunk size, an invalid Content-Length,
a head over the size limit) is handed on at once, so gunicorn and the app answer it with a 4xx.

A body over the payload limit (declared by Content-Length, or found while counting chunks) is
answered 413 from here as soon as that is known, and the rest of it is then read and discarded
until the client goes quiet, up to ``MAX_DRAIN_BYTES`` or the client timeout: a server that
closed at once would make most clients, still sending, see a broken pipe instead of the 413.
"""

from __future__ import annotations

import re
import selectors
import socket
import struct
import time
from concurrent import futures
from functools import partial

from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import TConn, ThreadWorker

from semseg.inference.settings import from_environment

from .responses import raw_json_error, too_large, too_slow

MAX_HEAD_BYTES = 128 * 1024  # more than gunicorn accepts: its parser then answers 400
MAX_DRAIN_BYTES = 256 * 1024 * 1024  # read and discarded after a 413, at most
DRAIN_IDLE_S = 1.0  # a client that sent nothing for this long after its 413 is done sending
# Answered by the event loop itself, never queued behind predictions for a thread: SageMaker
# restarts a container whose /ping does not answer within 2 s, busy or not.
INLINE_PATHS = (b"/ping", b"/execution-parameters")
_PARSE_STATUSES = {
    http_errors.LimitRequestLine: (414, "URI Too Long"),
    http_errors.LimitRequestHeaders: (431, "Request Header Fields Too Large"),
    http_errors.ExpectationFailed: (417, "Expectation Failed"),
}
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")  # any length: a huge size is just too large
_RECV_BYTES = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RequestFrame:
    """Decides from the bytes received so far whether one HTTP/1.x request is complete.

    ``feed`` returns True once the request is complete, or once it is clear the request will
    not be framed (broken framing, a head or body over its limit): either way it is time to hand
    the connection to a thread. Chunked bodies are scanned incrementally, once per byte.
    """

    def __init__(self, max_body_bytes: int):
        self.max_body_bytes = max_body_bytes
        self.data = bytearray()
        self.body_start: int | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expects_continue = False
        self._scan = 0  # chunked: offset of the next chunk-size line
        self._decoded = 0  # chunked: body bytes seen so far
        self.too_large = False  # the body is over the limit: answered 413 here, never handed on
        self.request_line: list[bytes] = []

    def feed(self, data: bytes) -> bool:
        self.data += data
        if self.body_start is None:
            end = self.data.find(b"\r\n\r\n")
            if end < 0:
                return len(self.data) > MAX_HEAD_BYTES
            if not self._read_head(bytes(self.data[:end])):
                return True
            self.body_start = self._scan = end + 4
        if self.chunked:
            return self._chunks_done()
        if self.content_length is None:
            return True
        self.too_large = self.content_length > self.max_body_bytes
        return self.too_large or len(self.data) - self.body_start >= self.content_length

    def _read_head(self, head: bytes) -> bool:
        """Note the framing headers; False when they are unusable (gunicorn will say why)."""
        lines = head.split(b"\r\n")
        version_1_1 = lines[0].rstrip().endswith(b"HTTP/1.1")
        self.request_line = lines[0].split()
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                if not value.isdigit() or self.content_length is not None:
                    return False
                self.content_length = int(value)
            elif name == b"transfer-encoding":
                self.chunked = value.endswith(b"chunked")
                if not self.chunked:
                    return False
            elif name == b"expect" and value == b"100-continue" and version_1_1:
                self.expects_continue = True
        return not (self.chunked and self.content_length is not None)

    def _chunks_done(self) -> bool:
        while True:
            line_end = self.data.find(b"\r\n", self._scan)
            if line_end < 0:
                return len(self.data) - self._scan > 1024  # no chunk-size line is that long
            size_text = bytes(self.data[self._scan : line_end]).split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):  # int(, 16) would take "-1f", "+1", "0x1f", "1_0"
                return True
            size = int(size_text, 16)
            if size == 0:  # the last chunk: then optional trailers and an empty line
                rest = bytes(self.data[line_end + 2 :])
                return rest.startswith(b"\r\n") or b"\r\n\r\n" in rest or len(rest) > MAX_HEAD_BYTES
            following = line_end + 2 + size + 2
            self.too_large = self._decoded + size > self.max_body_bytes
            if self.too_large:
                return True
            if following > len(self.data):
                return False
            self._decoded += size
            self._scan = following

    @property
    def received_anything(self) -> bool:
        return bool(self.data)

    @property
    def is_health_check(self) -> bool:
        """A bodiless GET of a path whose handler does no work (the app answers it from memory)."""
        return (
            len(self.request_line) == 3
            and self.request_line[0] == b"GET"
            and self.request_line[1] in INLINE_PATHS
            and not self.chunked
            and not self.content_length
        )


def _timeval(seconds: float) -> bytes:
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))


class BufferingWorker(ThreadWorker):
    """``gthread`` with the reading of each request moved from the threads to the event loop."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = from_environment()
        self.client_timeout_s = settings.client_timeout_s
        self.max_body_bytes = settings.max_payload_bytes
        self.too_large_answer = raw_json_error(413, "Content Too Large", too_large(settings))
        self.too_slow_answer = raw_json_error(408, "Request Timeout", too_slow(settings))
        self.reading = {}  # conn -> (RequestFrame, deadline)
        self.draining = {}  # conn -> [bytes drained, last byte time, deadline]

    def accept(self, listener):
        try:
            client, address = listener.accept()
        except OSError:  # EAGAIN: another worker took it; ECONNABORTED: the client left already
            return
        self.nr_conns += 1
        # A backstop for the threads: a kernel-level limit on any one blocking send or receive, so
        # not even a client that stops reading its answer can hold a thread for ever.
        for option in (socket.SO_SNDTIMEO, socket.SO_RCVTIMEO):
            client.setsockopt(socket.SOL_SOCKET, option, _timeval(self.client_timeout_s))
        conn = TConn(self.cfg, client, address, listener.getsockname())
        self._start_reading(conn, time.monotonic() + self.client_timeout_s)

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection sends its next request: read it here too, not in a thread."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._start_reading(conn, time.monotonic() + self.client_timeout_s)
        self._on_readable(conn, client)

    def _start_reading(self, conn, deadline: float) -> None:
        conn.sock.setblocking(False)
        self.reading[conn] = (RequestFrame(self.max_body_bytes), deadline)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    @staticmethod
    def _receive(conn) -> bytes | None:
        """What the client sent since the last call; None when nothing is there yet, b"" once it is gone."""
        try:
            return conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _on_readable(self, conn, client):
        frame, _ = self.reading[conn]
        data = self._receive(conn)
        if data is None:
            return
        if not data:  # the client went away before sending a whole request
            self._drop(conn)
            return
        head_known = frame.body_start is not None
        complete = frame.feed(data)
        if not complete and not head_known and frame.expects_continue:
            self._send_quietly(conn, _CONTINUE)
        if complete and frame.too_large:
            self._start_draining(conn)
        elif complete:
            self._hand_over(conn, frame)

    def _start_draining(self, conn) -> None:
        del self.reading[conn]
        self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self._on_drain_readable, conn))
        self._send_quietly(conn, self.too_large_answer)
        now = time.monotonic()
        self.draining[conn] = [0, now, now + self.client_timeout_s]

    def _on_drain_readable(self, conn, client):
        data = self._receive(conn)
        if data is None:
            return
        state = self.draining[conn]
        state[0] += len(data)
        state[1] = time.monotonic()
        if not data or state[0] > MAX_DRAIN_BYTES:
            self._drop(conn)

    def _hand_over(self, conn, frame: RequestFrame) -> None:
        del self.reading[conn]
        self.poller.unregister(conn.sock)
        conn.init()
        conn.parser.unreader.unread(bytes(frame.data))
        conn.data_ready = True
        if not frame.is_health_check:
            self.enqueue_req(conn)
            return
        done = futures.Future()
        done.set_result(self.handle(conn))  # here, in the event loop's thread: a few hundred bytes out
        self.finish_request(conn, done)

    def _drop(self, conn, answer: bytes = b"") -> None:
        self.reading.pop(conn, None)
        self.draining.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        if answer:
            self._send_quietly(conn, answer)
        self.nr_conns -= 1
        conn.close()

    def handle_error(self, req, client, addr, exc):
        """gunicorn's own answers to requests it cannot parse, as the app's: one sentence in JSON."""
        if isinstance(exc, http_errors.ParseException) and not isinstance(exc, http_errors.ConfigurationProblem):
            status, reason = _PARSE_STATUSES.get(type(exc), (400, "Bad Request"))
            self.log.warning("Invalid request from %s: %s", (addr or ("",))[0], exc)
            message = f"The request is not valid HTTP/1.1 ({type(exc).__name__}: {str(exc)[:200]})"
        else:
            self.log.exception("Error handling request")
            status, reason = 500, "Internal Server Error"
            message = "The server failed to answer this request; its log has the details"
        try:
            util.write_nonblock(client, raw_json_error(status, reason, message))
        except OSError:
            pass

    @staticmethod
    def _send_quietly(conn, data: bytes) -> None:
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def murder_pending(self):
        """Also cut off the clients that have not sent a whole request by their deadline (408), and
        end the drains of 413 answers whose client has gone quiet."""
        super().murder_pending()
        now = time.monotonic()
        for conn, (frame, deadline) in list(self.reading.items()):
            if now < deadline:
                continue
            if frame.received_anything:
                self.log.info("Cut off %s: no whole request within %d s", conn.client, self.client_timeout_s)
                self._drop(conn, self.too_slow_answer)
            else:
                self._drop(conn)
        for conn, (_, last_byte, deadline) in list(self.draining.items()):
            if now - last_byte > DRAIN_IDLE_S or now > deadline:
                self._drop(conn)
