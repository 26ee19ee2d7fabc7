"""The sentences of the errors both the app and the worker's event loop answer, and the raw HTTP
form of an answer the event loop writes itself (it has no Flask to do it)."""

from __future__ import annotations

import json

from semseg.inference.settings import ServingSettings


def too_large(settings: ServingSettings) -> str:
    return f"The request body is larger than the limit of {settings.max_payload_mb} MB"


def too_slow(settings: ServingSettings) -> str:
    return f"The request was not received in full within {settings.client_timeout_s} s; send it faster"


def raw_json_error(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer with the usual ``{"error": ...}`` body, closing the connection."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body
