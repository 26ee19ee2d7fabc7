"""CVAT's automatic annotation: the "detector" protocol of its serverless functions, for our model.

CVAT's lambda manager POSTs ``{"image": "<base64 of the frame's encoded image>", "threshold": <float>}``
(``threshold`` optional) and reads back a JSON list, one entry per shape. A segmentation model
answers, for each connected region of each non-background class::

    {"label": "<class name>", "type": "mask", "confidence": <float>,
     "points": [x1, y1, x2, y2, ...],
     "mask": [<the region's 0/255 pixels inside its box, row by row>..., xtl, ytl, xbr, ybr]}

- regions are 8-connected components of the predicted class mask (the mask ``/invocations`` answers
  as a PNG), so the masks of one class put back at their boxes cover exactly that class's pixels;
- ``confidence`` is the region's mean top-class probability, rounded to 4 decimals; a region whose
  confidence is below ``threshold`` is left out of the answer (no threshold, or ``null``, keeps
  every region: CVAT does not send a threshold of 0);
- ``points`` is the region's outer boundary as a polygon (``cv2.findContours``, simplified by at most
  one pixel), which CVAT uses when asked to convert masks to polygons; holes are kept in the mask
  only, and a region too thin for a polygon of three corners gets the outline of its box;
- ``mask`` is CVAT's own layout, ``mask[ytl:ybr + 1, xtl:xbr + 1].flat[:].tolist() + [xtl, ytl, xbr, ybr]``,
  with inclusive box bounds in frame pixels; pixels of other regions inside the box are 0.

The background class gets no shapes: the class named ``background`` (any case, as CVAT's label maps
name it, wherever the class table puts it), else class 0, as for a model without names.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from ..classes import ClassTable, background_id
from ..classes import regions as connected_regions
from ..errors import PayloadTooLarge, UserError
from .predictor import Prediction, Predictor

CONFIDENCE_DECIMALS = 4
_WHITESPACE = re.compile(rb"\s+")


def labelled_classes(table: ClassTable) -> list[tuple[int, str]]:
    """``(class id, name)`` of every class the detector can answer: all but the background."""
    background = background_id(table)
    return [(class_id, name) for class_id, name in enumerate(table.names) if class_id != background]


@dataclass(frozen=True)
class DetectorRequest:
    image: bytes  # the encoded frame
    threshold: float  # regions with a lower confidence are left out


def parse_request(body: bytes | str | Mapping) -> DetectorRequest:
    """The request CVAT sends, from its raw JSON body, or the object nuclio already decoded from it."""
    if isinstance(body, bytes | bytearray | memoryview | str):
        try:
            body = json.loads(bytes(body) if not isinstance(body, str) else body)
        except (ValueError, UnicodeDecodeError):
            raise UserError(
                'The request body is not JSON; send {"image": "<base64 of a JPEG or PNG>", "threshold": 0.5}'
            ) from None
    if not isinstance(body, Mapping):
        raise UserError('The request body must be a JSON object such as {"image": "<base64 of a JPEG or PNG>"}')
    text = body.get("image")
    if not isinstance(text, str) or not text:
        raise UserError('The request has no "image": give the frame as a base64 string of its JPEG or PNG file')
    try:
        image = base64.b64decode(_WHITESPACE.sub(b"", text.encode("ascii")), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise UserError(
            'The "image" field is not valid base64; give the frame\'s JPEG or PNG file base64-encoded'
        ) from None
    if not image:
        raise UserError('The "image" field is empty; give the frame\'s JPEG or PNG file base64-encoded')
    threshold = body.get("threshold")
    if threshold is None:
        threshold = 0.0
    elif isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        given = json.dumps(threshold, default=str)[:40]  # ASCII only: controls and marks are escaped
        raise UserError(f'The "threshold" must be a number from 0 to 1, not {given}')
    return DetectorRequest(image, float(threshold))


def outline(region: np.ndarray, left: int, top: int) -> list[int]:
    """The flattened ``[x1, y1, ...]`` outer polygon of a 0/255 region, in frame coordinates."""
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        contour = max(contours, key=len)  # one contour: the region is one 8-connected component
        polygon = cv2.approxPolyDP(contour, 1.0, True)
        if len(polygon) >= 3:
            return (polygon.reshape(-1, 2) + (left, top)).ravel().tolist()
    height, width = region.shape
    right, bottom = left + width, top + height  # the box's outer edges
    return [left, top, right, top, right, bottom, left, bottom]


def shapes(prediction: Prediction, threshold: float = 0.0) -> Iterator[dict]:
    """CVAT's shapes for one prediction: one per region of each labelled class, at or above ``threshold``."""
    ids, top = prediction.top_classes()
    for class_id, name in labelled_classes(prediction.classes):
        regions, count = connected_regions(ids == class_id)
        if not count:
            continue
        flat = regions.ravel()
        sizes = np.bincount(flat, minlength=count + 1)
        sums = np.bincount(flat, weights=top.ravel(), minlength=count + 1)
        for index, box in enumerate(ndimage.find_objects(regions), start=1):
            confidence = round(float(sums[index] / sizes[index]), CONFIDENCE_DECIMALS)
            if confidence < threshold:
                continue
            rows, columns = box
            region = np.where(regions[box] == index, np.uint8(255), np.uint8(0))
            xtl, ytl, xbr, ybr = columns.start, rows.start, columns.stop - 1, rows.stop - 1
            yield {
                "label": name,
                "type": "mask",
                "confidence": confidence,
                "points": outline(region, xtl, ytl),
                "mask": region.ravel().tolist() + [xtl, ytl, xbr, ybr],
            }


def detector_answer(predictor: Predictor, body: bytes | str | Mapping) -> list[dict]:
    """The whole of one detector request: parse it, predict, and list the shapes CVAT reads.

    ``body`` is the request's JSON (bytes or text), or the object nuclio decodes it to for a JSON
    request. Every malformed request is a ``UserError`` of one sentence (a ``PayloadTooLarge`` for
    an image over the pixel limit); regions below the request's threshold are left out.
    """
    request = parse_request(body)
    try:
        prediction = predictor.predict(request.image)
    except PayloadTooLarge:
        raise
    except UserError:
        raise UserError(
            'The "image" field decodes to bytes that are not an image; give the frame\'s JPEG or PNG file '
            "base64-encoded"
        ) from None
    return list(shapes(prediction, request.threshold))
