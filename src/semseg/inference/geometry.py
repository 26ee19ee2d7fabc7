"""Image geometry for any-size inference: fit the image into the engine's square input, then map
the class probabilities back to the input's exact height and width.

The network sees the image with its longer side at ``S`` pixels (aspect kept, the rest padded),
so the cost and the memory of the forward pass do not depend on the input size. Mapping back is a
bilinear resize of the probabilities (half-pixel centres, as OpenCV and PyTorch's
``align_corners=False``), done in horizontal strips so that a 24-megapixel answer never holds
more than a few megabytes of intermediate floats; a convex combination of probabilities still
sums to one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

STRIP_ELEMENTS = 1 << 22  # floats per strip (16 MB): bounds the memory of upsampling


def fit_within(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) scaled so the longer side is ``side``, each at least 1 pixel."""
    scale = side / max(width, height)
    return max(1, min(side, round(width * scale))), max(1, min(side, round(height * scale)))


def _taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and the weight of the second one."""
    position = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    position = np.clip(position, 0.0, in_size - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (position - low).astype(np.float32)


def upsampled_strips(probabilities: np.ndarray, height: int, width: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(top_row, strip)`` covering (C, height, width), each strip float32 (C, rows, width).

    ``probabilities`` is float32 (C, h, w); the strips are its bilinear resize to height x width.
    """
    channels, in_height, in_width = probabilities.shape
    row_low, row_high, row_weight = _taps(height, in_height)
    col_low, col_high, col_weight = _taps(width, in_width)
    rows_per_strip = max(1, STRIP_ELEMENTS // max(1, channels * width))
    for top in range(0, height, rows_per_strip):
        rows = slice(top, min(height, top + rows_per_strip))
        weight = row_weight[rows][None, :, None]
        lines = probabilities[:, row_low[rows], :] * (1 - weight) + probabilities[:, row_high[rows], :] * weight
        strip = lines[:, :, col_low] * (1 - col_weight) + lines[:, :, col_high] * col_weight
        yield top, strip.astype(np.float32, copy=False)
