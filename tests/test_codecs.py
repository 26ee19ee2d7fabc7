"""The response encoders and content negotiation, checked against independent readers: Pillow for
PNG, MXNet's own RecordIO reader and the protobuf library (over the project's record.proto) for
the probability records."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from harness.serving_helpers import decode_probabilities, record_pb2
from PIL import Image

from semseg import classes
from semseg.data.recordio import MAGIC, framed
from semseg.errors import PayloadTooLarge, UnsupportedAccept, UnsupportedContentType
from semseg.inference import codecs, geometry
from semseg.inference import recordio_protobuf as rp
from semseg.inference.predictor import Prediction


@pytest.fixture(scope="module")
def record_module(tmp_path_factory):
    return record_pb2(tmp_path_factory.mktemp("proto"))


def random_prediction(classes: int, height: int, width: int, source=(7, 9), seed: int = 0) -> Prediction:
    logits = np.random.RandomState(seed).normal(size=(classes, *source)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    return Prediction(height, width, probabilities.astype(np.float32))


def body_of(encoded: codecs.Encoded) -> bytes:
    body = b"".join(encoded.chunks)
    assert len(body) == encoded.length
    return body


def assembled(tiles, channels: int, height: int, width: int) -> np.ndarray:
    whole = np.full((channels, height, width), np.nan, dtype=np.float32)
    for top, left, tile in tiles:
        whole[:, top : top + tile.shape[1], left : left + tile.shape[2]] = tile
    assert not np.isnan(whole).any(), "the tiles do not cover the image"
    return whole


def full_probabilities(prediction: Prediction) -> np.ndarray:
    return assembled(prediction.tiles(), prediction.num_classes, prediction.height, prediction.width)


@pytest.mark.parametrize("accept", ["application/x-protobuf", "application/x-recordio-protobuf"])
def test_probabilities_decode_as_the_notebook_decodes_them(accept, record_module):
    prediction = random_prediction(3, 301, 203)  # 183k floats: multi-byte varint lengths everywhere
    encoded = codecs.CONTENT_TYPES[accept].encode(prediction, accept)
    assert encoded.content_type == accept
    decoded = decode_probabilities(body_of(encoded), record_module)
    assert decoded.shape == (3, 301, 203)
    np.testing.assert_array_equal(decoded, full_probabilities(prediction))
    np.testing.assert_allclose(decoded.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(decoded.argmax(axis=0), prediction.class_ids())


def test_hand_written_protobuf_is_byte_identical_to_the_protobuf_library(record_module):
    prediction = random_prediction(2, 5, 3)
    record = record_module.Record()
    record.features["target"].float32_tensor.values.extend(full_probabilities(prediction).ravel().tolist())
    record.features["shape"].int32_tensor.values.extend([1, 2, 5, 3])
    expected = record.SerializeToString(deterministic=True)
    body = body_of(codecs.encode_probabilities(prediction, "application/x-protobuf"))
    magic, lrec = struct.unpack("<II", body[:8])
    assert (magic, lrec >> 29, lrec & ((1 << 29) - 1)) == (MAGIC, 0, len(expected))
    assert body[8 : 8 + len(expected)] == expected
    assert body[8 + len(expected) :] == b"\0" * (-len(expected) % 4)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**14, 2**21 + 5, 2**28 + 3, 2**35])
def test_varint_matches_the_protobuf_library(value, record_module):
    tensor = record_module.Int32Tensor()
    tensor.keys.append(value)  # packed uint64: tag, length, then the varint
    assert tensor.SerializeToString()[2:] == rp.varint(value)


def test_recordio_framing_escapes_aligned_magic_words_as_dmlc_does(tmp_path):
    import mxnet as mx

    magic = struct.pack("<I", MAGIC)
    payloads = [
        b"",
        b"abc",
        magic + b"xyz",  # magic at the start: an empty first part
        b"abcd" + magic + b"efgh" + magic + magic + b"ij",  # several, adjacent ones included
        b"ab" + magic + b"cd",  # not 4-aligned: no split
        b"abcd" + magic,  # magic at the very end
    ]
    path = tmp_path / "records.rec"
    with open(path, "wb") as handle:
        for payload in payloads:
            length, chunks = framed(np.frombuffer(payload, dtype=np.uint8))
            data = b"".join(chunks)
            assert len(data) == length and length % 4 == 0
            handle.write(data)
    reader = mx.recordio.MXRecordIO(str(path), "r")
    assert [reader.read() for _ in payloads] == payloads
    assert reader.read() is None


def test_probabilities_beyond_a_recordio_record_are_refused_before_any_work():
    prediction = random_prediction(21, 6000, 4000)  # 2 GB of floats
    with pytest.raises(PayloadTooLarge, match="RecordIO record"):
        codecs.encode_probabilities(prediction, "application/x-protobuf")


def test_png_is_an_8_bit_mask_of_class_ids():
    prediction = random_prediction(4, 17, 31)
    body = body_of(codecs.encode_png(prediction, "image/png"))
    image = Image.open(io.BytesIO(body))
    assert image.format == "PNG" and image.mode == "P"
    mask = np.array(image)
    assert mask.dtype == np.uint8 and mask.shape == (17, 31)
    np.testing.assert_array_equal(mask, prediction.class_ids())


def test_json_holds_the_mask_and_its_shape():
    prediction = random_prediction(4, 3, 5)
    answer = json.loads(body_of(codecs.encode_json(prediction, "application/json")))
    assert answer["shape"] == [3, 5]
    np.testing.assert_array_equal(np.array(answer["mask"]), prediction.class_ids())


NAMED = classes.ClassTable(("road", "car", "sky", "tree"), ((128, 64, 128), (250, 50, 83), (70, 130, 180), (0, 90, 0)))


def test_the_png_palette_is_the_models_class_colours_while_pixels_stay_class_ids():
    prediction = random_prediction(4, 9, 11)
    named = Prediction(prediction.height, prediction.width, prediction.probabilities, NAMED)
    image = Image.open(io.BytesIO(body_of(codecs.encode_png(named, "image/png"))))
    np.testing.assert_array_equal(np.array(image), prediction.class_ids())
    assert image.getpalette()[:12] == [channel for color in NAMED.colors for channel in color]
    shown = np.array(image.convert("RGB"))  # what a viewer shows: the label map's colours
    np.testing.assert_array_equal(shown, np.array(NAMED.colors, dtype=np.uint8)[prediction.class_ids()])
    unnamed = Image.open(io.BytesIO(body_of(codecs.encode_png(prediction, "image/png"))))
    assert unnamed.getpalette()[:12] == [c for color in classes.voc_colors()[:4] for c in color]


def test_json_names_the_classes():
    prediction = random_prediction(4, 3, 5)
    unnamed = json.loads(body_of(codecs.encode_json(prediction, "application/json")))
    assert unnamed["classes"] == ["class_0", "class_1", "class_2", "class_3"]
    named = Prediction(3, 5, prediction.probabilities, NAMED)
    answer = json.loads(body_of(codecs.encode_json(named, "application/json")))
    assert answer["classes"] == list(NAMED.names) and answer["shape"] == [3, 5]
    np.testing.assert_array_equal(np.array(answer["mask"]), prediction.class_ids())


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, "image/png"),
        ("", "image/png"),
        ("*/*", "image/png"),
        ("image/*", "image/png"),
        ("application/*", "application/x-protobuf"),
        ("application/json", "application/json"),
        ("text/html, application/x-recordio-protobuf;q=0.9", "application/x-recordio-protobuf"),
        ("IMAGE/PNG; charset=binary", "image/png"),
    ],
)
def test_accept_negotiation(header, expected):
    assert codecs.response_type(header, "image/png") == expected


def test_the_default_accept_is_configurable():
    assert codecs.response_type(None, "application/json") == "application/json"
    assert codecs.response_type("*/*", "application/x-protobuf") == "application/x-protobuf"
    assert codecs.response_type(None, "text/csv") == "image/png"  # an unusable default falls back


@pytest.mark.parametrize("header", ["text/csv", "image/jpeg", "application/xml, text/plain"])
def test_unsupported_accept_is_406(header):
    with pytest.raises(UnsupportedAccept, match="not supported") as caught:
        codecs.response_type(header, "image/png")
    assert caught.value.http_status == 406


@pytest.mark.parametrize(
    "header, expected",
    [
        ("image/jpeg", "image/jpeg"),
        ("image/png", "image/png"),
        ("application/x-image", "application/x-image"),
        ("application/octet-stream", "application/octet-stream"),
        ("Image/JPEG; charset=binary", "image/jpeg"),
        (None, "application/octet-stream"),
    ],
)
def test_request_content_types(header, expected):
    assert codecs.request_type(header) == expected


@pytest.mark.parametrize("header", ["text/csv", "application/json", "application/x-www-form-urlencoded"])
def test_unsupported_content_type_is_415(header):
    with pytest.raises(UnsupportedContentType) as caught:
        codecs.request_type(header)
    assert caught.value.http_status == 415


def test_upsampling_matches_opencv_bilinear_and_does_not_depend_on_tiles(monkeypatch):
    import cv2

    source = np.random.RandomState(1).rand(3, 7, 9).astype(np.float32)
    whole = assembled(geometry.upsampled_tiles(source, 50, 37), 3, 50, 37)
    reference = cv2.resize(source.transpose(1, 2, 0), (37, 50), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    np.testing.assert_allclose(whole, reference, atol=1e-5)
    monkeypatch.setattr(geometry, "TILE_ELEMENTS", 3 * 37 * 4)  # strips of 4 whole rows
    tiles = list(geometry.upsampled_tiles(source, 50, 37))
    assert len(tiles) == 13 and {left for _, left, _ in tiles} == {0}
    np.testing.assert_array_equal(assembled(tiles, 3, 50, 37), whole)
    monkeypatch.setattr(geometry, "TILE_ELEMENTS", 3 * 10)  # rows longer than a tile: 1 x 10 tiles
    tiles = list(geometry.upsampled_tiles(source, 50, 37))
    assert len(tiles) == 50 * 4 and max(tile.size for _, _, tile in tiles) <= 3 * 10
    np.testing.assert_array_equal(assembled(tiles, 3, 50, 37), whole)


def test_a_one_row_image_of_64_million_pixels_is_upsampled_in_bounded_tiles():
    """A row of 64 000 000 pixels at 4 classes is a gigabyte of floats: no tile may hold a row."""
    source = np.random.RandomState(2).rand(4, 1, 520).astype(np.float32)
    biggest = 0
    for _, _, tile in geometry.upsampled_tiles(source, 1, 64_000_000):
        biggest = max(biggest, tile.nbytes)
        break  # the first tile shows the bound; all 64 000 000 columns would take a while
    assert biggest <= 4 * geometry.TILE_ELEMENTS
    assert geometry.tile_shape(4, 1, 64_000_000) == (1, geometry.TILE_ELEMENTS // 4)
    assert geometry.tile_shape(1000, 8000, 8000)[0] * geometry.tile_shape(1000, 8000, 8000)[1] * 1000 <= (
        geometry.TILE_ELEMENTS
    )


@pytest.mark.parametrize(
    "size, side, expected",
    [
        ((1, 1), 48, (48, 48)),
        ((31, 17), 48, (48, 26)),
        ((6000, 4000), 520, (520, 347)),
        ((1, 5000), 520, (1, 520)),
        ((480, 641), 48, (36, 48)),
    ],
)
def test_fit_within_keeps_the_aspect(size, side, expected):
    assert geometry.fit_within(*size, side) == expected
