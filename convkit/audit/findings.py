"""Findings: what an audit check reports (checks as data, after nibabel's batteryrunners).

A check is a plain function that returns a list of Finding. Every finding has a
stable code whose severity is fixed here, in CODES, so that `--fail-on` means
the same thing in every tree and the documentation table is generated from data.

Severities:

- error: the data are not what they claim to be. Files that cannot be read; a
  series that is not one regular volume as stored (a gap, a duplicate position,
  a gantry tilt, two orientations under one UID, every slice at one position, no
  geometry, a 3D series of two slices whose spacing nothing confirms); a file that
  contradicts its DICOM series. A reader that stacks such files naively
  gets the geometry wrong or fails; dicom2nii refuses them, or corrects (tilt) or
  splits (orientations) them, and the hint says how. Look before using.
- warning: usable as stored, but not as a naive reader would use it: lossy
  values, identifying text in volume headers, qform/sform disagreement, a
  sheared sform; a person should look.
- info: a fact worth knowing (duplicates, two series in one folder, a single
  image, identifiers in clinical DICOM) that needs no action by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class Severity(StrEnum):
    """How much a finding matters (a str: JSON and CSV show the value)."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


#: Severities, lowest first.
SEVERITIES = tuple(Severity)
RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Code:
    """One finding code: its fixed severity and what it means."""

    severity: Severity
    meaning: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))  # a typo fails at import


CODES: dict[str, Code] = {
    # Files.
    "file.unreadable": Code(Severity.ERROR, "a file that cannot be read (DICOM header, broken "
                                            "link, permissions)"),
    "file.truncated": Code(Severity.ERROR, "a DICOM file shorter than its pixel data (truncated "
                                           "copy)"),
    "file.empty": Code(Severity.WARNING, "a zero-byte file"),
    "file.not-dicom": Code(Severity.WARNING, "named like DICOM (.dcm, .ima ...) but neither DICOM "
                                             "nor a volume"),
    "file.skipped": Code(Severity.INFO, "DICOM without an image (report, presentation state, a "
                                        "vendor's private object ...)"),
    "file.not-patient-image": Code(Severity.INFO, "a screenshot, dose or report page (Secondary "
                                                  "Capture or DERIVED\\SECONDARY without patient "
                                                  "geometry): dicom2nii skips it; it may show "
                                                  "burned-in identifiers"),
    "file.conflict": Code(Severity.ERROR, "files that share a SOPInstanceUID but differ (series, "
                                          "pixel format, pixel data ...): dicom2nii refuses the "
                                          "series they belong to"),
    "file.special": Code(Severity.INFO, "a pipe, socket or device file: never opened"),
    "file.duplicate": Code(Severity.INFO, "files with the same SOPInstanceUID as earlier files "
                                          "(one finding per folder): ignored by dicom2nii"),
    "folder.multiple-series": Code(Severity.INFO, "one folder holds files of several series"),
    # DICOM series: errors are files that do not form one regular volume as stored.
    "series.gap": Code(Severity.ERROR, "uneven slice spacing or a missing slice: dicom2nii refuses "
                                       "without --resample"),
    "series.duplicate-position": Code(Severity.ERROR, "extra files at some slice positions: "
                                                      "dicom2nii refuses"),
    "series.no-geometry": Code(Severity.ERROR, "no ImagePositionPatient/ImageOrientationPatient/"
                                               "PixelSpacing: dicom2nii refuses"),
    "series.unsupported": Code(Severity.ERROR, "pixel format, mosaic or diffusion encoding "
                                               "dicom2nii refuses"),
    "series.incomplete": Code(Severity.ERROR, "some files of the series are unreadable: dicom2nii "
                                              "fails the series"),
    "series.tilt": Code(Severity.ERROR, "gantry tilt: the slices are sheared, not stacked straight "
                                        "(dicom2nii shifts them in-plane onto a straight grid by "
                                        "default)"),
    "series.mixed-orientation": Code(Severity.ERROR, "one SeriesInstanceUID holds several slice "
                                                     "orientations (dicom2nii splits them into "
                                                     "separate outputs)"),
    "series.single-position": Code(Severity.ERROR, "every image at one position: not a volume "
                                                   "(dicom2nii writes one slice over time)"),
    "series.two-slices": Code(Severity.ERROR, "a 3D series of two slices: most often an incomplete "
                                              "export, and nothing confirms the spacing"),
    "series.lossy": Code(Severity.WARNING, "lossy compressed transfer syntax: values are not the "
                                           "originals"),
    "series.split": Code(Severity.INFO, "one SeriesInstanceUID split into several volumes (echo, "
                                        "phase, matrix, localizer ...)"),
    "series.few-slices": Code(Severity.INFO, "one slice, or two in every volume of a time series "
                                             "(a missing file would break the per-volume count)"),
    "series.overlays": Code(Severity.INFO, "overlay planes (60xx,3000) in the images: dicom2nii "
                                           "reports them and writes them only with --overlays"),
    "series.rescale-varies": Code(Severity.INFO, "rescale slope/intercept differ between slices: "
                                                 "float32 real-world values are written"),
    "series.tilt-header": Code(Severity.INFO, "GantryDetectorTilt disagrees with the tilt the "
                                              "positions show"),
    # Volume files (NIfTI, NRRD, MetaImage).
    "volume.unreadable": Code(Severity.ERROR, "a volume header that cannot be parsed"),
    "volume.truncated": Code(Severity.ERROR, "the file holds less data than its header describes"),
    "volume.data-missing": Code(Severity.ERROR, "the data file of a detached header is missing"),
    "volume.external-data": Code(Severity.ERROR, "a detached header names a data file outside "
                                                 "its folder, or one that is not a regular file "
                                                 "(a pipe, a device, a folder): never read"),
    "volume.sidecar-mismatch": Code(Severity.ERROR, "the JSON sidecar beside a volume describes "
                                                    "another image (orientation or voxel size "
                                                    "differ): a stale or colliding sidecar"),
    "volume.no-geometry": Code(Severity.WARNING, "no world geometry (no qform/sform, no NRRD "
                                                 "space)"),
    "volume.bad-spacing": Code(Severity.WARNING, "a zero, negative or non-finite voxel size"),
    "volume.unsupported": Code(Severity.INFO, "a file convkit does not read as a volume (1D/2D "
                                              "NRRD, non-3D MetaImage)"),
    "nifti.qform-sform-mismatch": Code(Severity.WARNING, "qform and sform disagree: readers differ "
                                                         "in which they use"),
    "nifti.sheared": Code(Severity.WARNING, "the sform is sheared (gantry tilt kept): qform-only "
                                            "readers get another geometry"),
    "nifti.header-check": Code(Severity.WARNING, "nibabel's own header checks report a problem"),
    "nifti.units-unknown": Code(Severity.INFO, "xyzt_units does not say mm: readers assume it"),
    # Identifying data (reported only; nothing is changed).
    "identifiers.present": Code(Severity.INFO, "DICOM carries names, IDs, birth dates, addresses "
                                               "or institution (normal for clinical exports)"),
    "identifiers.in-volume": Code(Severity.WARNING, "a NIfTI/NRRD/MetaImage header or a JSON "
                                                    "sidecar carries identifying text"),
    "identifiers.unchecked": Code(Severity.WARNING, "identifying data could not be checked (part "
                                                    "of the file could not be read): treat it as "
                                                    "identifying"),
    # Segmentation objects (DICOM SEG, RTSTRUCT) checked against the series they reference.
    "seg.paired": Code(Severity.INFO, "a SEG or RTSTRUCT paired with the series it references "
                                      "(dicom2nii writes it as a label map)"),
    "seg.dangling": Code(Severity.WARNING, "a SEG or RTSTRUCT whose referenced series is not in "
                                           "the tree"),
    "seg.off-grid": Code(Severity.ERROR, "segmentation frames or contours that do not lie on "
                                         "the referenced series' grid"),
    "seg.outside": Code(Severity.ERROR, "labelled segmentation pixels outside the referenced "
                                        "series"),
    "seg.empty": Code(Severity.WARNING, "a SEG or RTSTRUCT without any segment or contour"),
    "seg.empty-segment": Code(Severity.WARNING, "a described segment without a single voxel"),
    "seg.contour-outside": Code(Severity.WARNING, "RTSTRUCT contour points outside the "
                                                  "referenced series' field of view"),
    "seg.unreadable": Code(Severity.ERROR, "a SEG or RTSTRUCT that cannot be read"),
    "seg.mask-off-grid": Code(Severity.WARNING, "a label-map volume (mask) beside a series "
                                                "whose voxels do not lie on its grid"),
    # A volume file checked against the DICOM series it belongs to.
    "pair.geometry-mismatch": Code(Severity.ERROR, "a volume's grid or world geometry differs from "
                                                   "the DICOM series it belongs to"),
}


class Finding(NamedTuple):
    """One problem or fact: severity and code (from CODES), where, what, and what to do.

    A NamedTuple: immutable, hashable, and cheap to create by the ten thousand.
    """

    severity: Severity
    code: str
    path: str  # the file or folder concerned ('' when it is a whole series)
    series: str  # the series label(s) concerned ('' for files that belong to none)
    message: str
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "path": self.path,
                "series": self.series, "message": self.message, "hint": self.hint}


def finding(code: str, message: str, hint: str = "", *, path: object = "",
            series: str = "") -> Finding:
    """A Finding with the severity CODES gives its code."""
    return Finding(CODES[code].severity, code, str(path) if path else "", series, message, hint)


def sort_key(item: Finding) -> tuple:
    """Most severe first, then by code, then by where."""
    return (-RANK[item.severity], item.code, item.series, item.path)
