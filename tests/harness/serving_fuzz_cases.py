"""Hostile requests for the serving fuzz suite and its benchmark, from a seeded generator.

Each class makes ``Case``s: the raw bytes of one HTTP/1.1 request, the statuses it may get, and,
for a valid image, the mask shape it must get. ``exchange`` sends one case on its own connection
with a plain socket (so chunked framing, broken framing and odd headers go out exactly as built).
"""

from __future__ import annotations

import io
import json
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from harness.serving_helpers import encoded, png_declaring, sample_image

LIMIT = 10 * 2**20  # the server's default payload limit
ERRORS = {400, 406, 413, 415}
IMAGE_TYPES = ["image/jpeg", "image/png", "application/x-image", "application/octet-stream", None]


@dataclass
class Case:
    kind: str
    request: bytes
    allowed: set[int]
    shape: tuple[int, int] | None = None  # (height, width) of the mask a 200 must carry


def http_request(
    body: bytes,
    content_type: str | None = "image/jpeg",
    accept: str | None = "image/png",
    chunk_sizes: list[int] | None = None,
    extra: bytes = b"",
) -> bytes:
    head = b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if content_type is not None:
        head += b"Content-Type: " + content_type.encode("latin-1") + b"\r\n"
    if accept is not None:
        head += b"Accept: " + accept.encode("latin-1") + b"\r\n"
    if chunk_sizes is None:
        return head + extra + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    pieces, start = [], 0
    for size in chunk_sizes:
        pieces.append(f"{size:x}\r\n".encode() + body[start : start + size] + b"\r\n")
        start += size
    return head + extra + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(pieces) + b"0\r\n\r\n"


def exchange(port: int, request: bytes, timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the answer; status 0 if the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server may answer (413) before taking the whole body
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                piece = sock.recv(65536)
                if not piece:
                    return 0, {}, data
                data += piece
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            if status != 100:
                break
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "-1"))
        while length < 0 or len(data) < length:
            piece = sock.recv(1 << 20)
            if not piece:
                break
            data += piece
    return status, headers, data


def check(case: Case, status: int, headers: dict[str, str], body: bytes) -> str | None:
    """What is wrong with the answer to ``case``, or None."""
    if status not in case.allowed:
        return f"{case.kind}: status {status}, allowed {sorted(case.allowed)}: {body[:160]!r}"
    if status != 200:
        try:
            error = json.loads(body)
        except ValueError:
            return f"{case.kind}: {status} without a JSON body: {body[:160]!r}"
        if list(error) != ["error"] or "Traceback" in error["error"]:
            return f"{case.kind}: {status} with {error!r}"
        return None
    if case.shape is not None and headers.get("content-type") == "image/png":
        shape = np.array(Image.open(io.BytesIO(body))).shape
        if shape != case.shape:
            return f"{case.kind}: mask {shape}, expected {case.shape}"
    return None


def _picture(rng: random.Random, low: int = 8, high: int = 96) -> Image.Image:
    return sample_image(rng.randint(low, high), rng.randint(low, high), seed=rng.randrange(1000))


def _valid(kind: str, body: bytes, size: tuple[int, int], **request) -> Case:
    return Case(kind, http_request(body, **request), {200}, (size[1], size[0]))


def random_bytes(rng: random.Random) -> Case:
    body = rng.randbytes(rng.choice([0, 1, 7, 100, 5000, 60000]))
    content_type = rng.choice(IMAGE_TYPES + ["text/csv", "application/json", "x/\u00e9", ""])
    return Case("random bytes", http_request(body, content_type), {400, 415})


def _some_image(rng: random.Random) -> bytes:
    return encoded(_picture(rng), rng.choice(["JPEG", "PNG"]))


def truncated(rng: random.Random) -> Case:
    body = _some_image(rng)
    cut = rng.choice([1, 2, 8, 16, 33, 64, len(body) // 3, len(body) // 2, len(body) - 20, len(body) - 1])
    return Case("truncated", http_request(body[: max(1, min(cut, len(body) - 1))]), {200, 400})


def corrupted(rng: random.Random) -> Case:
    body = bytearray(_some_image(rng))
    for _ in range(rng.choice([1, 4, 32])):
        body[rng.randrange(len(body))] = rng.randrange(256)
    return Case("corrupted", http_request(bytes(body)), {200, 400})


def _mode_image(mode: str, rng: random.Random) -> tuple[bytes, tuple[int, int]]:
    picture = _picture(rng)
    gray = np.asarray(picture.convert("L"), dtype=np.float32)
    if mode == "I;16":  # fromarray picks the mode from the dtype: uint16 I;16, int32 I, float32 F
        image = Image.fromarray((gray * 257).astype(np.uint16))
    elif mode == "I":
        image = Image.fromarray((gray * 1000).astype(np.int32))
    elif mode == "F":
        image = Image.fromarray(gray / 255)
    elif mode == "P":
        image = picture.convert("P")
        return encoded(image, "PNG", transparency=0), image.size
    else:
        image = picture.convert(mode)
    fmt = {"I": "TIFF", "F": "TIFF", "CMYK": rng.choice(["JPEG", "TIFF"]), "YCbCr": "JPEG"}.get(mode, "PNG")
    return encoded(image, fmt), image.size


MODES = ["1", "L", "LA", "P", "I;16", "I", "F", "CMYK", "YCbCr", "RGBA", "RGB"]


def modes(rng: random.Random) -> Case:
    mode = rng.choice(MODES)
    body, size = _mode_image(mode, rng)
    return _valid(f"mode {mode}", body, size, content_type=rng.choice(IMAGE_TYPES))


def containers(rng: random.Random) -> Case:
    picture = _picture(rng, 16, 96)
    kind = rng.choice(["GIF", "animated GIF", "TIFF pages", "TIFF 16-bit", "WEBP", "BMP", "ICO"])
    size = picture.size
    if kind == "GIF":
        body = encoded(picture, "GIF")
    elif kind == "animated GIF":
        frames = [picture.rotate(angle) for angle in (0, 90, 180)]
        body = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    elif kind == "TIFF pages":
        body = encoded(picture, "TIFF", save_all=True, append_images=[picture.convert("L"), picture])
    elif kind == "TIFF 16-bit":
        body = encoded(Image.fromarray(np.asarray(picture.convert("L"), dtype=np.uint16) * 257), "TIFF")
    elif kind == "ICO":
        side = min(size)
        body, size = encoded(picture.crop((0, 0, side, side)), "ICO", sizes=[(side, side)]), (side, side)
    else:
        body = encoded(picture, kind)
    return _valid(kind, body, size, content_type=rng.choice(IMAGE_TYPES))


def exif_orientations(rng: random.Random) -> Case:
    picture, orientation = _picture(rng), rng.randint(1, 8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    raw = exif.tobytes() if rng.random() < 0.9 else b"Exif\0\0" + rng.randbytes(40)  # sometimes broken
    width, height = picture.size
    size = (height, width) if orientation >= 5 and raw == exif.tobytes() else (width, height)
    return _valid(f"exif {orientation}", encoded(picture, "JPEG", exif=raw), size)


def _jpeg_declaring(width: int, height: int) -> bytes:
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(frame) + 2) + frame + b"\xff\xd9"


def _gif_declaring(width: int, height: int) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    return screen + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00\x3b"


def bombs(rng: random.Random) -> Case:
    kind = rng.choice(["png 50000", "jpeg 65000", "gif 65535", "png 1x64000001"])
    body = {
        "png 50000": lambda: png_declaring(50000, 50000),
        "jpeg 65000": lambda: _jpeg_declaring(65000, 65000),
        "gif 65535": lambda: _gif_declaring(65535, 65535),
        "png 1x64000001": lambda: png_declaring(64_000_001, 1),
    }[kind]()
    return Case(f"bomb {kind}", http_request(body, rng.choice(IMAGE_TYPES)), {413, 400})


ACCEPTS = [
    "image/png;q=0.5, application/json;q=0.9",
    "application/json;q=0",
    "*/*;q=0.1",
    "image/*",
    "application/*",
    "text/html, */*",
    "text/html",
    "garbage",
    ",,,;;;",
    ";q=1",
    "image/png" + ", image/png" * 200,
    "*/*" * 300,
    "application/x-recordio-protobuf; q=1.0",
    "IMAGE/PNG",
    "\u00ff\u00fe",
]


def accepts(rng: random.Random) -> Case:
    picture = _picture(rng)
    accept = rng.choice(ACCEPTS + ["".join(rng.choice("*/;=,. qabc") for _ in range(rng.randint(1, 40)))])
    case = _valid("accept", encoded(picture), picture.size, accept=accept)
    case.allowed = {200, 406}
    return case


CONTENT_TYPES = [
    "image/jpeg; charset=binary",
    "IMAGE/JPEG",
    "image/png ; q=1",
    "image/jpeg;",
    ";",
    "application/octet-stream; name=a.jpg",
    "multipart/form-data; boundary=x",
    "image/jpeg, image/png",
    "\u00e9\u00e9",
]


def content_types(rng: random.Random) -> Case:
    picture = _picture(rng)
    case = _valid("content type", encoded(picture), picture.size, content_type=rng.choice(CONTENT_TYPES))
    case.allowed = {200, 415}
    return case


def chunked(rng: random.Random) -> Case:
    picture = _picture(rng)
    body = encoded(picture)
    sizes, left = [], len(body)
    while left:
        sizes.append(min(left, rng.choice([1, 7, 100, 4096, 65536])))
        left -= sizes[-1]
    request = http_request(body, chunk_sizes=sizes)
    mangle = rng.choice(["none", "none", "extension", "bad size", "huge size", "no terminator", "negative"])
    if mangle == "none":
        return Case("chunked", request, {200}, (picture.height, picture.width))
    head, _, rest = request.partition(b"\r\n\r\n")
    first_line, _, after = rest.partition(b"\r\n")
    replacement = {
        "extension": first_line + b";name=value",
        "bad size": b"zz",
        "huge size": b"f" * 20,
        "no terminator": first_line,
        "negative": b"-" + first_line,
    }[mangle]
    if mangle == "no terminator":
        after = after.replace(b"\r\n", b"XX", 1)
    allowed = {200} if mangle == "extension" else {400, 413}
    return Case(f"chunked {mangle}", head + b"\r\n\r\n" + replacement + b"\r\n" + after, allowed)


def payload_limit(rng: random.Random) -> Case:
    picture = sample_image(64, 48, seed=rng.randrange(1000))
    image = encoded(picture)
    over = rng.random() < 0.5
    length = LIMIT + rng.randint(1, 4096) if over else LIMIT - rng.randint(0, 4096)
    body = image + b"\0" * (length - len(image))  # Pillow stops at the JPEG's end marker
    sizes = [1 << 20] * (length >> 20) + [length & ((1 << 20) - 1)] if rng.random() < 0.5 else None
    request = http_request(body, chunk_sizes=[s for s in sizes if s] if sizes else None)
    return Case("over the limit" if over else "just under the limit", request, {413} if over else {200}, (48, 64))


def http_garbage(rng: random.Random) -> Case:
    kind = rng.choice(["request line", "header name", "long header", "many headers", "bad length", "two lengths"])
    body = encoded(_picture(rng))
    request = {
        "request line": lambda: b"POST /invocations HTTP/9.9\r\nContent-Length: 0\r\n\r\n",
        "header name": lambda: http_request(body, extra=b"Bad Name: x\r\n"),
        "long header": lambda: http_request(body, extra=b"X-Long: " + b"a" * 20000 + b"\r\n"),
        "many headers": lambda: http_request(body, extra=b"".join(b"X-%d: y\r\n" % i for i in range(200))),
        "bad length": lambda: http_request(body).replace(b"Content-Length: ", b"Content-Length: -"),
        "two lengths": lambda: http_request(body, extra=b"Content-Length: 5\r\n"),
    }[kind]()
    return Case(f"http {kind}", request, {400, 414, 431})


CLASSES: dict[str, Callable[[random.Random], Case]] = {
    "random bytes": random_bytes,
    "truncated": truncated,
    "corrupted": corrupted,
    "modes": modes,
    "containers": containers,
    "exif": exif_orientations,
    "bombs": bombs,
    "accept": accepts,
    "content type": content_types,
    "chunked": chunked,
    "payload limit": payload_limit,
    "http garbage": http_garbage,
}
