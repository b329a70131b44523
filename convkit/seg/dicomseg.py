"""DICOM SEG: a label map -> a Segmentation object referencing its source series.

The mask is placed on every frame of the source series in world space (sampling.py),
so its axis order and format do not matter; a mask off the source grid is refused
(exit 4, naming the mismatch) unless resampling (nearest neighbour) is asked for.
convkit.seg.build writes the object (pydicom and numpy, no highdicom): LABELMAP (Label
Map Segmentation Storage) or BINARY, empty frames left out, every label of the mask
described (none is lost).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convkit.dicom.header import SliceHeader
from convkit.dicom.scan import scan_folder
from convkit.errors import InputError, RefusedError, UsageError, exception_reason
from convkit.formats.output import check_targets, staged_files
from convkit.geometry import affine_lps, lps_to_ras, plane_axes
from convkit.inputs import load_volume
from convkit.seg.build import FrameSource, SegObject, build_segmentation, regular_spacing
from convkit.seg.labels import MAX_LABEL, LabelInfo, describe_labels, read_labels_file
from convkit.seg.sampling import label_counts, place_labels
from convkit.volume import Volume

SEG_TYPES = ("labelmap", "binary")


@dataclass
class WrittenSeg:
    """What nii2dicom --seg wrote."""

    path: str
    sop_class: str
    segmentation_type: str
    referenced_series: str
    frames: int  # frames of the source series that hold a label
    segments: list[LabelInfo]
    resampled: bool
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["segments"] = [s.to_json() for s in self.segments]
        return document


@dataclass
class SourceFrame:
    """One 2D image of the source series and where its pixels lie."""

    header: SliceHeader
    affine: np.ndarray  # (column, row, 0) -> RAS mm

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.header.columns, self.header.rows, 1)


def label_values(volume: Volume, what: str) -> np.ndarray:
    """The mask's labels as unsigned integers (refused: fractions, negatives, too large)."""
    if volume.is_rgb or volume.array.ndim != 3:
        raise RefusedError(f"{what} is not a 3D label map (shape {volume.shape})",
                           "pass a 3D mask with one integer label per voxel")
    real = volume.real_array(np.float64) if volume.scaled or volume.array.dtype.kind == "f" \
        else volume.array
    if real.dtype.kind == "f":
        if not np.isfinite(real).all() or (real != np.rint(real)).any():
            raise RefusedError(f"{what} holds non-integer values: not a label map",
                               "a label map holds 0 (background) and label numbers 1, 2, ...")
    low, high = (int(real.min()), int(real.max())) if real.size else (0, 0)
    if low < 0 or high > MAX_LABEL:
        raise RefusedError(f"{what} holds labels from {low} to {high}",
                           f"labels must be 0 (background) to {MAX_LABEL}")
    return np.asarray(real, dtype=np.uint8 if high < 256 else np.uint16, order="F")


def source_frames(reference: Path, series: str | None = None) -> list[SourceFrame]:
    """Every 2D image of the one series under reference, in slice order."""
    scan = scan_folder(reference)
    groups = [g for g in scan.series if series is None or series in g.names]
    if not groups:
        raise InputError(f"--reference {reference}: no DICOM image series found"
                         + (f" matching {series}" if series else ""),
                         "pass the folder of the series the mask was drawn on")
    if len({g.series_uid for g in groups}) > 1:
        raise UsageError(f"--reference {reference} holds {len(groups)} series",
                         "choose one with --series NUMBER|LABEL|UID")
    headers = [h for g in groups for h in g.headers]
    if any(h.orientation is None or h.position is None or h.pixel_spacing is None
           for h in headers):
        raise InputError(f"--reference {reference}: images without position or orientation",
                         "a SEG needs a series with ImagePositionPatient and orientation")
    if len({h.path for h in headers}) not in (1, len(headers)):
        raise InputError(f"--reference {reference}: several multi-frame files in one series",
                         "pass a series of single-frame files or one multi-frame file")
    frames = [SourceFrame(h, frame_affine(h)) for h in headers]
    normal = plane_axes(np.asarray(headers[0].orientation))[2]
    frames.sort(key=lambda f: (float(np.dot(normal, np.asarray(f.header.position))),
                               f.header.frame))
    return frames


def frame_affine(header: SliceHeader) -> np.ndarray:
    """(column, row, 0) -> RAS mm of one 2D image (the third axis: its normal, 1 mm)."""
    orientation = np.asarray(header.orientation, dtype=float)
    spacing = header.pixel_spacing or (1.0, 1.0)
    return lps_to_ras(affine_lps(orientation, spacing, np.asarray(header.position, dtype=float),
                                 plane_axes(orientation)[2]))


def place_on_frames(labels: np.ndarray, affine: np.ndarray, frames: list[SourceFrame],
                    resample: bool, what: str) -> tuple[np.ndarray, list[str]]:
    """(frames, rows, columns) labels of every source frame; refused off the grid."""
    n_rows, n_cols = frames[0].header.rows, frames[0].header.columns
    for frame in frames:
        if (frame.header.rows, frame.header.columns) != (n_rows, n_cols):
            raise InputError(f"the reference series mixes image sizes ({n_rows}x{n_cols}, "
                             f"{frame.header.rows}x{frame.header.columns})",
                             "pass a series whose images share one size")
    stack = _regular_stack(frames)
    if stack is not None:  # one placement of the whole volume (one copy, no loop)
        placement = place_labels(labels, affine, stack, (n_cols, n_rows, len(frames)),
                                 nearest=resample, count_lost=False)
        out = np.ascontiguousarray(placement.array.transpose(2, 1, 0))
        worst = placement.residual
        _refuse_off_grid(placement.on_grid or resample, worst, what)
    else:
        out = np.zeros((len(frames), n_rows, n_cols), dtype=labels.dtype)
        worst = 0.0
        for index, frame in enumerate(frames):
            placement = place_labels(labels, affine, frame.affine, frame.shape,
                                     nearest=resample, count_lost=False)
            worst = max(worst, placement.residual)
            _refuse_off_grid(placement.on_grid or resample, placement.residual, what)
            out[index] = placement.array[:, :, 0].T
    notes = []
    lost = int(np.count_nonzero(labels)) - int(np.count_nonzero(out))
    if lost > 0 and not resample:
        raise RefusedError(f"{lost} labelled voxels of {what} lie outside the reference series",
                           "pass --resample to keep what falls inside, or a mask made on this "
                           "series", "seg.outside")
    if resample and worst > 0:
        notes.append(f"resampled by nearest neighbour (voxel centres up to {worst:.3g} voxels "
                     "apart)")
    return out, notes


def _regular_stack(frames: list[SourceFrame]) -> np.ndarray | None:
    """(column, row, plane) -> RAS of the frames when they are one regularly spaced stack
    of parallel planes (one orientation and pixel spacing), else None."""
    first = frames[0].header
    if any(f.header.orientation != first.orientation
           or f.header.pixel_spacing != first.pixel_spacing for f in frames):
        return None
    positions = [f.header.position for f in frames]
    if regular_spacing(positions, first.orientation) is None:  # type: ignore[arg-type]
        return None
    affine = frames[0].affine.copy()
    affine[:3, 2] = frames[1].affine[:3, 3] - frames[0].affine[:3, 3]
    return affine


def _refuse_off_grid(placed: bool, residual: float, what: str) -> None:
    if not placed:
        raise RefusedError(
            f"{what} does not lie on the reference series' grid (its voxel centres are up "
            f"to {residual:.3g} voxels from the reference's)",
            "pass --resample to place it by nearest neighbour, or a mask made on this "
            "series", "seg.off-grid")


def write_seg(mask: Path | str, reference: Path | str, out: Path | str, *,
              labels_file: Path | str | None = None, seg_type: str = "labelmap",
              resample: bool = False, series: str | None = None,
              force: bool = False) -> WrittenSeg:
    """Write the label map `mask` as a DICOM SEG referencing the series in `reference`."""
    if seg_type not in SEG_TYPES:
        raise UsageError(f"unknown --seg-type {seg_type!r}", f"choose {' or '.join(SEG_TYPES)}")
    out = Path(out)
    check_targets([out], force)
    overrides = read_labels_file(labels_file) if labels_file else {}
    volume = load_volume(mask)
    labels = label_values(volume, str(mask))
    mask_counts = label_counts(labels)
    numbers = [int(n) for n in np.flatnonzero(mask_counts) if n]
    if not numbers:
        raise RefusedError(f"{mask} holds no label (every voxel is 0)",
                           "check that this is the mask you meant")
    frames = source_frames(Path(reference), series)
    stack, notes = place_on_frames(labels, volume.affine, frames, resample, str(mask))
    segments = describe_labels(numbers, overrides)
    if not stack.any():
        raise RefusedError(f"no labelled voxel of {mask} lies inside the reference series",
                           "check that the mask belongs to this series", "seg.outside")
    # on the grid every labelled voxel was copied (none lost, else refused): same counts
    counts = mask_counts if not resample else np.zeros(max(numbers) + 1, dtype=np.int64)
    if resample:
        placed = label_counts(stack)
        counts[: min(placed.size, counts.size)] = placed[: counts.size]
    for index, info in enumerate(segments):
        info.voxels = int(counts[info.number])
        # BINARY segments count 1, 2, ... (LABELMAP pixels are the labels themselves)
        info.segment = info.number if seg_type == "labelmap" else index + 1
        if info.segment != info.number:
            notes.append(f"label {info.number} is segment {info.segment}")
        if not info.voxels:
            info.notes.append("no voxel on the reference grid after resampling (described, "
                              "no frame)")
    seg = _segmentation(stack, frames, segments, seg_type, volume)
    dataset = seg.dataset
    with staged_files(out.parent, force) as stage:
        seg.save(stage / out.name)
    return WrittenSeg(str(out), str(dataset.SOPClassUID), str(dataset.SegmentationType),
                      frames[0].header.series_instance_uid,
                      int(np.count_nonzero(stack.reshape(len(frames), -1).any(axis=1))),
                      segments, resample, notes + volume.notes)


def _segmentation(stack: np.ndarray, frames: list[SourceFrame], segments: list[LabelInfo],
                  seg_type: str, volume: Volume) -> SegObject:
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    first = frames[0].header
    multiframe = len({f.header.path for f in frames}) == 1 and len(frames) > 1
    sources = [FrameSource(f.header.sop_class_uid, f.header.sop_instance_uid,
                           f.header.position,  # type: ignore[arg-type]  # checked in source_frames
                           f.header.frame + 1 if multiframe else 0) for f in frames]
    if any(info.segment != info.number for info in segments):
        renumber = np.zeros(max(info.number for info in segments) + 1, dtype=stack.dtype)
        for info in segments:
            renumber[info.number] = info.segment
        stack = renumber[stack]
    series_description = str(volume.metadata.get("SeriesDescription", "") or "convkit SEG")[:64]
    source = dcmread(first.path, stop_before_pixels=True)
    return build_segmentation(stack, sources, segments, seg_type, source,
                              first.orientation,  # type: ignore[arg-type]
                              first.pixel_spacing or (1.0, 1.0), first.slice_thickness,
                              generate_uid(), series_description)


@dataclass
class SegLabelMaps:
    """A SEG read onto its source series' grid: one label map, or one per segment."""

    arrays: list[np.ndarray]  # each on the grid; one (labels = segment numbers) unless overlap
    segments: list[dict[str, Any]]  # SegmentNumber, SegmentLabel, codes, voxels
    overlap: bool  # segments overlap: arrays holds one 0/1 mask per segment
    metadata: dict[str, Any]  # for the JSON sidecar
    notes: list[str] = field(default_factory=list)


def read_seg(path: Path | str, grid_affine: np.ndarray,
             grid_shape: tuple[int, int, int]) -> SegLabelMaps:
    """The SEG at path as label maps on the grid (RAS affine) of its source series.

    Refused (exit 4) when its frames do not lie on that grid or fall outside it.
    """
    seg, numbers, sources, affine = hd_label_channels(Path(path))
    channels = [_on_grid(values, affine, grid_affine, grid_shape, path) for values in sources]
    segments = segments_json(seg, numbers, channels)
    arrays, overlap = combine_masks(numbers, channels, grid_shape)
    metadata = {"Modality": "SEG", "SegmentationType": str(seg.SegmentationType),
                "SOPInstanceUID": str(seg.SOPInstanceUID),
                "SeriesInstanceUID": str(seg.SeriesInstanceUID),
                "SeriesDescription": str(seg.get("SeriesDescription", "")),
                "ReferencedSeriesInstanceUID": referenced_series(seg),
                "Segments": segments}
    return SegLabelMaps(arrays, segments, overlap, metadata)


def hd_label_channels(path: Path) -> tuple[Any, list[int], list[np.ndarray], np.ndarray]:
    """(segmentation, segment numbers, one 0/1 array (i, j, k) per segment, RAS affine) of
    the SEG at path, on the SEG's own grid (highdicom places the frames)."""
    seg = _segread(path)
    numbers = [int(n) for n in seg.segment_numbers if int(n) > 0]
    if not numbers:
        raise RefusedError(f"{path}: the SEG holds no segment", "check the file", "seg.empty")
    volume = seg.get_volume(segment_numbers=numbers)
    # highdicom indexes (slice, row, column); convkit (column, row, slice)
    affine = lps_to_ras(np.asarray(volume.affine, dtype=float))[:, [2, 1, 0, 3]]
    stacked = np.asarray(volume.array)  # (slices, rows, columns, segments)
    channels = [np.transpose(stacked[..., index], (2, 1, 0)).astype(np.uint8)
                for index in range(stacked.shape[3])]
    return seg, numbers, channels, affine


def segments_json(seg: Any, numbers: list[int], masks: list[np.ndarray]) -> list[dict[str, Any]]:
    return [_segment_json(seg, n, int(np.count_nonzero(m)))
            for n, m in zip(numbers, masks, strict=True)]


def combine_masks(numbers: list[int], masks: list[np.ndarray], grid_shape: tuple[int, int, int]
                  ) -> tuple[list[np.ndarray], bool]:
    """One label map (each mask's voxels = its number) when no two masks share a voxel;
    else the masks themselves as 0/1 arrays (overlap: True)."""
    covered = np.zeros(grid_shape, dtype=np.uint16, order="F")
    for mask in masks:
        covered += mask > 0
    if (covered > 1).any():
        return [np.asarray(m > 0, dtype=np.uint8, order="F") for m in masks], True
    dtype = np.uint8 if max(numbers) < 256 else np.uint16
    combined = np.zeros(grid_shape, dtype=dtype, order="F")
    for number, mask in zip(numbers, masks, strict=True):
        combined[mask > 0] = number
    return [combined], False


def _segread(path: Path) -> Any:
    import highdicom as hd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return hd.seg.segread(path)
    except Exception as exc:  # highdicom raises many types for a malformed object
        raise InputError(f"{path}: not a readable DICOM SEG ({exception_reason(exc)})",
                         "check the file (dciodvfy tells what is wrong)", "seg.unreadable"
                         ) from None


def referenced_series(dataset: Any) -> str:
    """The SeriesInstanceUID a SEG or RTSTRUCT names as its source ('' if none)."""
    for item in dataset.get("ReferencedSeriesSequence", []) or []:
        if item.get("SeriesInstanceUID"):
            return str(item.SeriesInstanceUID)
    return ""


def _on_grid(values: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray,
             grid_shape: tuple[int, int, int], path: Path | str) -> np.ndarray:
    placement = place_labels(values, affine, grid_affine, grid_shape)
    if not placement.on_grid:
        raise RefusedError(f"{path}: the SEG's frames do not lie on its source series' grid "
                           f"(up to {placement.residual:.3g} voxels off)",
                           "convert the source series with the same options it was drawn on",
                           "seg.off-grid")
    if placement.lost_voxels:
        raise RefusedError(f"{path}: {placement.lost_voxels} labelled SEG pixels lie outside "
                           "its source series", "check that the SEG references this series",
                           "seg.outside")
    return placement.array


def _segment_json(seg: Any, number: int, voxels: int) -> dict[str, Any]:
    item = seg.get_segment_description(number)

    def code(concept: Any) -> dict[str, str]:
        return {"scheme": str(concept.scheme_designator), "value": str(concept.value),
                "meaning": str(concept.meaning)}

    return {"SegmentNumber": number, "SegmentLabel": str(item.segment_label),
            "Category": code(item.segmented_property_category),
            "Type": code(item.segmented_property_type), "Voxels": voxels}
