"""Image geometry for any-size inference: fit the image into the engine's square input, then map
the class probabilities back to the input's exact height and width.

The network sees the image with its longer side at ``S`` pixels (aspect kept, the rest padded),
so the cost and the memory of the forward pass do not depend on the input size. Mapping back is a
bilinear resize of the probabilities (half-pixel centres, as OpenCV and PyTorch's
``align_corners=False``), done in tiles of at most ``TILE_ELEMENTS`` floats, so that no answer
holds more than a few megabytes of intermediate floats whatever its size, aspect ratio (a 1 x
64 000 000 image has rows of a gigabyte at 4 classes) or class count; a convex combination of
probabilities still sums to one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

TILE_ELEMENTS = 1 << 22  # floats per tile (16 MB): bounds the memory of upsampling


def fit_within(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is ``side``, each at least 1 pixel."""
    scale = side / max(width, height)
    return max(1, min(side, round(width * scale))), max(1, min(side, round(height * scale)))


def _taps(out_size: int, in_size: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For output indices start .. stop-1: the two source indices and the weight of the second one.

    Computed per tile: for a 64 000 000-pixel row, taps of the whole row would take 2 GB.
    """
    position = (np.arange(start, stop, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    position = np.clip(position, 0.0, in_size - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (position - low).astype(np.float32)


def tile_shape(channels: int, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of a tile: whole rows when a row fits in the budget, else part of one row."""
    columns = min(width, max(1, TILE_ELEMENTS // max(1, channels)))
    return min(height, max(1, TILE_ELEMENTS // (max(1, channels) * columns))), columns


def upsampled_tiles(probabilities: np.ndarray, height: int, width: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(top, left, tile)`` covering (C, height, width), each tile float32 (C, rows, columns).

    ``probabilities`` is float32 (C, h, w); the tiles are its bilinear resize to height x width.
    """
    channels, in_height, in_width = probabilities.shape
    tile_rows, tile_columns = tile_shape(channels, height, width)
    for top in range(0, height, tile_rows):
        bottom = min(height, top + tile_rows)
        row_low, row_high, row_weight = _taps(height, in_height, top, bottom)
        weight = row_weight[None, :, None]
        lines = probabilities[:, row_low, :] * (1 - weight) + probabilities[:, row_high, :] * weight
        for left in range(0, width, tile_columns):
            low, high, col = _taps(width, in_width, left, min(width, left + tile_columns))
            tile = lines[:, :, low] * (1 - col) + lines[:, :, high] * col
            yield top, left, tile.astype(np.float32, copy=False)


# Sliding windows: square windows of the engine's side S, neighbours overlapping by at least a
# third of S (GluonCV's evaluation stride of 2S/3), spread evenly so the last one ends at the edge.
WINDOW_OVERLAP = 1 / 3
# Floats of the probability canvas one sliding-window image may hold (256 MB): with many classes the
# image is scaled down further, so memory stays bounded whatever the class count.
CANVAS_ELEMENTS = 1 << 26


def window_stride(side: int) -> int:
    return max(1, int(side * (1 - WINDOW_OVERLAP)))


def window_starts(length: int, side: int) -> list[int]:
    """Where the windows along one axis of ``length`` pixels start; one window when it fits."""
    if length <= side:
        return [0]
    count = -(-(length - side) // window_stride(side)) + 1
    return [round(i * (length - side) / (count - 1)) for i in range(count)]


def windows(width: int, height: int, side: int) -> list[tuple[int, int]]:
    """``(top, left)`` of every window covering a width x height image."""
    return [(top, left) for top in window_starts(height, side) for left in window_starts(width, side)]


def sliding_size(width: int, height: int, side: int, max_windows: int, classes: int) -> tuple[int, int]:
    """(width, height) to slide windows over: the image's own size, or scaled down (aspect kept)
    as little as needed for at most ``max_windows`` windows and ``CANVAS_ELEMENTS`` canvas floats."""

    def span(count: int) -> int:  # the longest axis ``count`` windows cover
        return side + (count - 1) * window_stride(side)

    scale = max(
        min(1.0, span(across) / width, span(max_windows // across) / height) for across in range(1, max_windows + 1)
    )
    scale = min(scale, (CANVAS_ELEMENTS / (max(1, classes) * width * height)) ** 0.5)
    return max(1, min(width, int(width * scale))), max(1, min(height, int(height * scale)))
