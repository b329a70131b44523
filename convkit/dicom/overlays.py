"""Overlay planes (60xx,3000): one-bit graphics or ROIs stored beside the pixels.

Up to 16 overlay groups (6000, 6002 ... 601E) per image. Converters drop them
without a word; convkit reports them (the series' notes and sidecar, the audit)
and, when asked (dicom2nii --overlays), writes them as a label map on the image's
own grid: voxel value = the sum of 2**n over the overlay groups 60xx that cover
the voxel, n = 0xxx / 2 (group 6000 -> 1, 6002 -> 2, 6004 -> 4 ...), so that
overlapping overlays stay apart. Only single-frame images whose grid is written
as stored (no tilt correction, no regridding) get a label map: a one-bit mask is
not interpolated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convkit.dicom.dataset import read_dataset
from convkit.dicom.header import SliceHeader
from convkit.dicom.plan import SeriesPlan
from convkit.errors import RefusedError

#: The label map of NAME is written as NAME + this suffix + the format's suffix.
OVERLAY_SUFFIX = "_overlay"


def group_name(group: int) -> str:
    return f"{group:04X}"


def overlay_value(group: int) -> int:
    """The bit of overlay group 60xx in the label map: 2 ** (xx / 2)."""
    return 1 << ((group - 0x6000) // 2)


def overlay_groups_of(headers: list[SliceHeader]) -> list[int]:
    """Every overlay group any image of the series holds, ascending."""
    return sorted({group for header in headers for group in header.overlays})


def overlay_summary(headers: list[SliceHeader]) -> str:
    """'overlay planes (60xx,3000) in 3 of 20 images: groups 6000, 6002' ('' without any)."""
    groups = overlay_groups_of(headers)
    if not groups:
        return ""
    images = sum(1 for header in headers if header.overlays)
    names = ", ".join(group_name(group) for group in groups)
    return (f"overlay planes (60xx,3000) in {images} of {len(headers)} images: "
            f"group{'s' if len(groups) > 1 else ''} {names}")


def overlay_fields(headers: list[SliceHeader]) -> dict[str, Any]:
    """Sidecar fields: the overlay groups and their values in the label map."""
    groups = overlay_groups_of(headers)
    if not groups:
        return {}
    return {"OverlayGroups": [group_name(group) for group in groups],
            "OverlayImages": sum(1 for header in headers if header.overlays),
            "OverlayLabelValues": {group_name(group): overlay_value(group) for group in groups}}


def overlay_labels(plan: SeriesPlan) -> np.ndarray:
    """The label map (uint16, (i, j, k[, t]) on plan.grid) of the series' overlay planes.

    RefusedError when the overlays cannot be put on the grid as stored: a tilted stack
    (straightened), a regridded one, multi-frame or mosaic images.
    """
    stack, layout = plan.stack, plan.layout
    if stack.sheared or stack.gaps:
        raise RefusedError("overlays not written: the image is resampled (tilt or uneven "
                           "spacing) and a one-bit overlay is not interpolated")
    headers = [header for images in layout.positions for header in images]
    if any(header.frame >= 0 and header.overlays for header in headers):
        raise RefusedError("overlays not written: overlays of multi-frame or mosaic images "
                           "are not supported")
    n_t = layout.n_times
    labels = np.zeros(plan.grid.shape + ((n_t,) if n_t > 1 else ()), np.uint16, order="F")
    for k, images in enumerate(layout.positions):
        for t, header in enumerate(images):
            if header.overlays:
                index = (slice(None), slice(None), k) + ((t,) if n_t > 1 else ())
                labels[index] = overlay_plane(header).T
    return labels


def overlay_plane(header: SliceHeader) -> np.ndarray:
    """The overlays of one image as a (rows, columns) uint16 map of their bits, each
    placed at its OverlayOrigin (60xx,0050: 1-based row and column of its first pixel;
    the parts outside the image are dropped)."""
    ds = read_dataset(header.path)
    plane = np.zeros((header.rows, header.columns), np.uint16)
    for group in header.overlays:
        bits = np.asarray(ds.overlay_array(group)) != 0
        origin = ds.get((group, 0x0050))
        row0, col0 = (int(v) - 1 for v in origin.value) if origin is not None else (0, 0)
        rows = slice(max(row0, 0), min(row0 + bits.shape[0], header.rows))
        cols = slice(max(col0, 0), min(col0 + bits.shape[1], header.columns))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            continue
        part = bits[rows.start - row0:rows.stop - row0, cols.start - col0:cols.stop - col0]
        plane[rows, cols] |= (part * overlay_value(group)).astype(np.uint16)
    return plane
