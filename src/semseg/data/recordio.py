"""MXNet/dmlc RecordIO framing, as SageMaker writes it into Pipe-mode FIFOs.

A record is ``kMagic (0xCED7230A) | lrec | payload | zero padding to 4 bytes``, every word a
little-endian uint32, with ``lrec = cflag << 29 | length``. A payload that holds the magic word at a
4-byte-aligned offset is split there into parts (cflag 1 = first, 2 = middle, 3 = last), the magic
word itself being dropped; the reader joins the parts and puts the magic word back. This is exactly
dmlc-core's ``RecordIOWriter::WriteRecord`` / ``RecordIOReader::NextRecord``. The Python writers of
the SageMaker SDK never split, but a reader must accept split records, so ``framed`` splits as dmlc
does and the tests feed both kinds. ``framed`` is the one framing: it hands a large payload (a
probability response of many megabytes) out in pieces, without one copy of the whole; ``frame``
joins the pieces for small payloads.

Errors name where the stream came from, the record's index and the byte offset of its header, so
that a bad object in a manifest of thousands can be found.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ..errors import UserError

MAGIC = 0xCED7230A
MAX_LENGTH = (1 << 29) - 1
CHUNK_BYTES = 1 << 20  # the most payload bytes ``framed`` hands out in one piece
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<II")
_COMPLETE, _FIRST, _MIDDLE, _LAST = 0, 1, 2, 3


class RecordIOError(UserError):
    """The stream is not valid RecordIO at a known record and byte offset."""


@dataclass(frozen=True)
class Record:
    payload: bytes
    index: int  # 0-based position of the (joined) record in its stream
    offset: int  # byte offset of its first header in the stream


def _padding(length: int) -> int:
    return -length & 3


def framed(payload: bytes | np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> tuple[int, Iterator[bytes]]:
    """(total length, pieces) of ``payload`` (bytes or a uint8 array) as one RecordIO record, split
    around 4-byte-aligned magic words as dmlc does; no piece holds more than ``chunk_bytes`` of payload."""
    data = payload if isinstance(payload, np.ndarray) else np.frombuffer(payload, dtype=np.uint8)
    size = data.size
    if size > MAX_LENGTH:
        raise ValueError(f"a RecordIO record holds at most {MAX_LENGTH} bytes, not {size}")
    splits = (np.flatnonzero(data[: size // 4 * 4].view("<u4") == MAGIC) * 4).tolist()
    parts, start = [], 0
    for index, at in enumerate(splits):
        parts.append((_FIRST if index == 0 else _MIDDLE, start, at))
        start = at + 4
    parts.append((_LAST if splits else _COMPLETE, start, size))
    total = sum(8 + (end - begin) + _padding(end - begin) for _, begin, end in parts)

    def pieces() -> Iterator[bytes]:
        for cflag, begin, end in parts:
            yield _HEADER.pack(MAGIC, cflag << 29 | (end - begin))
            for offset in range(begin, end, chunk_bytes):
                yield data[offset : min(end, offset + chunk_bytes)].tobytes()
            yield b"\0" * _padding(end - begin)

    return total, pieces()


def frame(payload: bytes) -> bytes:
    """``payload`` as one RecordIO record, in one piece."""
    return b"".join(framed(payload)[1])


def write_record(stream: BinaryIO, payload: bytes) -> int:
    """Write one framed record; returns the number of bytes written."""
    data = frame(payload)
    stream.write(data)
    return len(data)


def read_records(stream: BinaryIO, where: str = "the stream") -> Iterator[Record]:
    """Every record of ``stream`` until EOF, multi-part records joined.

    ``where`` names the stream in error messages (for example "the 'train' channel, epoch 0").
    ``stream`` should be buffered: headers are read 8 bytes at a time.
    """
    read = stream.read
    offset = 0  # bytes consumed so far
    index = 0
    parts: list[bytes] = []
    record_offset = 0

    def fail(problem: str) -> RecordIOError:
        return RecordIOError(f"In {where}, record {index} at byte offset {record_offset} {problem}")

    while True:
        header = read(8)
        if not parts:
            record_offset = offset
        if len(header) < 8:
            if not header and not parts:
                return
            raise fail(
                f"is truncated: the stream ends {len(header)} bytes into a record header at byte offset "
                f"{offset}{' before the last part of a multi-part record' if parts else ''}"
            )
        magic, lrec = _HEADER.unpack(header)
        if magic != MAGIC:
            raise fail(
                f"does not start with the RecordIO magic number 0xCED7230A (found 0x{magic:08X} at byte "
                f"offset {offset}), so the stream is not RecordIO-wrapped"
            )
        cflag, length = lrec >> 29, lrec & MAX_LENGTH
        if cflag > _LAST or (cflag in (_COMPLETE, _FIRST)) == bool(parts):
            raise fail(f"has an invalid multi-part flag {cflag} at byte offset {offset}")
        payload = read(length)
        if len(payload) < length:
            raise fail(f"is truncated: the stream ends after {len(payload)} of its {length} payload bytes")
        padding = _padding(length)
        if padding:
            read(padding)  # a missing final padding loses no data and is accepted
        offset += 8 + length + padding
        if cflag == _COMPLETE:
            yield Record(payload, index, record_offset)
            index += 1
            continue
        parts.append(payload)
        if cflag == _LAST:
            yield Record(_MAGIC_BYTES.join(parts), index, record_offset)
            index += 1
            parts = []
