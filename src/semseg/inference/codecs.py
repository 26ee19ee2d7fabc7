"""Content types: which request bodies the server reads and which answers it writes, in one table.

Every request type is an encoded image, decoded by sniffing its bytes (``Predictor.decode``), so
a mislabelled JPEG sent as ``image/png`` still works. Responses:

- ``image/png`` (the default): an 8-bit palette PNG whose pixel values are class ids, exactly the
  input's height x width, as the built-in algorithm answers; its palette holds the model's class
  colours (``classes.json``, else the VOC colours), so it shows as the label map's mask in a viewer;
- ``application/x-protobuf`` and ``application/x-recordio-protobuf``: the built-in's probability
  record (``recordio_protobuf``), identical bodies under both names;
- ``application/json``: ``{"shape": [H, W], "classes": [name, ...], "mask": [[class id, ...], ...]}``,
  ``classes[i]`` naming class id ``i``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..data.recordio import MAX_LENGTH as MAX_RECORD_BYTES
from ..data.recordio import framed
from ..errors import PayloadTooLarge, UnsupportedAccept, UnsupportedContentType
from . import recordio_protobuf as rp
from .predictor import Prediction, Predictor


@dataclass
class Encoded:
    content_type: str
    length: int
    chunks: Iterable[bytes]


def _single(content_type: str, body: bytes) -> Encoded:
    return Encoded(content_type, len(body), [body])


def encode_png(prediction: Prediction, content_type: str) -> Encoded:
    image = Image.fromarray(prediction.class_ids())
    image.putpalette(prediction.classes.palette())  # mode L -> P, pixel values unchanged
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return _single(content_type, buffer.getvalue())


_JSON_PIECE = 1 << 16  # class ids turned into text at a time: a 64-megapixel row never becomes one list


def encode_json(prediction: Prediction, content_type: str) -> Encoded:
    """``{"shape": [H, W], "classes": [name, ...], "mask": [[id, ...], ...]}``, in pieces of about a megabyte."""
    ids = prediction.class_ids()
    names = json.dumps(list(prediction.classes.names))
    chunks, pending = (
        [],
        [f'{{"shape": [{prediction.height}, {prediction.width}], "classes": {names}, "mask": ['.encode()],
    )
    pending_bytes = 0
    for index, row in enumerate(ids):
        pending.append(b",[" if index else b"[")
        for start in range(0, len(row), _JSON_PIECE):
            text = ", ".join(map(str, row[start : start + _JSON_PIECE].tolist())).encode()
            pending.append(b", " + text if start else text)
            pending_bytes += len(text)
            if pending_bytes >= 1 << 20:
                chunks.append(b"".join(pending))
                pending, pending_bytes = [], 0
        pending.append(b"]")
    pending.append(b"]}")
    chunks.append(b"".join(pending))
    return Encoded(content_type, sum(map(len, chunks)), chunks)


def encode_probabilities(prediction: Prediction, content_type: str) -> Encoded:
    shape = [1, prediction.num_classes, prediction.height, prediction.width]
    size = rp.probabilities_payload_size(shape)
    if size > MAX_RECORD_BYTES:
        raise PayloadTooLarge(
            f"The class probabilities of a {prediction.width}x{prediction.height} image with "
            f"{prediction.num_classes} classes take {size / 2**20:.0f} MB, more than the "
            f"{MAX_RECORD_BYTES / 2**20:.0f} MB a RecordIO record can hold; ask for image/png or send a smaller image"
        )
    count = int(np.prod(shape))
    # The features in key order ("shape", "target"), as protobuf's deterministic serialisation has them.
    head = rp.int32_feature("shape", shape) + rp.feature_prefix("target", rp.FLOAT32_TENSOR, 4 * count)
    payload = np.empty(size, dtype=np.uint8)
    payload[: len(head)] = np.frombuffer(head, dtype=np.uint8)
    values = payload[len(head) :].view("<f4").reshape(shape[1:])
    for top, left, tile in prediction.tiles():
        values[:, top : top + tile.shape[1], left : left + tile.shape[2]] = tile
    length, chunks = framed(payload)
    return Encoded(content_type, length, chunks)


@dataclass(frozen=True)
class ContentType:
    request: bool  # accepted as a request body
    encode: Callable[[Prediction, str], Encoded] | None  # how a response of this type is written
    extension: str = ""  # of a file holding a response of this type (``semseg predict`` names its outputs so)


CONTENT_TYPES: dict[str, ContentType] = {
    "image/jpeg": ContentType(request=True, encode=None),
    "image/png": ContentType(request=True, encode=encode_png, extension=".png"),
    "application/x-image": ContentType(request=True, encode=None),
    "application/octet-stream": ContentType(request=True, encode=None),
    "application/x-protobuf": ContentType(request=False, encode=encode_probabilities, extension=".pb"),
    "application/x-recordio-protobuf": ContentType(request=False, encode=encode_probabilities, extension=".pb"),
    "application/json": ContentType(request=False, encode=encode_json, extension=".json"),
}
REQUEST_TYPES = [name for name, kind in CONTENT_TYPES.items() if kind.request]
RESPONSE_TYPES = [name for name, kind in CONTENT_TYPES.items() if kind.encode]
_WILDCARDS = ("*/*", "image/*", "application/*")


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def request_type(header: str | None) -> str:
    """The request's media type; a missing Content-Type is read as octet-stream (sniffed)."""
    media = _media_type(header or "") or "application/octet-stream"
    if media not in REQUEST_TYPES:
        raise UnsupportedContentType(
            f"The Content-Type '{media}' is not supported; send one of {', '.join(REQUEST_TYPES)}"
        )
    return media


def response_type(header: str | None, default: str) -> str:
    """The first supported type of a comma-separated Accept header; ``*/*`` and none mean ``default``."""
    wanted = [_media_type(part) for part in (header or "").split(",") if _media_type(part)] or ["*/*"]
    for media in wanted:
        if media in RESPONSE_TYPES:
            return media
        if media in _WILDCARDS:
            family = "" if media == "*/*" else media[:-1]
            return next(t for t in [default, *RESPONSE_TYPES] if t in RESPONSE_TYPES and t.startswith(family))
    raise UnsupportedAccept(f"The Accept type '{header}' is not supported; ask for one of {', '.join(RESPONSE_TYPES)}")


def negotiate(content_type: str | None, accept: str | None, default_accept: str) -> str:
    """The answer's media type, once the request's type is known to be accepted."""
    request_type(content_type)
    return response_type(accept, default_accept)


def encode(prediction: Prediction, media: str) -> Encoded:
    return CONTENT_TYPES[media].encode(prediction, media)


def invoke(
    predictor: Predictor, body: bytes, content_type: str | None, accept: str | None, default_accept: str
) -> Encoded:
    """Check the content types, predict, encode: the whole of one ``/invocations`` request."""
    media = negotiate(content_type, accept, default_accept)
    return encode(predictor.predict(body), media)
