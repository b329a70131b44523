"""Single-file mode: a file's full header summary (what an `info` command would print).

DICOM: the key attributes (identity, equipment, image pixel, plane, rescale,
acquisition), with identifying values hidden unless asked for. NIfTI: every
header field. NRRD and MetaImage: every header field as written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convkit import geometry
from convkit.audit.identifiers import DICOM_IDENTIFIERS, real_value
from convkit.dicom.dataset import is_read_error, read_dataset, read_reason, warnings_caught
from convkit.geometry import axis_codes

#: DICOM attributes of the summary, in order (identifying ones are masked by default).
DICOM_SUMMARY = (
    "SOPClassUID", "Modality", "Manufacturer", "ManufacturerModelName", "SoftwareVersions",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "InstitutionName",
    "InstitutionAddress", "ReferringPhysicianName", "AccessionNumber", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "StudyDate", "StudyDescription", "SeriesNumber",
    "SeriesDescription", "ProtocolName", "InstanceNumber", "AcquisitionNumber", "ImageType",
    "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "PhotometricInterpretation",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "ImagePositionPatient", "ImageOrientationPatient",
    "SliceLocation", "GantryDetectorTilt", "RescaleSlope", "RescaleIntercept", "RescaleType",
    "WindowCenter", "WindowWidth", "KVP", "ConvolutionKernel", "MagneticFieldStrength",
    "EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "EchoNumbers",
    "ScanningSequence", "SequenceVariant", "MRAcquisitionType", "PatientPosition",
    "BodyPartExamined", "PatientIdentityRemoved",
)
#: UIDs that identify a study or series (shown only with --show-identifiers).
IDENTIFYING_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
HIDDEN = "(present, hidden: --show-identifiers)"


def describe_file(path: Path, kind: str, show_identifiers: bool, volume=None) -> dict[str, Any]:
    """{field: value} summarising one file's header (JSON-ready)."""
    summary: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size}
    if kind == "dicom":
        summary.update(_dicom_summary(path, show_identifiers))
    elif volume is not None:
        summary["format"] = volume.format
        if volume.problem:
            summary["problem"] = volume.problem
        header = dict(volume.header)
        if not show_identifiers:
            for name in volume.identifying:
                if name in header:
                    header[name] = HIDDEN
        summary.update(header)
        summary["orientation"] = _codes(volume.affine)
        summary["size_check"] = volume.size.text
    else:
        summary["content"] = kind
    return summary


def _codes(affine) -> str:
    if affine is None:
        return ""
    return axis_codes(affine)


def _dicom_summary(path: Path, show_identifiers: bool) -> dict[str, Any]:
    import numpy as np

    try:
        with warnings_caught():  # what pydicom finds odd is the findings' business
            ds = read_dataset(path)
    except Exception as exc:  # unreadable: the findings say why
        if not is_read_error(exc):
            raise
        return {"problem": read_reason(exc)}
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    summary: dict[str, Any] = {"TransferSyntaxUID": _named_uid(syntax)}
    for keyword in DICOM_SUMMARY:
        if keyword not in ds:
            continue
        value = _value(ds.get(keyword))
        if keyword == "SOPClassUID":
            value = _named_uid(str(value))
        if not show_identifiers and (keyword in DICOM_IDENTIFIERS or keyword in IDENTIFYING_UIDS
                                     ) and real_value(value):
            value = HIDDEN
        summary[keyword] = value
    orientation = summary.get("ImageOrientationPatient")
    if isinstance(orientation, list) and len(orientation) == 6:
        try:
            _, _, normal = geometry.plane_axes(np.asarray(orientation, float))
        except geometry.DegenerateOrientation as exc:
            summary["orientation"] = f"degenerate ({exc})"
            return summary
        affine = geometry.lps_to_ras(geometry.affine_lps(orientation, (1.0, 1.0), np.zeros(3),
                                                         normal))
        summary["orientation"] = _codes(affine)
    return summary


def _named_uid(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return f"{uid} ({name})" if name and name != uid else uid


def _value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_value(v) for v in value]
    if type(value).__name__ in ("DSfloat", "DSdecimal") or isinstance(value, float):
        return float(value)
    if type(value).__name__ == "IS" or isinstance(value, int):
        return int(value)
    if isinstance(value, bytes):
        return f"({len(value)} bytes)"
    return str(value)
