"""Synthetic DICOM series with known geometry, for tests, sample data and benchmarks.

Everything here is deterministic: UIDs and file names derive from ``seed``.
Geometry is given in DICOM terms (LPS): ImageOrientationPatient, PixelSpacing
[between rows, between columns] and one ImagePositionPatient per slice.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convkit.geometry import plane_axes

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_SOP_CLASS = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}


def regular_positions(
    n_slices: int,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    spacing: float = 1.0,
    step: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """(n, 3) LPS positions: origin + k * step, step defaulting to normal * spacing."""
    if step is None:
        step = plane_axes(np.asarray(orientation, float))[2] * spacing
    return np.asarray(origin, float) + np.outer(np.arange(n_slices), np.asarray(step, float))


def uid(seed: Any, *parts: Any) -> str:
    """A valid, deterministic DICOM UID derived from seed and parts."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(seed), *map(str, parts)])


def write_series(
    out_dir: Path | str,
    stored: np.ndarray,
    positions: np.ndarray,
    *,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    modality: str = "CT",
    rescale_slope: float | Sequence[float] | None = None,
    rescale_intercept: float | Sequence[float] | None = None,
    bits_stored: int | None = None,
    series_number: int = 1,
    series_description: str = "synthetic",
    seed: int = 0,
    transfer_syntax: str | None = None,
    shuffle_names: bool = True,
    slice_thickness: float | None = None,
    times: Sequence[float] | None = None,
    extra: dict[str, Any] | None = None,
    per_slice: Sequence[dict[str, Any]] | None = None,
    edit: Callable[[Any, int], None] | None = None,
) -> list[Path]:
    """Write one single-frame file per slice and return the paths (in slice order).

    stored: (n, rows, cols) integer stored values, or (n, rows, cols, 3) uint8 RGB.
    positions: (n, 3) ImagePositionPatient per slice (LPS mm), in the same order.
    times: optional seconds per slice; sets AcquisitionTime (and, when given,
    TemporalPositionIdentifier from the distinct times).
    extra: attributes (by keyword) set on every file; per_slice: one dict per slice.
    edit(ds, index): called on each dataset before it is saved (private elements).
    File names are random-looking (seeded) when shuffle_names, so order must
    come from the headers. Series written with the same seed share the Study and
    FrameOfReference UIDs (one study); give different seeds to separate them.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    stored = np.asarray(stored)
    n = stored.shape[0]
    positions = np.asarray(positions, float).reshape(n, 3)
    rgb = stored.ndim == 4
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slopes = _per_slice_values(rescale_slope, n)
    intercepts = _per_slice_values(rescale_intercept, n)
    _, _, normal = plane_axes(np.asarray(orientation, float))
    if slice_thickness is None:
        distances = positions @ normal
        slice_thickness = float(np.median(np.abs(np.diff(distances)))) if n > 1 else 1.0
    distinct_times = sorted(set(times)) if times is not None else []
    study_uid, series_uid, frame_uid = (uid(seed, "study"), uid(seed, series_number, "series"),
                                        uid(seed, "frame"))
    names = [f"IM{index:05d}.dcm" for index in range(n)]
    if shuffle_names:
        rng = random.Random(seed)
        names = [f"{rng.getrandbits(48):012x}" for _ in range(n)]
    paths = []
    for index in range(n):
        ds = Dataset()
        ds.SOPClassUID = _SOP_CLASS.get(modality, SECONDARY_CAPTURE_STORAGE)
        ds.SOPInstanceUID = uid(seed, series_number, "instance", index)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.Manufacturer = "convkit synthetic"
        ds.PatientName = "Synthetic^Patient"
        ds.PatientID = "SYNTH001"
        ds.PatientBirthDate = "19700101"
        ds.StudyDate = ds.SeriesDate = "20260101"
        ds.StudyTime = "120000"
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.InstanceNumber = index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [_ds(v) for v in positions[index]]
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
        ds.SliceThickness = _ds(slice_thickness)
        ds.SliceLocation = _ds(float(positions[index] @ normal))
        if times is not None:
            ds.AcquisitionTime = _dicom_time(times[index])
            ds.TemporalPositionIdentifier = distinct_times.index(times[index]) + 1
        _set_pixels(ds, stored[index], rgb, bits_stored)
        slope, intercept = slopes[index], intercepts[index]
        if slope is not None:
            ds.RescaleSlope = _ds(slope)
        if intercept is not None:
            ds.RescaleIntercept = _ds(intercept)
        for keyword, value in {**(extra or {}), **(per_slice[index] if per_slice else {})}.items():
            setattr(ds, keyword, value)
        if edit is not None:
            edit(ds, index)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = out_dir / names[index]
        _encode(ds, transfer_syntax or ExplicitVRLittleEndian, stored.dtype)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _encode(ds: Any, syntax: str, dtype: np.dtype) -> None:
    """Set the transfer syntax: native ones by byte order/deflate, the rest by compression."""
    from pydicom.uid import (
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )

    if syntax == ExplicitVRBigEndian:
        swapped = np.frombuffer(ds.PixelData, dtype=dtype.newbyteorder("<")).astype(
            dtype.newbyteorder(">"))
        ds.PixelData = swapped.tobytes()
    elif syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                        DeflatedExplicitVRLittleEndian):
        ds.compress(syntax)
        return
    ds.file_meta.TransferSyntaxUID = syntax


def _set_pixels(ds: Any, pixels: np.ndarray, rgb: bool, bits_stored: int | None) -> None:
    ds.Rows, ds.Columns = pixels.shape[:2]
    if rgb:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
        return
    dtype = pixels.dtype
    if dtype.kind not in "iu":
        raise ValueError(f"stored values must be integers, got {dtype}")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 * dtype.itemsize
    ds.BitsStored = bits_stored or ds.BitsAllocated
    low, high = (-(1 << (ds.BitsStored - 1)), (1 << (ds.BitsStored - 1)) - 1) if dtype.kind == "i" \
        else (0, (1 << ds.BitsStored) - 1)
    if pixels.size and (pixels.min() < low or pixels.max() > high):
        raise ValueError(f"values {pixels.min()}..{pixels.max()} do not fit {ds.BitsStored} bits")
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=dtype.newbyteorder("<")).tobytes()


def _per_slice_values(value: float | Sequence[float] | None, n: int) -> list[float | None]:
    if not isinstance(value, Sequence | np.ndarray):
        return [value] * n
    values: list[float | None] = list(value)
    if len(values) != n:
        raise ValueError(f"expected {n} per-slice values, got {len(values)}")
    return values


def _ds(value: float) -> str:
    """A DS string of at most 16 characters."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _dicom_time(seconds: float) -> str:
    hours, rest = divmod(float(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}{int(minutes):02d}{secs:09.6f}"


#: GE adds this to the b-value in (0043,xx39) of multi-b series (diffusion.GE_BVALUE_BIAS).
_GE_BVALUE_BIAS = 1_000_000_000


def write_volumes(
    out_dir: Path | str,
    volumes: Sequence[dict[str, Any]],
    *,
    n_slices: int = 3,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (10.0, 20.0, 30.0),
    spacing: float = 2.0,
    shape: tuple[int, int] = (8, 10),
    descending: bool = False,
    extra: dict[str, Any] | None = None,
    edit: Callable[[Any, int, int], None] | None = None,
    seed: int = 0,
) -> list[Path]:
    """A 4D MR series (e.g. a DWI): one volume of n_slices per entry of volumes.

    volumes[t] holds attributes (by keyword) set on every slice of volume t; each volume
    has its own AcquisitionTime (10 s apart) and TemporalPositionIdentifier.
    descending: files and InstanceNumbers of a volume run against the slice normal.
    edit(ds, t, k): called on the dataset of volume t, slice k (private elements, e.g.
    ge_diffusion). Pixel values are seeded random integers. Returns the paths, volume
    by volume, in the order written.
    """
    positions = regular_positions(n_slices, orientation, origin, spacing)
    order = list(range(n_slices))[::-1] if descending else list(range(n_slices))
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 1000, (len(volumes) * n_slices, *shape), dtype=np.int16)
    slots = [(t, k) for t in range(len(volumes)) for k in order]
    per_slice = [{**volumes[t], "InstanceNumber": index + 1}
                 for index, (t, _) in enumerate(slots)]
    return write_series(
        out_dir, stored, np.array([positions[k] for _, k in slots]), orientation=orientation,
        modality="MR", times=[43200.0 + 10.0 * t for t, _ in slots], per_slice=per_slice,
        extra={"ImageType": ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"], **(extra or {})},
        edit=None if edit is None else (lambda ds, index: edit(ds, *slots[index])), seed=seed)


def ge_diffusion(ds: Any, bvalue: float, gradient: Sequence[float], bias: bool = True) -> None:
    """Store a GE weighting in ds the way GE does: the b-value as the first value of
    (0043,xx39) of 'GEMS_PARM_01' (with the multi-b bias), the logical gradient
    (frequency, phase, slice) in (0019,xxBB-BD) of 'GEMS_ACQU_01'."""
    stored = int(round(bvalue)) + (_GE_BVALUE_BIAS if bias else 0)
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS",
                                                                  [stored, 8, 0, 0])
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    for offset, value in zip((0xBB, 0xBC, 0xBD), gradient, strict=True):
        block.add_new(offset, "DS", f"{float(value):.6f}")


ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def write_enhanced(
    path: Path | str,
    stored: np.ndarray,
    positions: np.ndarray,
    orientations: np.ndarray,
    *,
    pixel_spacing: Sequence[float] = (1.0, 1.0),
    stack_ids: Sequence[str] | None = None,
    temporal_indices: Sequence[int] | None = None,
    echo_times: Sequence[float] | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    seed: int = 0,
    series_number: int = 1,
    instance: int = 1,
    frame_types: Sequence[Sequence[str]] | None = None,
    complex_components: Sequence[str] | None = None,
    manufacturer: str = "convkit synthetic",
) -> Path:
    """Write one Enhanced MR Image Storage file with a frame per stored[f].

    stored: (frames, rows, cols) integers; positions (frames, 3) and orientations
    (frames, 6) per frame (LPS), in the Per-frame Functional Groups; pixel
    measures and rescale in the Shared Functional Groups. stack_ids,
    temporal_indices and echo_times go to FrameContent / MREcho per frame;
    frame_types (FrameType values) and complex_components (ComplexImageComponent)
    to an MRImageFrameType item per frame. Files of one series (same seed and
    series_number) written with different instance numbers are separate instances.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian

    stored = np.asarray(stored)
    n_frames = stored.shape[0]
    ds = Dataset()
    ds.SOPClassUID = ENHANCED_MR_STORAGE
    ds.SOPInstanceUID = uid(seed, series_number, "enhanced", *([instance] if instance != 1 else []))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(seed, "study"), uid(seed, series_number, "s")
    ds.FrameOfReferenceUID = uid(seed, "frame")
    ds.Modality, ds.Manufacturer = "MR", manufacturer
    ds.PatientName, ds.PatientID = "Synthetic^Patient", "SYNTH001"
    ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = series_number, "enhanced", instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = n_frames
    _set_pixels(ds, stored[0], False, None)
    ds.PixelData = np.ascontiguousarray(stored, dtype=stored.dtype.newbyteorder("<")).tobytes()
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([Dataset()])
    shared.PixelMeasuresSequence[0].PixelSpacing = [_ds(v) for v in pixel_spacing]
    shared.PixelMeasuresSequence[0].SliceThickness = _ds(1.0)
    shared.PixelValueTransformationSequence = DicomSequence([Dataset()])
    shared.PixelValueTransformationSequence[0].RescaleSlope = _ds(rescale_slope)
    shared.PixelValueTransformationSequence[0].RescaleIntercept = _ds(rescale_intercept)
    shared.PixelValueTransformationSequence[0].RescaleType = "US"
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(
        [_frame_item(f, positions, orientations, stack_ids, temporal_indices, echo_times)
         for f in range(n_frames)])
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        if frame_types is None and complex_components is None:
            break
        frame_type = Dataset()
        if frame_types is not None:
            frame_type.FrameType = list(frame_types[f])
        if complex_components is not None:
            frame_type.ComplexImageComponent = complex_components[f]
        item.MRImageFrameTypeSequence = DicomSequence([frame_type])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _frame_item(frame: int, positions, orientations, stack_ids, temporal_indices, echo_times):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.PlanePositionSequence = DicomSequence([Dataset()])
    item.PlanePositionSequence[0].ImagePositionPatient = [_ds(v) for v in positions[frame]]
    item.PlaneOrientationSequence = DicomSequence([Dataset()])
    item.PlaneOrientationSequence[0].ImageOrientationPatient = [
        _ds(v) for v in orientations[frame]]
    content = Dataset()
    content.StackID = stack_ids[frame] if stack_ids is not None else "1"
    if temporal_indices is not None:
        content.TemporalPositionIndex = int(temporal_indices[frame])
    item.FrameContentSequence = DicomSequence([content])
    if echo_times is not None:
        item.MREchoSequence = DicomSequence([Dataset()])
        item.MREchoSequence[0].EffectiveEchoTime = float(echo_times[frame])
    return item


# --- Files that are not (plain) images of a series: classify tests --------------------------

#: Philips' private MR series data object: Rows/Columns but no PixelData.
PHILIPS_PRIVATE_SERIES_DATA = "1.3.46.670589.11.0.0.12.2"


def _save(ds: Any, path: Path) -> Path:
    """Save ds as explicit VR little endian Part 10 (file meta from its SOP UIDs)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_private_object(path: Path | str, beside: Path | str,
                         sop_class: str = PHILIPS_PRIVATE_SERIES_DATA) -> Path:
    """A vendor private non-image object in the series of the file `beside`: its study,
    series, SeriesNumber, geometry and Rows/Columns (of another size and orientation, as
    Philips' objects have), but a private SOP class and no PixelData."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset

    source = dcmread(beside)
    ds = Dataset()
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "Modality",
                    "SeriesDescription", "PixelSpacing", "FrameOfReferenceUID"):
        setattr(ds, keyword, source.get(keyword))
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(str(path), "private object")
    ds.Manufacturer = "Philips Medical Systems"
    ds.InstanceNumber = 1
    ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]  # another orientation
    ds.ImagePositionPatient = ["0", "0", "0"]
    ds.Rows, ds.Columns = 2, 3
    ds.BitsAllocated, ds.BitsStored, ds.SamplesPerPixel = 16, 16, 1
    return _save(ds, Path(path))


def write_screenshot(path: Path | str, *, seed: int = 0, series_number: int = 999,
                     burned_in: str | None = "YES", secondary_capture: bool = True,
                     nested_series_number: int | None = None,
                     image_type: Sequence[str] = ("DERIVED", "SECONDARY", "SCREEN SAVE"),
                     ) -> Path:
    """An RGB screenshot (a dose or patient-information page): Secondary Capture (or CT
    Image Storage) with ImageType DERIVED\\SECONDARY\\SCREEN SAVE and no patient geometry.
    nested_series_number: a ReferencedSeriesSequence item (of another series) holding this
    SeriesNumber, which names must not take."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE_STORAGE if secondary_capture else CT_IMAGE_STORAGE
    ds.SOPInstanceUID = uid(seed, series_number, "screenshot", str(path))
    ds.StudyInstanceUID = uid(seed, "study")
    ds.SeriesInstanceUID = uid(seed, series_number, "series")
    ds.Modality = "OT" if secondary_capture else "CT"
    ds.Manufacturer = "convkit synthetic"
    ds.PatientName, ds.PatientID = "Synthetic^Patient", "SYNTH001"
    ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = series_number, "Dose Report", 1
    ds.ImageType = list(image_type)
    if burned_in is not None:
        ds.BurnedInAnnotation = burned_in
    if nested_series_number is not None:
        item = Dataset()
        item.SeriesInstanceUID = uid(seed, "referenced series")
        item.SeriesNumber = nested_series_number
        ds.ReferencedSeriesSequence = DicomSequence([item])
    pixels = np.zeros((16, 24, 3), np.uint8)
    pixels[4:8, 4:20] = (255, 255, 0)  # a 'line of text'
    _set_pixels(ds, pixels, True, None)
    return _save(ds, Path(path))


def add_overlay(path: Path | str, bits: np.ndarray, *, group: int = 0x6000,
                origin: tuple[int, int] = (1, 1)) -> None:
    """Add an overlay plane (60xx) to a file: bits (rows, columns) of 0/1, its first pixel at
    image row/column origin (1-based, OverlayOrigin)."""
    from pydicom import dcmread
    from pydicom.pixels import pack_bits

    ds = dcmread(path)
    bits = np.asarray(bits, np.uint8)
    ds.add_new((group, 0x0010), "US", bits.shape[0])
    ds.add_new((group, 0x0011), "US", bits.shape[1])
    ds.add_new((group, 0x0022), "LO", "synthetic overlay")
    ds.add_new((group, 0x0040), "CS", "G")
    ds.add_new((group, 0x0050), "SS", list(origin))
    ds.add_new((group, 0x0100), "US", 1)
    ds.add_new((group, 0x0102), "US", 0)
    ds.add_new((group, 0x3000), "OW", pack_bits(bits.ravel()))
    ds.save_as(path)


def mark_uih_grid(path: Path | str, images: int) -> None:
    """Make a file look like a UIH 'virtual frame' grid of `images` tiles: Manufacturer UIH,
    NumberOfImagesInGrid (0065,1050) in the 'Image Private Header' block, and (as such
    files have) no ImagePositionPatient at the top level."""
    from pydicom import dcmread

    ds = dcmread(path)
    ds.Manufacturer = "UIH"
    block = ds.private_block(0x0065, "Image Private Header", create=True)
    block.add_new(0x50, "DS", str(images))
    del ds.ImagePositionPatient
    ds.save_as(path)
