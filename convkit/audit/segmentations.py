"""SEG and RTSTRUCT files in an audited tree: accounted for, paired, checked.

Each one is paired with the series it references (ReferencedSeriesSequence, or the one
series sharing its FrameOfReferenceUID: convkit.seg.folder.find_source) and read onto
that series' grid exactly as dicom2nii would (so the audit cannot disagree with it): a
reference to a series that is not there, frames off the source grid or outside it, and
segments without a voxel are findings. Segmentation objects are small, so their frames are
decoded (the only pixel data the audit reads).
"""

from __future__ import annotations

from convkit.audit.findings import Finding, finding
from convkit.dicom.group import SeriesGroup
from convkit.dicom.header import FileRecord
from convkit.dicom.plan import plan_series
from convkit.errors import ConvkitError
from convkit.seg.dicomseg import read_seg
from convkit.seg.folder import find_source, segmentation_records
from convkit.seg.rtstruct import read_rtstruct

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
