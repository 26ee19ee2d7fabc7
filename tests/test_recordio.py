"""RecordIO framing: byte-identical to MXNet's dmlc writer, multi-part records, and located errors."""

from __future__ import annotations

import io
import struct

import mxnet as mx
import pytest

from semseg.data.recordio import MAGIC, RecordIOError, frame, read_records, write_record

M = struct.pack("<I", MAGIC)

PAYLOADS = [
    b"",
    b"a",
    b"abcd",
    b"abcde",
    bytes(range(256)) * 3,
    M,  # the payload is the magic word: two empty parts
    b"xyz" + M + b"q",  # unaligned magic: no split
    b"abcd" + M + b"efgh" + M,  # two aligned occurrences, one at the end
    M + M + b"12",  # consecutive occurrences
    b"ab" + M * 3,  # unaligned, then aligned by accident of the repeat
]


def parts_of(data: bytes) -> list[tuple[int, int]]:
    """(cflag, length) of every framed part, walking the headers."""
    parts, offset = [], 0
    while offset < len(data):
        magic, lrec = struct.unpack_from("<II", data, offset)
        assert magic == MAGIC
        length = lrec & ((1 << 29) - 1)
        parts.append((lrec >> 29, length))
        offset += 8 + length + (-length & 3)
    return parts


def test_frames_exactly_as_mxnet_dmlc_writer(tmp_path):
    path = tmp_path / "dmlc.rec"
    writer = mx.recordio.MXRecordIO(str(path), "w")
    for payload in PAYLOADS:
        writer.write(payload)
    writer.close()
    assert b"".join(frame(p) for p in PAYLOADS) == path.read_bytes()


def test_reads_what_mxnet_writes_and_mxnet_reads_what_we_write(tmp_path):
    path = tmp_path / "ours.rec"
    with open(path, "wb") as stream:
        for payload in PAYLOADS:
            write_record(stream, payload)
    reader = mx.recordio.MXRecordIO(str(path), "r")
    assert [reader.read() for _ in PAYLOADS] == PAYLOADS and reader.read() is None
    records = list(read_records(io.BytesIO(path.read_bytes())))
    assert [r.payload for r in records] == PAYLOADS
    assert [r.index for r in records] == list(range(len(PAYLOADS)))
    offsets = [0]
    for payload in PAYLOADS[:-1]:
        offsets.append(offsets[-1] + len(frame(payload)))
    assert [r.offset for r in records] == offsets


def test_an_aligned_magic_word_splits_a_record_into_parts():
    assert parts_of(frame(b"abcd")) == [(0, 4)]
    assert parts_of(frame(b"abc")) == [(0, 3)] and len(frame(b"abc")) == 12  # padded to 4 bytes
    assert parts_of(frame(b"xyz" + M + b"q")) == [(0, 8)]
    assert parts_of(frame(b"abcd" + M + b"efgh" + M + b"ij")) == [(1, 4), (2, 4), (3, 2)]
    assert parts_of(frame(M)) == [(1, 0), (3, 0)]


def stream_of(payloads: list[bytes]) -> bytes:
    return b"".join(frame(p) for p in payloads)


def read_all(data: bytes):
    return [r.payload for r in read_records(io.BytesIO(data), "the 'train' channel, epoch 2")]


def test_bad_magic_names_the_record_and_its_offset():
    good = stream_of([b"one", b"two"])
    with pytest.raises(RecordIOError) as error:
        read_all(good + b"JUNKJUNK" + frame(b"three"))
    message = str(error.value)
    assert f"In the 'train' channel, epoch 2, record 2 at byte offset {len(good)} does not" in message
    assert "magic number 0xCED7230A" in message and "not RecordIO" in message


@pytest.mark.parametrize("cut", [3, 8 + 5], ids=["in the header", "in the payload"])
def test_a_truncated_record_is_an_error(cut):
    head = stream_of([b"first record"])
    data = head + frame(b"second record, cut short")[:cut]
    expected = rf"^In the 'train' channel, epoch 2, record 1 at byte offset {len(head)} is truncated"
    with pytest.raises(RecordIOError, match=expected):
        read_all(data)


def test_a_stream_ending_inside_a_multi_part_record_is_truncated():
    data = frame(b"abcd" + M + b"efgh")
    first_part = data[: 8 + 4]
    with pytest.raises(RecordIOError, match="record 0 at byte offset 0 is truncated.*multi-part"):
        read_all(first_part)


def test_parts_out_of_order_are_an_error():
    middle_without_first = struct.pack("<II", MAGIC, 2 << 29 | 4) + b"abcd"
    with pytest.raises(RecordIOError, match="record 1 at byte offset 12 has an invalid multi-part flag 2"):
        read_all(frame(b"ok") + middle_without_first)


def test_a_missing_final_padding_loses_nothing():
    assert read_all(frame(b"abc")[:-1]) == [b"abc"]


def test_an_empty_stream_has_no_records():
    assert read_all(b"") == []
