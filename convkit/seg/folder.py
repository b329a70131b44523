"""dicom2nii's segmentation step: every SEG (and RTSTRUCT) found in a folder becomes a label
map on the grid dicom2nii writes for the series it references.

Pairing: the series named by ReferencedSeriesSequence, else the only series sharing the
object's FrameOfReferenceUID. Outputs: NAME_seg.nii.gz (NAME: the source series' label)
plus NAME_seg.json (segment numbers, names and codes); overlapping BINARY segments become
one file per segment (NAME_seg_N) or, with overlap='stack', one 4D file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convkit.dicom.dataset import read_dataset
from convkit.dicom.group import SeriesGroup
from convkit.dicom.header import FileRecord, FileStatus
from convkit.dicom.plan import ConvertOptions, plan_series
from convkit.errors import InputError, OutputError, RefusedError
from convkit.outcomes import Outcome
from convkit.seg.dicomseg import read_seg
from convkit.seg.rtstruct import read_rtstruct
from convkit.volume import Volume

OVERLAP_MODES = ("files", "stack")
#: overlap='split': one file per segment / ROI even when none overlap.
SPLIT = "split"
#: write(volume, stem) -> written paths: dicom2nii's atomic volume + sidecar writer.
Writer = Callable[[Volume, Path], list[Path]]


@dataclass
class SegOutcome:
    """What happened to one SEG or RTSTRUCT file."""

    label: str
    path: Path
    kind: str  # SEG or RTSTRUCT
    status: Outcome
    source: SeriesGroup | None
    outputs: list[str] = field(default_factory=list)
    shape: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reason: str = ""
    hint: str = ""


def segmentation_records(files: list[FileRecord]) -> list[FileRecord]:
    return [r for r in files if r.segmentation and r.status == FileStatus.SKIPPED]


def find_source(path: Path, groups: list[SeriesGroup]) -> SeriesGroup:
    """The series a SEG/RTSTRUCT references (InputError when it is not in the folder)."""
    dataset = read_dataset(path, stop_before_pixels=True)
    uids = referenced_series_uids(dataset)
    matches = [g for g in groups if g.series_uid in uids]
    if not matches and not uids:
        frame = str(dataset.get("FrameOfReferenceUID", "") or _rt_frame(dataset))
        matches = [g for g in groups if frame and _frame_of_reference(g) == frame]
    if len(matches) != 1:
        named = ", ".join(sorted(uids)) or "none (by FrameOfReferenceUID)"
        raise InputError(f"{path.name}: its source series ({named}) is "
                         f"{'not in the folder' if not matches else 'ambiguous'}",
                         "convert the folder that holds the referenced series too",
                         "seg.dangling")
    return matches[0]


def referenced_series_uids(dataset: Any) -> set[str]:
    """Series a SEG (ReferencedSeriesSequence) or RTSTRUCT (RT Referenced Series) names."""
    found = {str(item.SeriesInstanceUID) for item in dataset.get("ReferencedSeriesSequence", [])
             or [] if item.get("SeriesInstanceUID")}
    for frame in dataset.get("ReferencedFrameOfReferenceSequence", []) or []:
        for study in frame.get("RTReferencedStudySequence", []) or []:
            for series in study.get("RTReferencedSeriesSequence", []) or []:
                if series.get("SeriesInstanceUID"):
                    found.add(str(series.SeriesInstanceUID))
    return found


def _rt_frame(dataset: Any) -> str:
    for frame in dataset.get("ReferencedFrameOfReferenceSequence", []) or []:
        return str(frame.get("FrameOfReferenceUID", ""))
    return ""


def _frame_of_reference(group: SeriesGroup) -> str:
    return str(read_dataset(group.first.path, stop_before_pixels=True)
               .get("FrameOfReferenceUID", ""))


def convert_segmentations(records: list[FileRecord], groups: list[SeriesGroup], out_dir: Path,
                          write: Writer, options: ConvertOptions, overlap: str = "files"
                          ) -> list[SegOutcome]:
    """Every SEG/RTSTRUCT of records as label maps in out_dir (refusals are outcomes)."""
    taken: set[str] = set()
    outcomes = []
    for record in records:
        outcome = SegOutcome(record.path.name, record.path, record.segmentation,
                             Outcome.WRITTEN, None)
        try:
            outcome.source = find_source(record.path, groups)
            outcome.label = _unique(f"{outcome.source.label}_seg", taken)
            _convert_one(outcome, out_dir, write, options, overlap)
        except RefusedError as exc:
            outcome.status, outcome.reason, outcome.hint = Outcome.REFUSED, exc.message, exc.hint
        except (InputError, OutputError) as exc:
            outcome.status, outcome.reason, outcome.hint = Outcome.FAILED, exc.message, exc.hint
        record.status = FileStatus.USED if outcome.status == Outcome.WRITTEN else (
            FileStatus.REFUSED if outcome.status == Outcome.REFUSED else FileStatus.SKIPPED)
        record.series = outcome.label
        if outcome.status != Outcome.WRITTEN:
            record.reason = outcome.reason
        outcomes.append(outcome)
    return outcomes


def _unique(label: str, taken: set[str]) -> str:
    name, n = label, 1
    while name in taken:
        n += 1
        name = f"{label}{n}"
    taken.add(name)
    return name


def _convert_one(outcome: SegOutcome, out_dir: Path, write: Writer, options: ConvertOptions,
                 overlap: str) -> None:
    assert outcome.source is not None
    plan = plan_series(outcome.source, options)
    if plan.refusal is not None:
        raise RefusedError(f"{outcome.path.name}: its source series {outcome.source.label} is "
                           f"refused ({plan.refusal.message})", plan.refusal.hint)
    grid = plan.grid
    reader = read_seg if outcome.kind == "SEG" else read_rtstruct
    maps = reader(outcome.path, grid.affine, grid.shape)
    outcome.notes = list(maps.notes)
    metadata = {**maps.metadata, "Source": str(outcome.path),
                "SourceSeries": outcome.source.label}
    if overlap == SPLIT and not maps.overlap:
        volumes = [(f"{outcome.label}_{s['SegmentNumber']}",
                    (maps.arrays[0] == s["SegmentNumber"]).astype(np.uint8))
                   for s in maps.segments]
    elif not maps.overlap:
        volumes = [(outcome.label, maps.arrays[0])]
    elif overlap == "stack":
        volumes = [(outcome.label, np.stack(maps.arrays, axis=3))]
        outcome.notes.append("segments overlap: a 4D stack, one volume per segment")
    else:
        volumes = [(f"{outcome.label}_{s['SegmentNumber']}", a)
                   for s, a in zip(maps.segments, maps.arrays, strict=True)]
        if overlap != SPLIT:
            outcome.notes.append("segments overlap: one file per segment")
    for stem, array in volumes:
        volume = Volume(np.asfortranarray(array), grid.affine, metadata=dict(metadata))
        outcome.outputs += [str(p) for p in write(volume, out_dir / stem)]
        outcome.shape = list(array.shape)


