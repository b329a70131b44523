"""Acquisition fields for the JSON sidecar, read from a series' first file.

Names follow DICOM keywords; times follow BIDS (EchoTime, RepetitionTime and
InversionTime in seconds). Patient identifiers are left out unless asked for.

The fields are read by the fast tag walker when every value they come from is one that
pydicom reads as is, without a warning (plain ASCII, valid for its VR, the VR the
dictionary gives it: clean_values); otherwise, and for any file the walker declines, by
pydicom. Importing pydicom costs a fifth of a small conversion, and the sidecar was the
only reason a plain series needed it. Tests hold the two equal on every corpus file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from convkit import __version__
from convkit.dicom.dataset import read_dataset
from convkit.dicom.dictionary import entries
from convkit.dicom.fastheader import IMPLICIT_VR_LE, Element, FastDataset, read_fast
from convkit.dicom.vendors import phase_encoding_fields

#: DICOM keyword -> divisor that converts its value to the sidecar's unit.
ACQUISITION_FIELDS: dict[str, float] = {
    "Modality": 1, "Manufacturer": 1, "ManufacturerModelName": 1, "SoftwareVersions": 1,
    "MagneticFieldStrength": 1, "BodyPartExamined": 1,
    "PatientPosition": 1, "SeriesDescription": 1, "ProtocolName": 1, "SeriesNumber": 1,
    "SeriesInstanceUID": 1, "StudyInstanceUID": 1, "StudyDate": 1, "AcquisitionNumber": 1,
    "ImageType": 1, "SliceThickness": 1, "SpacingBetweenSlices": 1, "PixelSpacing": 1,
    "EchoTime": 1000, "RepetitionTime": 1000, "InversionTime": 1000, "FlipAngle": 1,
    "EchoTrainLength": 1, "ScanningSequence": 1, "SequenceVariant": 1, "ScanOptions": 1,
    "SequenceName": 1, "MRAcquisitionType": 1, "ImagingFrequency": 1,
    "KVP": 1, "XRayTubeCurrent": 1, "Exposure": 1, "ExposureTime": 1, "ConvolutionKernel": 1,
    "ReconstructionDiameter": 1, "GantryDetectorTilt": 1, "TableHeight": 1,
    "ContrastBolusAgent": 1, "WindowCenter": 1, "WindowWidth": 1, "RescaleSlope": 1,
    "RescaleIntercept": 1, "RescaleType": 1, "BitsStored": 1, "PhotometricInterpretation": 1,
}
#: Identifying fields, written only with keep_identifiers (the institution narrows who it is).
IDENTIFIER_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName")


#: keyword -> (tag, dictionary VR) of every attribute the sidecar reads.
SIDECAR_ELEMENTS: dict[str, tuple[int, str]] = entries(
    *ACQUISITION_FIELDS, "ImageOrientationPatient", "InPlanePhaseEncodingDirection",
    "RectilinearPhaseEncodeReordering", "SpecificCharacterSet", *IDENTIFIER_FIELDS)
#: Siemens' bandwidth per pixel in the phase direction, read by its fixed tag
#: (vendors.phase_encoding_fields): taken by the fast path only as an explicit FD.
_SIEMENS_BANDWIDTH = (0x0019, 0x1028)
_READ_WITH_BANDWIDTH = {**SIDECAR_ELEMENTS, "_SiemensBandwidth": (0x00191028, "FD")}
#: Character sets under which ASCII bytes are ASCII text (pydicom decodes them the same).
_ASCII_CHARSETS = {"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6"}
_TEXT = re.compile(r"[\x20-\x7e]*")
#: What each VR must look like (and its most characters) for pydicom to read it without a
#: warning; stricter than pydicom where that is simpler (no padding inside values).
_VALID: dict[str, tuple[re.Pattern[str], int]] = {
    "CS": (re.compile(r"[A-Z0-9 _]*"), 16), "SH": (_TEXT, 16), "LO": (_TEXT, 64),
    "AE": (_TEXT, 16), "PN": (re.compile(r"[\x20-\x3c\x3e-\x7e]*"), 64),
    "DS": (re.compile(r"[+-]?(\d+|\d+\.\d*|\.\d+)([eE][+-]?\d+)?"), 16),
    "IS": (re.compile(r"[+-]?\d+"), 12),
    "DA": (re.compile(r"\d{4}(0[1-9]|1[0-2])([0-2]\d|3[01])"), 8),
    "UI": (re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))*"), 64),
}
_NUMBERS = {"US", "SS", "UL", "SL", "FL", "FD"}
_INT32 = (-(2**31), 2**31 - 1)


class _NotClean(Exception):
    """A value pydicom might read differently or warn about: read the file with pydicom."""


#: Metadata keys that describe how the volume was read, not the acquisition: not written.
READ_ONLY_KEYS = ("Format",)


def sidecar_document(metadata: dict[str, Any]) -> dict[str, Any]:
    """The JSON sidecar of a volume converted from DICOM (dicom2nii and convert write this):
    its acquisition and conversion fields, and which convkit wrote it."""
    document = {key: value for key, value in metadata.items() if key not in READ_ONLY_KEYS}
    document.update({"ConversionSoftware": "convkit", "ConversionSoftwareVersion": __version__})
    return document


def source_images(positions: list[list[Any]]) -> list[list[list[Any]]]:
    """--provenance: [volume t][slice k] -> [SOPInstanceUID, file, image], in the order of
    the written array (k along the slice axis, t the 4th axis; one volume for 3D).

    positions is a plan's Layout.positions ([k][t] of SliceHeaders); file is the path as
    scanned (relative_sources makes it relative to the input folder); image is the
    1-based frame of an enhanced file or tile of a mosaic, None for a single-image file.
    """
    def entry(header: Any) -> list[Any]:
        return [header.sop_instance_uid, header.path.as_posix(),
                header.frame + 1 if header.frame >= 0 else None]

    n_times = len(positions[0]) if positions else 0
    return [[entry(images[t]) for images in positions] for t in range(n_times)]


def relative_sources(metadata: dict[str, Any], root: Path) -> None:
    """SourceImages' files relative to root (the input folder) where they lie under it."""
    root = root if root.is_dir() else root.parent
    for volume in metadata.get("SourceImages", []):
        for item in volume:
            path = Path(item[1])
            if path.is_relative_to(root):
                item[1] = path.relative_to(root).as_posix()


def sidecar_fields(header: Any, keep_identifiers: bool = False) -> dict[str, Any]:
    """The acquisition fields of a series, from its first image's file, as JSON-ready values.

    header is that image's SliceHeader (its rows and columns are a mosaic tile's).
    Numbers that are not finite are left out (JSON has no NaN or Infinity). Call it
    inside dataset.warnings_caught(): pydicom warns about odd values as it converts them.
    """
    ds = clean_dataset(header.path) or read_dataset(header.path)
    return dataset_fields(ds, header.rows, header.columns, keep_identifiers)


def dataset_fields(ds: Any, rows: int, columns: int, keep_identifiers: bool) -> dict[str, Any]:
    """sidecar_fields of a dataset (pydicom's, or clean_dataset's)."""
    fields: dict[str, Any] = {}
    for keyword, divisor in ACQUISITION_FIELDS.items():
        value = _json_value(ds.get(keyword))
        if value is None:
            continue
        if divisor != 1 and isinstance(value, (int, float)):
            value = round(value / divisor, 9)
        fields[keyword] = value
    if "ImageOrientationPatient" in ds:
        fields["ImageOrientationPatientDICOM"] = _json_value(ds.ImageOrientationPatient)
    fields["TransferSyntaxUID"] = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(
        ds, "file_meta") else ""
    if str(ds.get("Modality", "")) == "MR":
        fields.update(phase_encoding_fields(ds, rows, columns))
    if keep_identifiers:
        for keyword in IDENTIFIER_FIELDS:
            if keyword in ds:
                fields[keyword] = _json_value(ds.get(keyword))
    return fields


def _json_value(value: Any) -> Any:
    """DICOM element values -> str, int, float or lists of them (None when empty)."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = [_json_value(v) for v in value]
        return items or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            return None
        return int(number) if number.is_integer() and type(value).__name__ in ("IS", "int") \
            else number
    if type(value).__name__ in ("DSfloat", "DSdecimal"):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, bytes):
        return None
    return str(value).strip() or None


def clean_dataset(path: Path) -> FastDataset | None:
    """The sidecar's attributes of a file as pydicom would give them (DS as float, IS as
    int, several values as a tuple), read by the tag walker; None when any of them (or of
    the file meta elements) is not clean_values' kind, or the walker declines the file."""
    fast = read_fast(path, _READ_WITH_BANDWIDTH, keep_raw=True)
    if fast is None or fast.problem:
        return None
    try:
        for _, vr, raw in fast.meta:
            if vr in _VALID:
                clean_values(raw, vr)
        charset = fast.raw.get("SpecificCharacterSet")
        if charset and "\\".join(clean_values(*charset)) not in _ASCII_CHARSETS:
            return None
        typed = {keyword: _typed(fast, keyword) for keyword in fast.raw
                 if keyword in SIDECAR_ELEMENTS}
        private = dict(fast.private)
        if "_SiemensBandwidth" in fast.raw:
            if fast.file_meta["TransferSyntaxUID"] == IMPLICIT_VR_LE:  # VR from a private
                return None  # dictionary in pydicom
            private[_SIEMENS_BANDWIDTH] = Element(_typed(fast, "_SiemensBandwidth"), "FD")
    except _NotClean:
        return None
    return FastDataset(typed, fast.file_meta["TransferSyntaxUID"], None, False, private)


def _typed(fast: FastDataset, keyword: str) -> Any:
    """One element's value as pydicom types it; _NotClean when it may not be read as is."""
    raw, file_vr = fast.raw[keyword]
    vr = _READ_WITH_BANDWIDTH[keyword][1]
    if file_vr != vr:  # an explicit VR other than the dictionary's (UN included)
        raise _NotClean(vr)
    if vr in _NUMBERS:
        return fast.get(keyword)  # as the walker unpacked them (it checked the length)
    items = clean_values(raw, vr)
    if vr == "DS":
        numbers = [float(item) for item in items]
        if not all(math.isfinite(number) for number in numbers):
            raise _NotClean(vr)
        values: list[Any] = numbers
    elif vr == "IS":
        values = [int(item) for item in items]
        if not all(_INT32[0] <= number <= _INT32[1] for number in values):
            raise _NotClean(vr)
    else:
        values = items
    if not values:
        return ""
    return values[0] if len(values) == 1 else tuple(values)


def clean_values(raw: bytes, vr: str) -> list[str]:
    """The values of a text element that pydicom reads as is and without a warning: ASCII,
    one trailing pad byte at most (space, or NUL for UI), no spaces around the values,
    each valid for its VR (pattern and length). _NotClean otherwise."""
    if raw[-1:] in (b" ", b"\x00"):
        raw = raw[:-1]
    if not raw:
        return []
    if not raw.isascii():
        raise _NotClean(vr)
    pattern, longest = _VALID.get(vr, (_TEXT, 0))
    if longest == 0:
        raise _NotClean(vr)
    items = raw.decode("ascii").split("\\")
    for item in items:
        if len(item) > longest or item != item.strip(" ") or not pattern.fullmatch(item) \
                or (vr == "PN" and item.count("^") > 4):
            raise _NotClean(vr)
    return items
