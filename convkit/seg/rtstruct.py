"""RTSTRUCT -> label maps on the grid of the series its contours were drawn on.

Each CLOSED_PLANAR contour (LPS mm) is mapped into the grid's voxel indices (so oblique
series work as axial ones do), put on the slice its plane lies in, and filled
(rasterize.py); the contours of one ROI on one slice combine even-odd (holes by
nesting). One label per ROI (its ROINumber); ROIs that overlap give one mask each.
Points outside the field of view and contours between slices are reported, not hidden.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convkit.dicom.dataset import read_dataset
from convkit.errors import InputError, RefusedError
from convkit.geometry import LPS_TO_RAS
from convkit.seg.dicomseg import SegLabelMaps, combine_masks
from convkit.seg.rasterize import fill_polygon

#: A contour whose plane lies farther than this (in slices) from a slice centre is noted.
OFF_SLICE_TOLERANCE = 0.1


def read_rtstruct(path: Path | str, grid_affine: np.ndarray,
                  grid_shape: tuple[int, int, int]) -> SegLabelMaps:
    """The ROIs of the RTSTRUCT at path as label maps on grid_affine (RAS) / grid_shape."""
    dataset = read_dataset(Path(path))
    names = {int(item.ROINumber): str(item.get("ROIName", ""))
             for item in dataset.get("StructureSetROISequence", []) or []}
    to_index = np.linalg.inv(grid_affine) @ LPS_TO_RAS  # LPS mm -> voxel index
    numbers, masks, notes = [], [], []
    for roi in dataset.get("ROIContourSequence", []) or []:
        number = int(roi.ReferencedROINumber)
        name = names.get(number, f"ROI {number}")
        mask, roi_notes = rasterize_roi(roi.get("ContourSequence", []) or [], to_index,
                                        grid_shape)
        notes += [f"ROI {number} ({name}): {note}" for note in roi_notes]
        numbers.append(number)
        masks.append(mask)
    if not numbers:
        raise RefusedError(f"{path}: the RTSTRUCT holds no contour", "check the file",
                           "seg.empty")
    arrays, overlap = combine_masks(numbers, masks, grid_shape)
    segments = [{"SegmentNumber": n, "SegmentLabel": names.get(n, f"ROI {n}"),
                 "Voxels": int(np.count_nonzero(m))} for n, m in zip(numbers, masks, strict=True)]
    metadata = {"Modality": "RTSTRUCT", "SOPInstanceUID": str(dataset.get("SOPInstanceUID", "")),
                "StructureSetLabel": str(dataset.get("StructureSetLabel", "")),
                "Segments": segments}
    return SegLabelMaps(arrays, segments, overlap, metadata, notes)


def rasterize_roi(contours: Any, to_index: np.ndarray, grid_shape: tuple[int, int, int]
                  ) -> tuple[np.ndarray, list[str]]:
    """One ROI's mask: every closed contour XOR-ed onto its slice."""
    mask = np.zeros(grid_shape, dtype=bool, order="F")
    outside = off_slice = skipped = 0
    for contour in contours:
        if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
            skipped += 1
            continue
        points = contour_indices(contour, to_index)
        outside += int(np.count_nonzero(_outside(points, grid_shape)))
        k = float(np.median(points[:, 2]))
        slice_index = int(np.rint(k))
        if np.abs(points[:, 2] - k).max() > OFF_SLICE_TOLERANCE:
            raise RefusedError("a contour is not in one slice plane of the series (its "
                               "points span several slices)",
                               "RTSTRUCT contours must lie in the image planes",
                               "seg.off-grid")
        if abs(k - slice_index) > OFF_SLICE_TOLERANCE:
            off_slice += 1
        if 0 <= slice_index < grid_shape[2]:
            mask[:, :, slice_index] ^= fill_polygon(points[:, :2], grid_shape[:2])
    notes = []
    if outside:
        notes.append(f"{outside} contour points lie outside the series' field of view")
    if off_slice:
        notes.append(f"{off_slice} contours lie between slices (put on the nearest)")
    if skipped:
        notes.append(f"{skipped} contours are not CLOSED_PLANAR (points, open lines): skipped")
    return mask, notes


def contour_indices(contour: Any, to_index: np.ndarray) -> np.ndarray:
    """(n, 3) voxel indices of a contour's points."""
    data = np.asarray([float(v) for v in contour.ContourData], dtype=float)
    if data.size < 9 or data.size % 3 or not np.isfinite(data).all():
        raise InputError("a contour's ContourData is not a list of (x, y, z) points",
                         "check the RTSTRUCT (dciodvfy)", "seg.unreadable")
    lps = data.reshape(-1, 3)
    return lps @ to_index[:3, :3].T + to_index[:3, 3]


def _outside(points: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    low, high = -0.5, np.asarray(shape[:2]) - 0.5
    return np.asarray(((points[:, :2] < low) | (points[:, :2] > high)).any(axis=1))
