"""Findings: what an audit check reports (checks as data, after nibabel's batteryrunners).

A check is a plain function that returns a list of Finding. Every finding has a
stable code whose severity is fixed here, in CODES, so that `--fail-on` means
the same thing in every tree and the documentation table is generated from data.

Severities:

- error: dicom2nii (or a reader) would refuse or fail on this, or a file contradicts
  the DICOM it came from: the data cannot be used as it is.
- warning: the data can be used, but not as a naive reader would: something is
  corrected, split, ambiguous or leaks identifying data; a person should look.
- info: a fact worth knowing (duplicates, two series in one folder, identifiers
  in clinical DICOM) that needs no action by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

#: Severities, lowest first.
SEVERITIES = ("info", "warning", "error")
RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Code:
    """One finding code: its fixed severity and what it means."""

    severity: str
    meaning: str


CODES: dict[str, Code] = {
    # Files.
    "file.unreadable": Code("error", "a file that cannot be read (DICOM header, broken link, "
                                     "permissions)"),
    "file.truncated": Code("error", "a DICOM file shorter than its pixel data (truncated copy)"),
    "file.empty": Code("warning", "a zero-byte file"),
    "file.not-dicom": Code("warning", "named like DICOM (.dcm, .ima ...) but neither DICOM nor "
                                      "a volume"),
    "file.skipped": Code("info", "DICOM without an image (report, presentation state ...)"),
    "file.duplicate": Code("info", "files with the same SOPInstanceUID as earlier files (one "
                                   "finding per folder): ignored by dicom2nii"),
    "folder.multiple-series": Code("info", "one folder holds files of several series"),
    # DICOM series: errors are what dicom2nii refuses or fails with its default options.
    "series.gap": Code("error", "uneven slice spacing or a missing slice: dicom2nii refuses "
                                "without --resample"),
    "series.duplicate-position": Code("error", "extra files at some slice positions: dicom2nii "
                                               "refuses"),
    "series.no-geometry": Code("error", "no ImagePositionPatient/ImageOrientationPatient/"
                                        "PixelSpacing: dicom2nii refuses"),
    "series.unsupported": Code("error", "pixel format, mosaic or diffusion encoding dicom2nii "
                                        "refuses"),
    "series.incomplete": Code("error", "some files of the series are unreadable: dicom2nii "
                                       "fails the series"),
    "series.tilt": Code("warning", "gantry tilt (sheared slices): dicom2nii resamples in-plane "
                                   "by default"),
    "series.mixed-orientation": Code("warning", "one SeriesInstanceUID holds several slice "
                                                "orientations: split into separate outputs"),
    "series.single-position": Code("warning", "every file at one position: written as a 4D "
                                              "series of one slice, not a volume"),
    "series.lossy": Code("warning", "lossy compressed transfer syntax: values are not the "
                                    "originals"),
    "series.split": Code("info", "one SeriesInstanceUID split into several volumes (echo, "
                                 "phase, matrix, localizer ...)"),
    "series.few-slices": Code("info", "one or two slices: the spacing cannot be checked"),
    "series.rescale-varies": Code("info", "rescale slope/intercept differ between slices: "
                                          "float32 real-world values are written"),
    "series.tilt-header": Code("info", "GantryDetectorTilt disagrees with the tilt the "
                                       "positions show"),
    # Volume files (NIfTI, NRRD, MetaImage).
    "volume.unreadable": Code("error", "a volume header that cannot be parsed"),
    "volume.truncated": Code("error", "the file holds less data than its header describes"),
    "volume.data-missing": Code("error", "the data file of a detached header is missing"),
    "volume.no-geometry": Code("warning", "no world geometry (no qform/sform, no NRRD space)"),
    "volume.bad-spacing": Code("warning", "a zero, negative or non-finite voxel size"),
    "volume.unsupported": Code("info", "a file convkit does not read as a volume (1D/2D NRRD, "
                                       "non-3D MetaImage)"),
    "nifti.qform-sform-mismatch": Code("warning", "qform and sform disagree: readers differ "
                                                  "in which they use"),
    "nifti.sheared": Code("warning", "the sform is sheared (gantry tilt kept): qform-only "
                                     "readers get another geometry"),
    "nifti.header-check": Code("warning", "nibabel's own header checks report a problem"),
    "nifti.units-unknown": Code("info", "xyzt_units does not say mm: readers assume it"),
    # Identifying data (reported only; nothing is changed).
    "identifiers.present": Code("info", "DICOM carries names, IDs, birth dates, addresses or "
                                        "institution (normal for clinical exports)"),
    "identifiers.in-volume": Code("warning", "a NIfTI/NRRD/MetaImage header or a JSON sidecar "
                                             "carries identifying text"),
    # A volume file checked against the DICOM series it belongs to.
    "pair.geometry-mismatch": Code("error", "a volume's grid or world geometry differs from "
                                            "the DICOM series it belongs to"),
}


class Finding(NamedTuple):
    """One problem or fact: severity and code (from CODES), where, what, and what to do.

    A NamedTuple: immutable, hashable, and cheap to create by the ten thousand.
    """

    severity: str
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
