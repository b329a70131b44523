"""DICOM series: one row and a list of findings per series, from headers only.

Everything goes through the same grouping (scan_folder) and the same dry run
(dicom.plan.plan_series: layout, output grid, refusals with their codes) as
dicom2nii with its default options, so the audit never disagrees with what dicom2nii would do: an
error here is a series dicom2nii refuses or fails, a warning one it converts with
a correction or a split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from convkit import geometry
from convkit.audit.findings import Finding, finding
from convkit.audit.identifiers import IdentifiersUnchecked
from convkit.dicom.group import SeriesGroup
from convkit.dicom.header import FileRecord
from convkit.dicom.overlays import OVERLAY_SUFFIX, overlay_summary
from convkit.dicom.plan import Grid, SeriesPlan, plan_series, two_slices_note
from convkit.errors import ConvkitError

#: GantryDetectorTilt and the tilt the positions show may differ this much (degrees).
TILT_HEADER_TOLERANCE_DEG = 1.0

#: Transfer syntax UID -> (short name, compressed, lossy).
TRANSFER_SYNTAXES: dict[str, tuple[str, bool, bool]] = {
    "1.2.840.10008.1.2": ("Implicit VR LE", False, False),
    "1.2.840.10008.1.2.1": ("Explicit VR LE", False, False),
    "1.2.840.10008.1.2.1.99": ("Deflated Explicit VR LE", True, False),
    "1.2.840.10008.1.2.2": ("Explicit VR BE", False, False),
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline", True, True),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended", True, True),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless", True, False),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless SV1", True, False),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", True, False),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-Lossless", True, True),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", True, False),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", True, True),
    "1.2.840.10008.1.2.4.201": ("HTJ2K Lossless", True, False),
    "1.2.840.10008.1.2.4.202": ("HTJ2K Lossless RPCL", True, False),
    "1.2.840.10008.1.2.4.203": ("HTJ2K", True, True),
    "1.2.840.10008.1.2.4.110": ("JPEG XL Lossless", True, False),
    "1.2.840.10008.1.2.4.111": ("JPEG XL JPEG Recompression", True, True),
    "1.2.840.10008.1.2.4.112": ("JPEG XL", True, True),
    "1.2.840.10008.1.2.5": ("RLE Lossless", True, False),
    **{f"1.2.840.10008.1.2.4.{n}": ("MPEG/HEVC video", True, True) for n in range(100, 109)},
}


@dataclass
class SeriesAudit:
    """One series group: the plan dicom2nii would follow, and what is wrong with it."""

    group: SeriesGroup
    unreadable: list[FileRecord] = field(default_factory=list)
    plan: SeriesPlan | None = None
    refusal: tuple[str, str, str] | None = None  # (code, message, hint)
    grids: list[Grid] = field(default_factory=list)
    identifiers: dict[str, str] = field(default_factory=dict)
    identifiers_unchecked: str = ""  # why the identifying attributes could not be read
    findings: list[Finding] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.group.label

    @cached_property
    def folder(self) -> str:
        """The deepest folder holding every file of the series."""
        parents = {str(h.path.parent) for h in self.group.headers}
        return os.path.commonpath(sorted(parents)) if parents else ""

    @property
    def output(self) -> Grid | None:
        return self.grids[0] if self.grids else None


def audit_series(group: SeriesGroup, unreadable: list[FileRecord],
                 identifiers: dict[str, str] | IdentifiersUnchecked) -> SeriesAudit:
    """Plan the series as dicom2nii would (default options) and run the series checks.

    identifiers: the identifying attributes of the series, or why they could not be read.
    """
    if isinstance(identifiers, IdentifiersUnchecked):
        audit = SeriesAudit(group, unreadable, identifiers_unchecked=str(identifiers))
    else:
        audit = SeriesAudit(group, unreadable, identifiers=identifiers)
    _plan(audit)
    audit.grids = expected_grids(audit)
    audit.findings = [item for check in SERIES_CHECKS for item in check(audit)]
    return audit


def _plan(audit: SeriesAudit) -> None:
    """plan_series with dicom2nii's default options; a refusal keeps the error's code."""
    try:
        audit.plan = plan_series(audit.group)
    except ConvkitError as exc:  # RefusedError, or InputError for an absurd size
        audit.refusal = (exc.code or "series.unsupported", exc.message, exc.hint)
        return
    refusal = audit.plan.refusal
    if refusal is not None:
        audit.refusal = (refusal.code or "series.unsupported", refusal.message, refusal.hint)


def expected_grids(audit: SeriesAudit) -> list[Grid]:
    """Where a faithful conversion of the series puts its voxels (RAS), best first.

    - the plan's grid: what dicom2nii writes (tilt straightened in-plane along the
      normal); for a series with gaps, what it writes with --resample ('resampled').
    - positions: for a tilted series, the sheared grid through the slice origins as
      they are (what converters that keep the shear in the sform write).
    """
    plan = audit.plan
    if plan is None:
        return []
    grids = [plan.grid]
    stack, first = plan.stack, plan.first
    n = len(stack.distances)
    if stack.sheared and not stack.gaps and n > 1:
        along = (stack.distances[-1] * stack.normal + stack.offsets[-1, 0] * stack.row_dir
                 + stack.offsets[-1, 1] * stack.col_dir) / (n - 1)
        orientation = np.concatenate([stack.row_dir, stack.col_dir])
        assert first.pixel_spacing is not None, "plan_series refuses a series without one"
        sheared = geometry.lps_to_ras(geometry.affine_lps(orientation, first.pixel_spacing,
                                                          stack.origin, along))
        grids.append(Grid("positions", sheared, (first.columns, first.rows, n),
                          plan.grid.n_times))
    return grids


# ------------------------------------------------------------------------------------------
# Series checks: each returns the findings of one series.


def check_refusal(audit: SeriesAudit) -> list[Finding]:
    if audit.refusal is None:
        return []
    code, message, hint = audit.refusal
    message = message.removeprefix(f"series {audit.label}: ")  # the finding names the series
    default_hints = {
        "series.gap": "--resample interpolates onto a regular grid; or find the missing files",
        "series.duplicate-position": "remove the extra files, or convert the acquisitions "
                                     "separately",
        "series.no-geometry": "without positions the slices cannot be placed in world space",
        "series.unsupported": "convert with another tool, or re-export the series",
    }
    return [finding(code, f"dicom2nii refuses: {message}", hint or default_hints[code],
                    path=audit.folder, series=audit.label)]


def check_incomplete(audit: SeriesAudit) -> list[Finding]:
    if not audit.unreadable:
        return []
    first = audit.unreadable[0]
    more = f" (and {len(audit.unreadable) - 1} more)" if len(audit.unreadable) > 1 else ""
    return [finding("series.incomplete",
                    f"{len(audit.unreadable)} file(s) of the series are unreadable, so dicom2nii "
                    f"fails it: {first.path.name}: {first.reason}{more}",
                    "re-export the series, or remove the broken files and convert with "
                    "--resample", path=audit.folder, series=audit.label)]


def check_tilt(audit: SeriesAudit) -> list[Finding]:
    plan = audit.plan
    if plan is None or not plan.stack.sheared:
        return []
    output = audit.output
    first = audit.group.first
    grown = (f", matrix {first.columns}x{first.rows} -> {output.shape[0]}x{output.shape[1]}"
             if output else "")
    return [finding("series.tilt",
                    f"gantry tilt of {plan.stack.tilt_degrees:.2f} degrees from the positions: "
                    f"dicom2nii shifts each slice in-plane onto a grid along the normal{grown}",
                    "--tilt refuse refuses instead; converters that keep the shear in the sform "
                    "are read wrongly by qform-only readers", path=audit.folder,
                    series=audit.label)]


def check_tilt_header(audit: SeriesAudit) -> list[Finding]:
    plan = audit.plan
    header_tilt = audit.group.first.gantry_tilt
    if plan is None or header_tilt is None or len(plan.stack.distances) < 2:
        return []
    from_positions = plan.stack.tilt_degrees
    if abs(abs(header_tilt) - from_positions) <= TILT_HEADER_TOLERANCE_DEG:
        return []
    return [finding("series.tilt-header",
                    f"GantryDetectorTilt says {header_tilt:g} degrees, the slice positions "
                    f"{from_positions:.2f} degrees: convkit follows the positions",
                    "nothing to do unless another tool relies on GantryDetectorTilt",
                    path=audit.folder, series=audit.label)]


def check_slices(audit: SeriesAudit) -> list[Finding]:
    plan = audit.plan
    if plan is None:
        return []
    n_positions, n_times = len(plan.layout.positions), plan.layout.n_times
    first = audit.group.first
    if n_positions == 1 and n_times > 1:
        return [finding("series.single-position",
                        f"all {n_times} images lie at one position: dicom2nii writes one slice "
                        f"with {n_times} volumes (ordered by {plan.layout.time_key}), not a 3D "
                        "volume", "if these are slices of one volume their ImagePositionPatient "
                        "is wrong: re-export; repeated scans of one slice are fine",
                        path=audit.folder, series=audit.label)]
    if n_positions == 1:
        return [finding("series.few-slices",
                        f"one slice: its thickness ({first.nominal_spacing:g} mm) comes from "
                        "SpacingBetweenSlices/SliceThickness, not from positions",
                        "nothing to do for a single image", path=audit.folder,
                        series=audit.label)]
    if n_positions == 2 and n_times > 1:
        return [finding("series.few-slices",
                        f"two slices ({plan.stack.spacing:.4g} mm apart) in each of {n_times} "
                        "volumes: the spacing rests on one step",
                        "nothing to do if the protocol has two slices", path=audit.folder,
                        series=audit.label)]
    if n_positions == 2:
        return [finding("series.two-slices",
                        two_slices_note(plan.stack),
                        "check that the export is complete (a series is rarely two slices); "
                        "dicom2nii converts it with the spacing of the two positions",
                        path=audit.folder, series=audit.label)]
    return []


def check_rescale(audit: SeriesAudit) -> list[Finding]:
    scales = {h.real_scaling() for h in audit.group.headers}
    if len(scales) < 2 or audit.group.first.samples_per_pixel != 1:
        return []
    return [finding("series.rescale-varies",
                    f"{len(scales)} different RescaleSlope/RescaleIntercept pairs across slices: "
                    "dicom2nii writes float32 real-world values",
                    "nothing to do; --dtype chooses another output type", path=audit.folder,
                    series=audit.label)]


def check_lossy(audit: SeriesAudit) -> list[Finding]:
    syntaxes = sorted({h.transfer_syntax for h in audit.group.headers})
    lossy = [TRANSFER_SYNTAXES[s][0] for s in syntaxes if TRANSFER_SYNTAXES.get(s, ("", 0, 0))[2]]
    if not lossy:
        return []
    return [finding("series.lossy",
                    f"lossy compression ({', '.join(lossy)}): voxel values are not the "
                    "scanner's originals", "ask for an uncompressed or lossless export for "
                    "quantitative work", path=audit.folder, series=audit.label)]


def check_identifiers(audit: SeriesAudit) -> list[Finding]:
    if audit.identifiers_unchecked:
        return [finding("identifiers.unchecked",
                        f"identifying attributes could not be read "
                        f"({audit.identifiers_unchecked})",
                        "treat the series as identifying until it is checked",
                        path=audit.folder, series=audit.label)]
    if not audit.identifiers:
        return []
    return [finding("identifiers.present",
                    f"carries {', '.join(audit.identifiers)} (read from "
                    f"{audit.group.first.path.name})",
                    "dicom2nii keeps them out of NIfTI headers (sidecar only with "
                    "--keep-identifiers); de-identify the DICOM before sharing it",
                    path=audit.folder, series=audit.label)]


def check_overlays(audit: SeriesAudit) -> list[Finding]:
    summary = overlay_summary(audit.group.headers)
    if not summary:
        return []
    return [finding("series.overlays", f"{summary}: not part of the image dicom2nii writes",
                    f"dicom2nii --overlays writes them as {audit.label}{OVERLAY_SUFFIX}, a label "
                    "map on the image grid; they may hold annotations or text",
                    path=audit.folder, series=audit.label)]


SERIES_CHECKS: tuple[Callable[[SeriesAudit], list[Finding]], ...] = (
    check_refusal, check_incomplete, check_tilt, check_tilt_header, check_slices,
    check_rescale, check_lossy, check_identifiers, check_overlays,
)


def check_splits(audits: list[SeriesAudit]) -> list[Finding]:
    """One SeriesInstanceUID made into several outputs: by orientation (warning) or otherwise."""
    by_uid: dict[str, list[SeriesAudit]] = {}
    for audit in audits:
        by_uid.setdefault(audit.group.series_uid, []).append(audit)
    found = []
    for members in by_uid.values():
        if len(members) < 2:
            continue
        labels = ", ".join(m.label for m in members)
        folder = os.path.commonpath(sorted(m.folder for m in members))
        orientations: list[tuple[float, ...]] = []
        for member in members:
            value = member.group.first.orientation
            if member.group.first.is_localizer or value is None:
                continue
            if not any(geometry.same_orientation(value, other) for other in orientations):
                orientations.append(value)
        if len(orientations) > 1:
            found.append(finding(
                "series.mixed-orientation",
                f"one SeriesInstanceUID holds {len(orientations)} slice orientations: dicom2nii "
                f"writes them as separate volumes ({labels})",
                "convert them separately (--series) and check which one you need; a series "
                "should hold one orientation", path=folder, series=labels))
        else:
            suffixes = ", ".join(sorted({m.group.split_suffix or "(first)" for m in members}))
            found.append(finding(
                "series.split",
                f"one SeriesInstanceUID holds {len(members)} volumes ({suffixes}): dicom2nii "
                f"writes each ({labels}){_split_attributes(members)}",
                "nothing to do; --series picks one",
                path=folder, series=labels))
    return found


def _split_attributes(members: list[SeriesAudit]) -> str:
    """': they differ in EchoTime (4.92 ms, 7.38 ms)' from the groups' split records."""
    split = members[0].group.split
    if not split:
        return ""
    return ": they differ in " + "; ".join(f"{item['attribute']} ({', '.join(item['values'])})"
                                           for item in split)


# ------------------------------------------------------------------------------------------
# The series table row.


def series_row(audit: SeriesAudit, show_identifiers: bool) -> dict:
    """One flat row (the same keys in JSON and CSV)."""
    group, plan = audit.group, audit.plan
    first = group.first
    syntax = first.transfer_syntax
    name, compressed, lossy = TRANSFER_SYNTAXES.get(syntax, (syntax, True, False))
    steps = _slice_steps(audit)
    scales = {h.real_scaling() for h in group.headers}
    output = audit.output
    codes, oblique = "", None
    affine = output.affine if output is not None else _orientation_affine(audit)
    if affine is not None:
        codes = geometry.axis_codes(affine)
        oblique = round(geometry.obliquity_degrees(affine), 3)
    status, produces = _outcome(audit)
    shown = show_identifiers
    return {
        "label": audit.label,
        "series_number": first.series_number,
        "description": first.series_description,
        "modality": first.modality,
        "manufacturer": first.manufacturer,
        "patient_name": audit.identifiers.get("PatientName") if shown else None,
        "patient_id": audit.identifiers.get("PatientID") if shown else None,
        "study_uid": first.study_instance_uid if shown else None,
        "series_uid": first.series_instance_uid if shown else None,
        "folder": audit.folder,
        "files": group.n_files,
        "images": len(group.headers),
        "slices": len(plan.layout.positions) if plan else None,
        "volumes": plan.layout.n_times if plan else None,
        "columns": first.columns,
        "rows": first.rows,
        "pixel_spacing_row": _round(first.pixel_spacing[0]) if first.pixel_spacing else None,
        "pixel_spacing_col": _round(first.pixel_spacing[1]) if first.pixel_spacing else None,
        "slice_spacing": (_round(float(np.linalg.norm(output.affine[:3, 2])))
                          if output is not None else None),
        "slice_spacing_min": _round(min(steps)) if steps else None,
        "slice_spacing_median": _round(float(np.median(steps))) if steps else None,
        "slice_spacing_max": _round(max(steps)) if steps else None,
        "orientation": codes,
        "oblique_degrees": oblique,
        "tilt_degrees": round(plan.stack.tilt_degrees, 3) if plan else None,
        "gantry_tilt": first.gantry_tilt,
        "transfer_syntax": name,
        "compressed": compressed,
        "lossy": lossy,
        "bits_allocated": first.bits_allocated,
        "bits_stored": first.bits_stored,
        "signed": bool(first.pixel_representation),
        "samples_per_pixel": first.samples_per_pixel,
        "rescale_slope": first.rescale_slope,
        "rescale_intercept": first.rescale_intercept,
        "rescale_varies": len(scales) > 1,
        "status": status,
        "dicom2nii": produces,
        "output_shape": "x".join(map(str, _output_shape(audit))) if output else "",
        "reason": audit.refusal[1] if audit.refusal else "",
        "identifiers": ", ".join(audit.identifiers),
        "findings": ", ".join(sorted({f.code for f in audit.findings})),
        "split": group.split_reason,
    }


def _outcome(audit: SeriesAudit) -> tuple[str, str]:
    """(status, what dicom2nii would produce) with its default options."""
    if audit.unreadable:
        return "fails", f"fails: {len(audit.unreadable)} unreadable file(s)"
    if audit.refusal is not None:
        return "refused", f"refused ({audit.refusal[0].split('.', 1)[1]})"
    shape = _output_shape(audit)
    kind = "4D" if len(shape) > 3 else "3D"
    notes = " tilt-corrected" if audit.plan and audit.plan.stack.sheared else ""
    return "ok", f"{kind} {'x'.join(map(str, shape))}{notes}"


def _output_shape(audit: SeriesAudit) -> tuple[int, ...]:
    output = audit.output
    if output is None:
        return ()
    return output.shape + ((output.n_times,) if output.n_times > 1 else ())


def _orientation_affine(audit: SeriesAudit) -> np.ndarray | None:
    first = audit.group.first
    if first.orientation is None:
        return None
    _, _, normal = geometry.plane_axes(first.orientation)
    return geometry.lps_to_ras(geometry.affine_lps(first.orientation, first.pixel_spacing
                                                   or (1.0, 1.0), np.zeros(3), normal))


def _slice_steps(audit: SeriesAudit) -> list[float]:
    """Steps between consecutive distinct slice positions along the normal (mm)."""
    if audit.plan is not None:
        return [float(v) for v in np.diff(audit.plan.stack.distances)]
    positions = [h.position for h in audit.group.headers if h.position is not None]
    first = audit.group.first
    if first.orientation is None or len(positions) < 2:
        return []
    distances = np.sort(geometry.project_positions(positions, first.orientation))
    distinct = [distances[0]]
    for value in distances[1:]:
        if value - distinct[-1] > geometry.SAME_POSITION_TOLERANCE_MM:
            distinct.append(value)
    return [float(v) for v in np.diff(distinct)]


def _round(value: float) -> float:
    return round(float(value), 6)
