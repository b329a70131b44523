"""Acquisition fields for the JSON sidecar, read from a series' first file.

Names follow DICOM keywords; times follow BIDS (EchoTime, RepetitionTime and
InversionTime in seconds). Patient identifiers are left out unless asked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from convkit import __version__
from convkit.dicom.dataset import read_dataset
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
    ds = read_dataset(header.path)
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
        fields.update(phase_encoding_fields(ds, header.rows, header.columns))
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
