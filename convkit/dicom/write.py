"""Volume -> a DICOM series that validators and readers accept (nii2dicom).

One file per slice: CT Image Storage, MR Image Storage, or Secondary Capture
for anything else, with the Type 1 and Type 2 attributes of the IOD (DESIGN.md,
"Writing DICOM that other software accepts"). Geometry goes back from RAS to LPS:
slice k sits at affine @ (0, 0, k); rows run along j, columns along i. Values:
integers that fit 16 bits are stored exactly; anything else gets a rescale slope
and intercept chosen so nothing overflows, with the worst round-trip error stated.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convkit import __version__
from convkit.dicom.dataset import is_read_error, read_dataset, read_reason, warnings_caught
from convkit.dicom.scan import scan_folder
from convkit.dicom.sidecar import ACQUISITION_FIELDS
from convkit.errors import InputError, RefusedError, UsageError
from convkit.geometry import is_sheared, lps_to_ras
from convkit.volume import Volume

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "OT": "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
}
#: Attributes copied from a template series (--template): patient and study.
TEMPLATE_PATIENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
                    "IssuerOfPatientID", "OtherPatientIDs")
TEMPLATE_STUDY = ("StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber",
                  "ReferringPhysicianName", "InstitutionName")
#: Rows and Columns are US: at most this many.
MAX_MATRIX = 65535
#: BodyPartExamined values of paired structures (Laterality applies to them only).
PAIRED_BODY_PARTS = frozenset({
    "ANKLE", "ARM", "BREAST", "CLAVICLE", "EAR", "ELBOW", "EXTREMITY", "EYE", "FEMUR",
    "FIBULA", "FINGER", "FOOT", "FOREARM", "HAND", "HIP", "HUMERUS", "KIDNEY", "KNEE", "LEG",
    "LUNG", "OVARY", "PATELLA", "RADIUS", "SCAPULA", "SHOULDER", "TESTIS", "THUMB", "TIBIA",
    "TOE", "ULNA", "UPRLIMB", "LOWLIMB", "WRIST", "ADRENAL", "ORBIT", "TMJ", "SI JOINT",
    "CALCANEUS", "ACJOINT", "SCJOINT", "PAROTID", "SUBMANDIBULAR"})
#: Sidecar fields (DICOM keywords, see dicom.sidecar.ACQUISITION_FIELDS) written back into
#: the DICOM files, by the modules that hold them: every written IOD, or only CT / MR.
#: Not carried: what describes the original files rather than this series (UIDs, numbers,
#: ImageType, rescale, bits, transfer syntax), geometry (from the affine: a resampled or
#: tilt-corrected volume has its own), and identifiers (only --template copies those).
SIDECAR_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "BodyPartExamined": ("CT", "MR", "OT"), "ProtocolName": ("CT", "MR", "OT"),
    "PatientPosition": ("CT", "MR", "OT"),
    "WindowCenter": ("CT", "MR", "OT"), "WindowWidth": ("CT", "MR", "OT"),
    "ContrastBolusAgent": ("CT", "MR"),
    "KVP": ("CT",), "XRayTubeCurrent": ("CT",), "Exposure": ("CT",), "ExposureTime": ("CT",),
    "ConvolutionKernel": ("CT",), "ReconstructionDiameter": ("CT",), "TableHeight": ("CT",),
    "EchoTime": ("MR",), "RepetitionTime": ("MR",), "InversionTime": ("MR",),
    "FlipAngle": ("MR",), "EchoTrainLength": ("MR",), "ScanningSequence": ("MR",),
    "SequenceVariant": ("MR",), "ScanOptions": ("MR",), "SequenceName": ("MR",),
    "MRAcquisitionType": ("MR",), "ImagingFrequency": ("MR",), "MagneticFieldStrength": ("MR",),
}


@dataclass
class SeriesIdentity:
    """Who and what the written series belongs to (anonymous defaults)."""

    patient_name: str = "Anonymous^"
    patient_id: str = "ANON"
    study_description: str = ""
    series_description: str = "convkit"
    series_number: int = 9001
    modality: str = "OT"
    study_uid: str | None = None  # None: a new study
    frame_uid: str | None = None  # None: a new frame of reference
    template: list[Any] = field(default_factory=list)  # DataElements copied as they are


@dataclass
class StoredValues:
    """How real values are encoded: real = stored * slope + intercept."""

    stored: np.ndarray  # (i, j, k) integers of dtype int16 or uint16
    slope: float
    intercept: float
    max_error: float  # worst |decoded - real| over the volume (0 when exact)


@dataclass
class WrittenSeries:
    folder: str
    files: int
    series_uid: str
    sop_class: str
    slope: float
    intercept: float
    max_error: float
    notes: list[str] = field(default_factory=list)


def new_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


#: Identity fields and the DICOM VR their values must satisfy.
_IDENTITY_VRS = {"patient_name": ("PN", "--patient-name"), "patient_id": ("LO", "--patient-id"),
                 "study_description": ("LO", "--study-description"),
                 "series_description": ("LO", "--series-description"),
                 "series_number": ("IS", "--series-number")}


def validate_identity(identity: SeriesIdentity) -> None:
    """Refuse (exit 2) identity values that would make the files invalid DICOM."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    for name, (vr, option) in _IDENTITY_VRS.items():
        value = getattr(identity, name)
        text = str(value)
        try:
            if "\\" in text:
                raise ValueError("a backslash separates DICOM values")
            validate_value(vr, value if vr != "IS" else text, config.RAISE)
            if vr == "IS" and not -(2**31) <= int(value) < 2**31:
                raise ValueError("out of the IS range")
        except ValueError as exc:
            raise UsageError(f"{option} {text[:40]!r} is not a valid {vr} value ({exc})",
                             "use at most 64 characters, no backslash (numbers: 32-bit)") from None


def encode_values(volume: Volume) -> StoredValues:
    """16-bit stored values for the volume's real values, exact whenever possible."""
    if volume.is_rgb:
        raise RefusedError("colour (RGB) volumes are not written as DICOM yet",
                           "convert a single channel, or keep the volume as NIfTI/NRRD")
    with np.errstate(over="ignore", invalid="ignore"):  # non-finite results are refused
        exact = _exact_integers(volume)
        if exact is not None:
            return exact
        real = volume.real_array(np.float64)
    if not np.all(np.isfinite(real)):
        bad = int(np.count_nonzero(~np.isfinite(real)))
        raise RefusedError(f"the volume holds {bad} NaN or infinite values",
                           "DICOM stores numbers only: replace them (e.g. with 0) first")
    low, high = float(real.min()), float(real.max())
    slope = (high - low) / 65535.0 if high > low else 1.0
    if not math.isfinite(slope) or slope == 0:
        raise RefusedError(f"the values span {low:g} to {high:g}: no 16-bit rescale holds that "
                           "range", "rescale the values into a smaller range first")
    stored = np.rint((real - low) / slope)
    np.clip(stored, 0, 65535, out=stored)
    error = float(np.max(np.abs(stored * slope + low - real))) if real.size else 0.0
    return StoredValues(stored.astype(np.uint16, order="F"), slope, low, error)


def _exact_integers(volume: Volume) -> StoredValues | None:
    """Stored integers (and the volume's own rescale) when they fit 16 bits, else None."""
    array = volume.array
    if array.dtype.kind == "f":
        real = volume.real_array(np.float64)
        if not np.all(np.isfinite(real)) or not np.array_equal(real, np.rint(real)):
            return None
        array, slope, intercept = real, 1.0, 0.0
    elif array.dtype.kind in "iub":
        slope, intercept = volume.slope, volume.intercept
    else:
        return None
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (np.uint16, np.int16):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return StoredValues(array.astype(dtype, order="F"), slope, intercept, 0.0)
    return None


def dicom_geometry(affine_ras: np.ndarray) -> tuple[np.ndarray, tuple[float, float], float]:
    """(ImageOrientationPatient, PixelSpacing [rows, cols], slice spacing) of an affine (LPS).

    Refuses sheared affines: a DICOM series has one orientation and straight stacks.
    """
    if not np.all(np.isfinite(affine_ras)):
        raise RefusedError("the affine holds NaN or infinite values: DICOM positions and "
                           "spacings are finite numbers", "fix the header's geometry")
    lps = lps_to_ras(affine_ras)
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing == 0):
        raise RefusedError("the affine has a zero-length axis", "fix the header's voxel sizes")
    unit = columns / spacing
    if is_sheared(lps):
        raise RefusedError("the affine is sheared (e.g. gantry tilt kept in the sform): one "
                           "DICOM series cannot hold it", "convkit convert --resample IN OUT "
                           "puts it on a regular grid first", "volume.sheared")
    orientation = np.concatenate([unit[:, 0], unit[:, 1]])
    return orientation, (float(spacing[1]), float(spacing[0])), float(spacing[2])


def write_dicom_series(
    volume: Volume,
    out_dir: Path,
    identity: SeriesIdentity,
    progress: Callable[[int, int], None] | None = None,
) -> WrittenSeries:
    """Write a 3D volume as one file per slice into out_dir (which the caller stages)."""
    if volume.array.ndim != 3:
        raise UsageError("write_dicom_series takes a 3D volume", "split 4D volumes first")
    if 0 in volume.shape or max(volume.shape[:2]) > MAX_MATRIX:
        raise RefusedError(f"a volume of shape {'x'.join(map(str, volume.shape))} cannot be "
                           f"written as DICOM images (1 to {MAX_MATRIX} rows and columns, "
                           "at least one slice)", "check the volume's dimensions")
    modality = identity.modality.upper()
    sop_class = SOP_CLASSES.get(modality, SOP_CLASSES["OT"])
    orientation, pixel_spacing, slice_spacing = dicom_geometry(volume.affine)
    values = encode_values(volume)
    lps = lps_to_ras(volume.affine)
    with warnings_caught() as caught:  # pydicom's complaints about values: notes, not stderr
        notes: list[str] = []
        shared = _shared_dataset(volume, identity, sop_class, orientation, pixel_spacing,
                                 slice_spacing, values, notes)
        n_slices = volume.shape[2]
        for k in range(n_slices):
            position = (lps @ [0.0, 0.0, k, 1.0])[:3]
            ds = _slice_dataset(shared, k, position, values.stored[:, :, k].T, identity)
            _save(ds, out_dir / f"IM{k + 1:05d}.dcm")
            if progress:
                progress(k + 1, n_slices)
    if values.max_error:
        notes.append(f"real values encoded with RescaleSlope {values.slope:.6g}: round-trip "
                     f"error at most {values.max_error:.3g}")
    notes += [f"pydicom: {text}" for text in caught]
    return WrittenSeries(str(out_dir), n_slices, str(shared.SeriesInstanceUID), sop_class,
                         values.slope, values.intercept, values.max_error, notes)


def _shared_dataset(volume: Volume, identity: SeriesIdentity, sop_class: str,
                    orientation: np.ndarray, pixel_spacing: tuple[float, float],
                    slice_spacing: float, values: StoredValues, notes: list[str]) -> Any:
    """Everything that is the same in every slice of the series (what it did: to notes)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    now = dt.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    modality = {v: k for k, v in SOP_CLASSES.items()}[sop_class]
    ds.Modality = modality if modality != "OT" else (identity.modality.upper() or "OT")
    # Patient and study (template first, then options, then anonymous defaults).
    ds.PatientName, ds.PatientID = identity.patient_name, identity.patient_id
    ds.PatientBirthDate, ds.PatientSex = "", ""
    ds.StudyInstanceUID = identity.study_uid or generate_uid()
    ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.StudyDescription = identity.study_description
    for element in identity.template:
        ds.add(element)  # as stored in the template: no re-validation of odd values
    # Series, frame of reference, equipment.
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = identity.series_number
    ds.SeriesDescription = identity.series_description
    ds.SeriesDate, ds.SeriesTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = ds.SeriesDate, ds.SeriesTime
    ds.FrameOfReferenceUID = identity.frame_uid or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.Laterality = ""  # Type 2C: an empty value is "unknown"; dciodvfy wants it present
    ds.BodyPartExamined = ""
    ds.Manufacturer = "convkit"
    ds.SoftwareVersions = f"convkit {__version__}"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL" if modality == "CT" else "OTHER"]
    ds.DerivationDescription = "converted from a volume by convkit"
    # Image plane and pixels.
    ds.ImageOrientationPatient = [_ds(v, "ImageOrientationPatient") for v in orientation]
    ds.PixelSpacing = [_ds(v, "PixelSpacing") for v in pixel_spacing]
    ds.SliceThickness = _ds(slice_spacing, "SliceThickness")
    ds.SpacingBetweenSlices = _ds(slice_spacing, "SpacingBetweenSlices")
    ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if values.stored.dtype == np.int16 else 0
    if modality == "CT" or (values.slope, values.intercept) != (1.0, 0.0):
        # Not part of the MR IOD, but the only way to store scaled values there.
        ds.RescaleSlope = _ds(values.slope, "RescaleSlope")
        ds.RescaleIntercept = _ds(values.intercept, "RescaleIntercept")
        ds.RescaleType = "HU" if modality == "CT" else "US"
    _set_window(ds, values)
    _modality_attributes(ds, modality, volume)
    carried, skipped = _sidecar_attributes(ds, modality, volume.metadata)
    if ds.BodyPartExamined and ds.BodyPartExamined not in PAIRED_BODY_PARTS:
        del ds.Laterality  # Type 2C: only for paired structures (dciodvfy checks it)
    if carried:
        notes.append(f"from the sidecar: {', '.join(carried)}")
    if skipped:
        notes.append(f"sidecar values not valid in DICOM, not written: {', '.join(skipped)}")
    return ds


def _sidecar_attributes(ds: Any, modality: str, meta: dict[str, Any]
                        ) -> tuple[list[str], list[str]]:
    """Set the sidecar's fields that have a home in this IOD (SIDECAR_ATTRIBUTES); return
    (carried, skipped as invalid). Times go back from the sidecar's seconds to DICOM's ms;
    a window replaces the computed one only as a whole (as many centres as widths)."""
    carried, skipped = [], []
    encoded = {}
    for keyword, modalities in SIDECAR_ATTRIBUTES.items():
        value = meta.get(keyword)
        if modality not in modalities or value is None or value == "" or value == []:
            continue
        encoded[keyword] = _dicom_value(keyword, value)
    window = [encoded.pop(k, None) for k in ("WindowCenter", "WindowWidth")]
    if any(w is not None for w in window):
        if all(w is not None for w in window) and len(_as_list(window[0])) == len(
                _as_list(window[1])):
            encoded["WindowCenter"], encoded["WindowWidth"] = window
        else:
            skipped.append("WindowCenter/WindowWidth")
    for keyword, value in encoded.items():
        if value is None:
            skipped.append(keyword)
        else:
            setattr(ds, keyword, value)
            carried.append(keyword)
    return carried, skipped


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _dicom_value(keyword: str, value: Any) -> Any:
    """A sidecar value as a valid value of keyword's VR (sidecar units back to DICOM's),
    or None when it is not one."""
    from pydicom import config
    from pydicom.datadict import dictionary_VM, dictionary_VR
    from pydicom.valuerep import validate_value

    tag = keyword  # the dictionary looks keywords up as tags
    vr, multiple = dictionary_VR(tag), dictionary_VM(tag) != "1"
    items = _as_list(value)
    if not items or (len(items) > 1 and not multiple):
        return None
    scale = ACQUISITION_FIELDS.get(keyword, 1)
    encoded = []
    try:
        for item in items:
            if vr in ("DS", "IS"):
                if isinstance(item, bool) or not isinstance(item, (int, float)):
                    return None
                number = float(item) * scale
                if vr == "IS" and not number.is_integer():
                    return None
                item = _ds(number, keyword) if vr == "DS" else str(int(number))
            elif not isinstance(item, str):
                return None
            validate_value(vr, item, config.RAISE)
            encoded.append(item)
    except (ValueError, RefusedError, OverflowError):
        return None
    return encoded if len(encoded) > 1 else encoded[0]


def _modality_attributes(ds: Any, modality: str, volume: Volume) -> None:
    """The CT, MR or Secondary Capture module's own required attributes."""
    meta = volume.metadata
    if modality == "CT":
        ds.KVP = _metadata_ds(meta, "KVP")
        ds.AcquisitionNumber = ""
        ds.PatientPosition = str(meta.get("PatientPosition", "") or "")
    elif modality == "MR":
        ds.ScanningSequence = "RM"  # research mode: the acquisition is not known
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = ""
        ds.RepetitionTime = _metadata_ds(meta, "RepetitionTime", 1000)  # s -> ms
        ds.EchoTime = _metadata_ds(meta, "EchoTime", 1000)
        ds.EchoTrainLength = ""
        ds.PatientPosition = str(meta.get("PatientPosition", "") or "")
    else:
        ds.ConversionType = "WSD"  # workstation
        # No Image Plane module in Secondary Capture: the orientation in letters is required.
        # (Position and orientation are kept too, so that readers rebuild the geometry.)
        ds.PatientOrientation = [_direction_letters(v) for v in
                                 np.reshape(np.asarray(ds.ImageOrientationPatient, float), (2, 3))]


def _metadata_ds(meta: dict[str, Any], keyword: str, scale: float = 1.0) -> str:
    """A sidecar number as DS ('' when absent, zero or not a number: the attributes are
    Type 2); RefusedError when it is NaN or infinite."""
    value = meta.get(keyword)
    if not value or isinstance(value, bool):
        return ""
    try:
        number = float(value) * scale
    except (TypeError, ValueError, OverflowError):
        return ""
    return _ds(number, keyword)


def _direction_letters(vector: np.ndarray) -> str:
    """LPS direction -> DICOM patient orientation letters, dominant axis first (e.g. 'LP')."""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    order = np.argsort(-np.abs(vector))
    return "".join(letters[axis][int(vector[axis] > 0)] for axis in order
                   if abs(vector[axis]) > 1e-3) or "L"


def _set_window(ds: Any, values: StoredValues) -> None:
    """A window covering the 1st to 99th percentile of real values (none when that range
    overflows: the window is optional, the values are not)."""
    if not values.stored.size:
        return
    low, high = np.percentile(values.stored, [1, 99])
    low, high = low * values.slope + values.intercept, high * values.slope + values.intercept
    center, width = low / 2 + high / 2, max(high - low, 1.0)
    if not (math.isfinite(center) and math.isfinite(width)):
        return
    ds.WindowCenter = _ds(center, "WindowCenter")
    ds.WindowWidth = _ds(width, "WindowWidth")


def _slice_dataset(shared: Any, k: int, position: np.ndarray, pixels: np.ndarray,
                   identity: SeriesIdentity) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = shared.copy()
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [_ds(v, "ImagePositionPatient") for v in position]
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _save(ds: Any, path: Path) -> None:
    """Write one file; an OSError (a full disk) as a plain one naming the path.

    pydicom re-raises errors inside an element's write as the same type with the tag
    and a whole traceback in the text: the original error is the one to report, so
    that staged_folder says e.g. "No space left on device" and removes the staging.
    """
    try:
        ds.save_as(path, enforce_file_format=True)
    except OSError as exc:
        original = exc
        while original.__cause__ is not None and isinstance(original.__cause__, OSError):
            original = original.__cause__
        raise OSError(original.errno, original.strerror or str(original).splitlines()[0],
                      str(path)) from exc


def template_attributes(folder: Path, same_study: bool) -> tuple[list[Any], str | None,
                                                                   str | None]:
    """Patient and study attributes of the first file of a DICOM series (for --template).

    Returns (DataElements, StudyInstanceUID, FrameOfReferenceUID); the UIDs only
    with same_study.
    """
    scan = scan_folder(folder)
    if not scan.series:
        raise InputError(f"--template {folder}: no DICOM images there",
                         "pass the folder of the series the result belongs with")
    path = scan.series[0].first.path
    with warnings_caught():  # values that break their VR are left out (_valid), silently
        try:
            ds = read_dataset(path)
            copied = [ds[k] for k in TEMPLATE_PATIENT + TEMPLATE_STUDY
                      if k in ds and _valid(ds[k])]
            uids = (str(ds.get("StudyInstanceUID", "") or "") or None,
                    str(ds.get("FrameOfReferenceUID", "") or "") or None)
        except Exception as exc:
            if not is_read_error(exc):
                raise
            raise InputError(f"--template {folder}: {path} cannot be read ({read_reason(exc)})",
                             "pass the folder of another series") from exc
    if not same_study:
        return copied, None, None
    return copied, *uids


def _valid(element: Any) -> bool:
    """False for values that break their VR (a template's '0Y' age would make ours invalid)."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    values = element.value if isinstance(element.value, list | tuple) else [element.value]
    try:
        for value in values:
            validate_value(element.VR, value, config.RAISE)
    except ValueError:
        return False
    return True


def _ds(value: float, keyword: str = "") -> str:
    """A DS string of at most 16 characters; RefusedError (naming keyword) for NaN and
    infinity, which DICOM cannot store."""
    from pydicom.valuerep import format_number_as_ds

    number = float(value)
    if not math.isfinite(number):
        raise RefusedError(f"{keyword or 'a decimal value'} would be {number}: DICOM stores "
                           "finite numbers only", "fix the value in the source volume")
    return format_number_as_ds(number)
