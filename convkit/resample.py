"""Array resampling for the two cases where a DICOM stack is not a regular grid.

Pure numpy. Arrays are indexed (i, j, k[, t]) as in volume.py.

- Shear (gantry tilt): each slice is exact in its own plane, only displaced
  in-plane. Shifting every slice by its own offset (linear interpolation in i
  and j) puts it on a grid whose k axis is the slice normal; no value is
  interpolated between slices.
- Uneven spacing: slices sit at arbitrary distances along the normal; linear
  interpolation between the two neighbouring slices gives a regular grid.
"""

from __future__ import annotations

import math

import numpy as np

from convkit.geometry import typical_step


def shear_grid(offsets_px: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Integer origin shift and output in-plane size that hold every shifted slice.

    offsets_px: (n, 2) in-plane displacement of each slice origin, in pixels
    along i and j. Returns (origin_px, (size_i, size_j)): the output grid starts
    origin_px pixels from the first slice's origin.
    """
    low = np.floor(offsets_px.min(axis=0)).astype(int)
    high = np.ceil(offsets_px.max(axis=0)).astype(int)
    return low, (size[0] + int(high[0] - low[0]), size[1] + int(high[1] - low[1]))


def unshear(
    array: np.ndarray, offsets_px: np.ndarray, fill: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Shift each slice k by offsets_px[k] (pixels along i, j) onto a common straight grid.

    Returns (new array, origin shift in pixels). Values outside a slice's field of
    view are fill. Integer arrays are rounded back to their own type.
    """
    origin_px, (size_i, size_j) = shear_grid(offsets_px, array.shape[:2])
    out = np.empty((size_i, size_j, *array.shape[2:]), dtype=array.dtype, order="F")
    for k in range(array.shape[2]):
        shift = offsets_px[k] - origin_px
        for t in np.ndindex(*array.shape[3:]):
            plane = array[(slice(None), slice(None), k, *t)].astype(np.float32)
            plane = _shift_axis(plane, float(shift[0]), size_i, 0, fill)
            plane = _shift_axis(plane, float(shift[1]), size_j, 1, fill)
            out[(slice(None), slice(None), k, *t)] = _to_dtype(plane, array.dtype)
    return out, origin_px


def regrid_slices(array: np.ndarray, distances: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Linear interpolation along k from slices at distances (ascending) to targets (mm)."""
    out = np.empty((*array.shape[:2], len(targets), *array.shape[3:]), dtype=array.dtype, order="F")
    for index, target in enumerate(targets):
        upper = int(np.clip(np.searchsorted(distances, target), 1, len(distances) - 1))
        lower = upper - 1
        weight = (target - distances[lower]) / (distances[upper] - distances[lower])
        if weight <= 1e-6 or weight >= 1 - 1e-6:
            out[:, :, index] = array[:, :, lower if weight <= 0.5 else upper]
            continue
        mixed = (array[:, :, lower].astype(np.float32) * np.float32(1 - weight)
                 + array[:, :, upper].astype(np.float32) * np.float32(weight))
        out[:, :, index] = _to_dtype(mixed, array.dtype)
    return out


def regular_targets(distances: np.ndarray) -> np.ndarray:
    """A regular grid from the first to the last distance at about the most common step."""
    span = float(distances[-1] - distances[0])
    typical = typical_step(np.diff(distances))
    count = max(2, int(round(span / typical)) + 1)
    return distances[0] + np.arange(count) * (span / (count - 1))


def _shift_axis(plane: np.ndarray, shift: float, size: int, axis: int, fill: float) -> np.ndarray:
    """out[x] = plane[x - shift] along axis (linear), for x in range(size); fill outside."""
    whole = math.floor(shift)
    frac = np.float32(shift - whole)
    length = plane.shape[axis]
    pad_before = max(whole + 1, 0)
    pad_after = max(size - whole - length, 0) + 1
    widths = [(0, 0), (0, 0)]
    widths[axis] = (pad_before, pad_after)
    padded = np.pad(plane, widths, constant_values=fill)
    # Source index x - whole sits at padded index x - whole + pad_before.
    start = pad_before - whole
    here = np.take(padded, np.arange(start, start + size), axis=axis)
    before = np.take(padded, np.arange(start - 1, start - 1 + size), axis=axis)
    if frac == 0:
        return here
    return here * (1 - frac) + before * frac


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)
