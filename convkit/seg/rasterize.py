"""Polygons -> pixels: a closed contour filled on one slice of a voxel grid.

Points are in voxel index space (i along a row, j down the columns). A pixel is inside
when its centre is (scanline crossings, half-open so that two polygons sharing an edge
never both take a pixel). Several contours of one ROI on one slice combine even-odd:
a contour nested in another is a hole, one nested in the hole an island.
"""

from __future__ import annotations

import numpy as np

#: Points and crossings are rounded to this many decimals of a voxel before a pixel centre is
#: tested: a vertex exactly on a centre must not flip with the float32 round-off of an
#: affine stored in NIfTI (~1e-5 voxel), so the same contour fills the same pixels on a grid
#: read back from a file.
ROUNDING_DECIMALS = 4


def fill_polygon(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean (ni, nj) mask of the pixel centres inside the closed polygon points (n, 2)."""
    mask = np.zeros(shape, dtype=bool)
    if len(points) < 3:
        return mask
    points = np.round(points, ROUNDING_DECIMALS)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    low = max(0, int(np.ceil(y0.min())))
    high = min(shape[1] - 1, int(np.floor(y0.max())))
    for j in range(low, high + 1):
        # edges crossing the scanline y = j, half-open in y (a vertex counts once)
        crossing = (y0 <= j) != (y1 <= j)
        if not crossing.any():
            continue
        t = (j - y0[crossing]) / (y1[crossing] - y0[crossing])
        xs = np.sort(np.round(x0[crossing] + t * (x1[crossing] - x0[crossing]),
                              ROUNDING_DECIMALS))
        for start, stop in zip(xs[0::2], xs[1::2], strict=False):
            first = max(0, int(np.ceil(start)))
            last = min(shape[0], int(np.ceil(stop)))  # centres with start <= i < stop
            if first < last:
                mask[first:last, j] = True
    return mask


def polygon_area(points: np.ndarray) -> float:
    """Exact area of a simple polygon (shoelace), in the units of points squared."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
