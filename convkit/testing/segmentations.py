"""Synthetic segmentation data with known geometry: a CT series, label maps on it in any
axis order, and RTSTRUCT files with hand-built contours (tests, sample data, benchmarks).

World-space helpers (labels_at_world) are deliberately independent of convkit.seg: a
plain inverse affine and rounding, so that tests do not check convkit with itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convkit.geometry import affine_lps, lps_to_ras, plane_axes
from convkit.testing.synthetic import regular_positions, uid, write_series

RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass
class SyntheticCT:
    """A CT series on disk and the RAS affine of its voxels (column, row, slice)."""

    folder: Path
    paths: list[Path]
    affine: np.ndarray  # (i = column, j = row, k = slice in position order) -> RAS mm
    shape: tuple[int, int, int]  # (columns, rows, slices)


def write_ct(folder: Path | str, shape: tuple[int, int, int] = (40, 32, 12),
             orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
             pixel_spacing: tuple[float, float] = (0.8, 0.7), spacing: float = 2.5,
             origin: Sequence[float] = (-15.0, -12.0, 30.0), seed: int = 7) -> SyntheticCT:
    """A CT series of shape (columns, rows, slices) whose voxel values encode nothing."""
    columns, rows, slices = shape
    positions = regular_positions(slices, orientation, origin, spacing)
    stored = np.zeros((slices, rows, columns), dtype=np.int16)
    stored[:, rows // 4: rows // 2, columns // 4: columns // 2] = 40
    paths = write_series(folder, stored, positions, orientation=orientation,
                         pixel_spacing=pixel_spacing, seed=seed)
    step = plane_axes(np.asarray(orientation, float))[2] * spacing
    affine = lps_to_ras(affine_lps(orientation, pixel_spacing, positions[0], step))
    return SyntheticCT(Path(folder), paths, affine, shape)


def blob_labels(shape: tuple[int, int, int], n_labels: int = 3) -> np.ndarray:
    """A label map with n_labels non-overlapping boxes of different sizes (and empty slices)."""
    labels = np.zeros(shape, dtype=np.uint8, order="F")
    ni, nj, nk = shape
    for label in range(1, n_labels + 1):
        i0 = (label * ni) // (n_labels + 2)
        j0 = (label * nj) // (n_labels + 3)
        k0 = 1 + (label - 1) % max(1, nk - 2)
        labels[i0: i0 + max(1, ni // (n_labels + 3)), j0: j0 + 3 + label,
               k0: min(nk - 1, k0 + label)] = label
    return labels


def reorder(labels: np.ndarray, affine: np.ndarray, axes: Sequence[int],
            flips: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """The same label map with its axes permuted and flipped: (array, affine), world-equal."""
    array, new_affine = labels, affine.copy()
    for axis, flip in enumerate(flips):
        if flip:
            array = np.flip(array, axis)
            n = labels.shape[axis]
            new_affine[:3, 3] = new_affine[:3, 3] + new_affine[:3, axis] * (n - 1)
            new_affine[:3, axis] = -new_affine[:3, axis]
    array = np.transpose(array, axes)
    new_affine[:3, :3] = new_affine[:3, list(axes)]
    return np.asfortranarray(array), new_affine


def labels_at_world(array: np.ndarray, affine: np.ndarray, points_ras: np.ndarray,
                    outside: int = -1) -> np.ndarray:
    """The label of the voxel whose centre is at each RAS point (outside: not in the array).

    A point farther than 0.05 voxels from a voxel centre is an error: the tests ask only
    about voxel centres, so a grid that is off by a fraction of a voxel is caught.
    """
    index = (np.linalg.inv(affine) @ np.c_[points_ras, np.ones(len(points_ras))].T)[:3].T
    rounded = np.rint(index)
    if np.abs(index - rounded).max(initial=0.0) > 0.05:
        raise AssertionError("points are not voxel centres of this grid: "
                             f"{np.abs(index - rounded).max():.3f} voxels off")
    rounded = rounded.astype(int)
    inside = ((rounded >= 0) & (rounded < np.asarray(array.shape[:3]))).all(axis=1)
    values = np.full(len(points_ras), outside, dtype=np.int64)
    values[inside] = array[tuple(rounded[inside].T)]
    return values


def voxel_centres(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(n, 3) RAS centres of every voxel of a grid, in C order of (i, j, k)."""
    grid = np.indices(shape[:3]).reshape(3, -1).T
    return grid @ affine[:3, :3].T + affine[:3, 3]


def write_rtstruct(path: Path | str, ct: SyntheticCT,
                   rois: Sequence[tuple[int, str, Sequence[np.ndarray]]]) -> Path:
    """An RTSTRUCT referencing ct with CLOSED_PLANAR contours (each (n, 3) LPS mm)."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian

    source = dcmread(ct.paths[0], stop_before_pixels=True)
    ds = Dataset()
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = uid("rtstruct", str(path))
    ds.Modality = "RTSTRUCT"
    for keyword in ("StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate",
                    "StudyDate", "StudyTime"):
        setattr(ds, keyword, getattr(source, keyword))
    ds.PatientSex = ""
    ds.SeriesInstanceUID = uid("rtstruct-series", str(path))
    ds.SeriesNumber = 99
    ds.StructureSetLabel = "synthetic"
    ds.StructureSetDate, ds.StructureSetTime = "20260101", "120000"
    ds.Manufacturer = "convkit synthetic"
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.ReferencedFrameOfReferenceSequence = DicomSequence(
        [_frame_reference(source, ct, Dataset, DicomSequence)])
    ds.StructureSetROISequence = DicomSequence([_roi(number, name, source, Dataset)
                                                for number, name, _ in rois])
    ds.ROIContourSequence = DicomSequence([_roi_contours(number, contours, Dataset,
                                                         DicomSequence)
                                           for number, _, contours in rois])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def _frame_reference(source: Any, ct: SyntheticCT, dataset: Any, sequence: Any) -> Any:
    series = dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ContourImageSequence = sequence([])
    study = dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = source.StudyInstanceUID
    study.RTReferencedSeriesSequence = sequence([series])
    frame = dataset()
    frame.FrameOfReferenceUID = source.FrameOfReferenceUID
    frame.RTReferencedStudySequence = sequence([study])
    return frame


def _roi(number: int, name: str, source: Any, dataset: Any) -> Any:
    item = dataset()
    item.ROINumber = number
    item.ReferencedFrameOfReferenceUID = source.FrameOfReferenceUID
    item.ROIName = name
    item.ROIGenerationAlgorithm = "MANUAL"
    return item


def _roi_contours(number: int, contours: Sequence[np.ndarray], dataset: Any,
                  sequence: Any) -> Any:
    item = dataset()
    item.ReferencedROINumber = number
    item.ROIDisplayColor = [255, 0, 0]
    items = []
    for points in contours:
        contour = dataset()
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = len(points)
        contour.ContourData = [f"{v:.6f}" for v in np.asarray(points, float).ravel()]
        items.append(contour)
    item.ContourSequence = sequence(items)
    return item


def circle_contour(ct: SyntheticCT, centre_index: Sequence[float], radius_mm: float,
                   n_points: int = 720) -> np.ndarray:
    """(n, 3) LPS points of a circle in the plane of slice centre_index[2] of ct."""
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = ras_to_lps @ ct.affine
    centre = lps[:3, :3] @ np.asarray(centre_index, float) + lps[:3, 3]
    u = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    v = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    angles = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    return centre + radius_mm * (np.outer(np.cos(angles), u) + np.outer(np.sin(angles), v))
