"""SEG and RTSTRUCT files in an audited tree: accounted for, paired, checked.

Each one is paired with the series it references (ReferencedSeriesSequence, or the one
series sharing its FrameOfReferenceUID: convkit.seg.folder.find_source) and read onto
that series' grid exactly as dicom2nii would (so the audit cannot disagree with it): a
reference to a series that is not there, frames off the source grid or outside it, and
segments without a voxel are findings. A label-map volume (a mask: see looks_like_label_map)
beside a series that lies on none of its grids is one too. Segmentation objects are small,
so their frames are decoded (the only pixel data the audit reads).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from convkit.audit.findings import Finding, finding
from convkit.audit.pairing import describe_difference
from convkit.audit.series import SeriesAudit
from convkit.audit.volumes import VolumeHeader
from convkit.dicom.group import SeriesGroup
from convkit.dicom.header import FileRecord
from convkit.dicom.naming import OUTPUT_SUFFIXES
from convkit.dicom.plan import Grid, plan_series
from convkit.errors import ConvkitError
from convkit.geometry import place_grid
from convkit.seg.dicomseg import read_seg
from convkit.seg.folder import find_source, segmentation_records
from convkit.seg.rtstruct import read_rtstruct
from convkit.seg.sampling import on_grid_of

#: Error codes of convkit.seg mapped to finding codes (the codes are the same strings).
SEG_FINDINGS = ("seg.dangling", "seg.off-grid", "seg.outside", "seg.empty", "seg.unreadable")


def check_segmentations(files: list[FileRecord], groups: list[SeriesGroup]) -> list[Finding]:
    """Findings for every SEG/RTSTRUCT file; pairs each record with its series' label."""
    found: list[Finding] = []
    for record in segmentation_records(files):
        found += _check_one(record, groups)
    return found


def _check_one(record: FileRecord, groups: list[SeriesGroup]) -> list[Finding]:
    path, kind = record.path, record.segmentation
    try:
        source = find_source(path, groups)
        record.series = source.label
        plan = plan_series(source)
        if plan.refusal is not None:
            return [finding("seg.paired", f"{kind} {path.name} segments {source.label}, which "
                            "dicom2nii refuses (see its findings)", "fix the series first",
                            path=path, series=source.label)]
        reader = read_seg if kind == "SEG" else read_rtstruct
        maps = reader(path, plan.grid.affine, plan.grid.shape)
    except ConvkitError as exc:
        code = exc.code if exc.code in SEG_FINDINGS else "seg.unreadable"
        return [finding(code, f"{kind} {path.name}: {exc.message}", exc.hint, path=path,
                        series=record.series)]
    found = [finding("seg.paired", f"{kind} {path.name} segments {source.label} "
                     f"({len(maps.segments)} segments, on its grid)",
                     "dicom2nii writes it as a label map beside the series", path=path,
                     series=source.label)]
    empty = [f"{s['SegmentNumber']} ({s['SegmentLabel']})" for s in maps.segments
             if not s["Voxels"]]
    if empty:
        found.append(finding("seg.empty-segment", f"{kind} {path.name}: segments without a "
                             f"voxel: {', '.join(empty)}", "check how the object was made",
                             path=path, series=source.label))
    for note in maps.notes:
        if "outside the series' field of view" in note:
            found.append(finding("seg.contour-outside", f"{kind} {path.name}: {note}",
                                 "the label map keeps what lies inside the series",
                                 path=path, series=source.label))
    return found


# ------------------------------------------------------------------------------------------
# A label-map volume (a mask) beside a series: it must lie on the series' grid.

#: Name parts that mark a mask: a word of the file name (split at anything not a letter or
#: digit) that starts or ends with one of these (ct_seg, lungmask, labels, Segmentation ...).
MASK_WORDS = ("seg", "mask", "label")
#: ... or one of these whole words.
MASK_NAMES = ("roi", "rois", "voi")


def looks_like_label_map(header: VolumeHeader, sidecar: dict[str, Any]) -> bool:
    """A 3D volume of unscaled integers whose name or sidecar says it is a segmentation.

    Decided from the header alone (the audit reads no volume data): the values must be
    integers as stored (no scaling to fractions), and the file name must hold a mask word
    (MASK_WORDS, MASK_NAMES) or its JSON sidecar name a segmentation (Modality SEG or
    RTSTRUCT, a Segments list, or LabelMap true: what dicom2nii writes beside a SEG's label
    map)."""
    if header.n_times != 1 or not _integer(header):
        return False
    if _sidecar_says_segmentation(sidecar):
        return True
    stem = header.path.name.lower()
    for suffix in OUTPUT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    words = [w for w in re.split(r"[^a-z0-9]+", stem) if w]
    return any(w.startswith(MASK_WORDS) or w.endswith(MASK_WORDS) or w in MASK_NAMES
               for w in words)


def _integer(header: VolumeHeader) -> bool:
    try:
        kind = np.dtype(header.dtype).kind
    except TypeError:
        return False
    slope = 1.0 if header.slope in (None, 0.0) else header.slope
    intercept = header.intercept or 0.0
    return kind in "iub" and float(slope).is_integer() and float(intercept).is_integer()


def _sidecar_says_segmentation(sidecar: dict[str, Any]) -> bool:
    return (str(sidecar.get("Modality", "")).upper() in ("SEG", "RTSTRUCT")
            or isinstance(sidecar.get("Segments"), list) or sidecar.get("LabelMap") is True)


def mask_off_grid(header: VolumeHeader, sidecar: dict[str, Any],
                  nearby: list[SeriesAudit]) -> list[Finding]:
    """seg.mask-off-grid when a label map beside series lies on none of their grids.

    The series it is checked against: the one whose dicom2nii output name begins the mask's
    file name, else the one its sidecar references, else the nearest (by centre) of the
    series beside it. A mask on the grid but cropped (fewer voxels) is fine: nii2dicom --seg
    places it in world space."""
    if header.affine is None or not looks_like_label_map(header, sidecar):
        return []
    candidates = [(s, g) for s in nearby for g in s.grids]
    if not candidates or any(on_grid_of(header.affine, g.affine) for _, g in candidates):
        return []
    series, grid = _checked_against(header, sidecar, candidates)
    volume = place_grid(header.affine, header.spatial_shape)
    others = len({id(s) for s, _ in candidates})
    beside = f" (nor on any of the {others} series beside it)" if others > 1 else ""
    return [finding("seg.mask-off-grid",
                    f"label map beside series {series.label} does not lie on its grid"
                    f"{beside}: {describe_difference(volume, 1, grid)}",
                    f"resample it onto the series (convkit nii2dicom --seg --resample, or "
                    f"your tool's nearest-neighbour resampling), or check it belongs to "
                    f"{series.label}", path=header.path, series=series.label)]


def _checked_against(header: VolumeHeader, sidecar: dict[str, Any],
                     candidates: list[tuple[SeriesAudit, Grid]]) -> tuple[SeriesAudit, Grid]:
    name = header.path.name.lower()
    named = [c for c in candidates if name.startswith(c[0].label.lower())]
    if named:
        return max(named, key=lambda c: len(c[0].label))
    referenced = str(sidecar.get("ReferencedSeriesInstanceUID", "") or "")
    pool = [c for c in candidates if referenced and c[0].group.series_uid == referenced] \
        or candidates
    centre = place_grid(header.affine, header.spatial_shape).centre  # type: ignore[arg-type]
    return min(pool, key=lambda c: float(np.linalg.norm(c[1].placed.centre - centre)))
