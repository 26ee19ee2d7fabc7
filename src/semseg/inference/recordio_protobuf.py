"""The built-in algorithm's probability response: one MXNet RecordIO record holding one
``aialgs.data.Record`` protobuf (``record.proto`` beside this file).

The record carries ``features["target"]`` (float32 probabilities, C order, shape [1, C, H, W])
and ``features["shape"]`` (int32 ``[1, C, H, W]``). The protobuf wire format is written here
directly rather than through generated classes: the float values are copied straight from numpy
into the output buffer, which a protobuf message (a Python list of floats) cannot do for the
tens of millions of values of a large image. The layout is fixed and small (a map entry is a
nested message ``{1: key, 2: value}``); the tests parse it with the protobuf library.
The record is framed by ``data.recordio.framed``, the one RecordIO framing of the project.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field_header(field: int, length: int) -> bytes:
    return varint(field << 3 | _LENGTH_DELIMITED) + varint(length)


def _map_entry_prefix(map_field: int, key: str, value_length: int) -> bytes:
    """Everything of a ``map<string, Value>`` entry up to its Value message's bytes."""
    key_bytes = key.encode()
    key_part = _field_header(1, len(key_bytes)) + key_bytes
    value_part_header = _field_header(2, value_length)
    return (
        _field_header(map_field, len(key_part) + len(value_part_header) + value_length) + key_part + value_part_header
    )


def _value_prefix(tensor_field: int, packed_length: int) -> bytes:
    """A Value holding a tensor (oneof ``tensor_field``) whose ``values`` are ``packed_length`` bytes."""
    tensor_header = _field_header(1, packed_length)
    return _field_header(tensor_field, len(tensor_header) + packed_length) + tensor_header


FLOAT32_TENSOR, INT32_TENSOR = 2, 7  # Value's oneof field numbers
FEATURES = 1  # Record.features


def feature_prefix(key: str, tensor_field: int, packed_length: int) -> bytes:
    """The bytes of a ``features[key]`` entry that come before its packed values."""
    value = _value_prefix(tensor_field, packed_length)
    return _map_entry_prefix(FEATURES, key, len(value) + packed_length) + value


def int32_feature(key: str, values: Sequence[int]) -> bytes:
    packed = b"".join(varint(v) for v in values)  # non-negative int32s are plain varints
    return feature_prefix(key, INT32_TENSOR, len(packed)) + packed


def probabilities_payload_size(shape: Sequence[int]) -> int:
    count = int(np.prod(shape))
    return len(feature_prefix("target", FLOAT32_TENSOR, 4 * count)) + 4 * count + len(int32_feature("shape", shape))
