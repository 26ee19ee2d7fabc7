"""The serving worker's request framing (``serve.worker.RequestFrame``), byte by byte: it decides
only when a request is complete, and must decide in bounded time on any bytes at all."""

from __future__ import annotations

import random

import pytest

from serve.worker import MAX_HEAD_BYTES, RequestFrame

HEAD = b"POST /invocations HTTP/1.1\r\nHost: x\r\n"


def fed(data: bytes, limit: int = 1000, piece: int = 1) -> tuple[RequestFrame, int | None]:
    """The frame after feeding ``data`` in pieces, and the offset at which it said complete."""
    frame = RequestFrame(limit)
    for start in range(0, len(data), piece):
        if frame.feed(data[start : start + piece]):
            return frame, min(start + piece, len(data))
    return frame, None


def test_a_content_length_body_is_complete_at_its_last_byte():
    request = HEAD + b"Content-Length: 5\r\n\r\nhello"
    frame, at = fed(request)
    assert at == len(request) and not frame.too_large


def test_a_chunked_body_is_complete_after_its_last_chunk_and_trailers():
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
    assert fed(request)[1] == len(request)
    assert fed(request, piece=7)[1] == len(request)


@pytest.mark.parametrize("size", [b"-1f", b"+5", b"0x5", b"1_0", b" ", b"zz", b"5 5"])
def test_a_chunk_size_that_is_not_plain_hex_ends_the_framing_at_once(size):
    request = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\nhello\r\n0\r\n\r\n"
    frame, at = fed(request)
    assert at == len(request) - len(b"hello\r\n0\r\n\r\n"), "handed on as soon as the size line is read"


def test_bodies_over_the_limit_are_known_before_they_arrive():
    frame, at = fed(HEAD + b"Content-Length: 1001\r\n\r\n", limit=1000)
    assert frame.too_large and at is not None
    for size in (b"3e9", b"f" * 20):
        frame, at = fed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\n", limit=1000)
        assert frame.too_large and at is not None


def test_an_endless_head_is_handed_on_for_gunicorn_to_refuse():
    frame, at = fed(HEAD + b"X: " + b"a" * MAX_HEAD_BYTES, piece=4096)
    assert at is not None and not frame.too_large


def test_random_bytes_after_a_chunked_head_always_end_in_bounded_time():
    rng = random.Random(0)
    alphabet = b"0123456789abcdefxz-+; \r\n"
    for _ in range(2000):
        tail = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        frame = RequestFrame(1000)
        frame.feed(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + tail)  # returns: no loop without progress
        assert frame._scan <= len(frame.data)
