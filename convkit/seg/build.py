"""A DICOM Segmentation object built directly with pydicom (no highdicom on the write path).

The module structure follows what highdicom 0.28 writes for the same input (compared element
by element on small cases; highdicom stays the reader and oracle in the tests): patient and
study attributes copied from the source, a SEG series, the Segmentation Image module, one
Segment Sequence item per label (LABELMAP: plus segment 0, the background), shared functional
groups (orientation, pixel measures) and per-frame groups (the source image each frame derives
from, its position, its dimension index and, BINARY, its segment). Frames are packed with
numpy in one pass: LABELMAP as 8/16-bit labels, BINARY as bits (little-endian bit order).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np

from convkit import __version__
from convkit.seg.labels import LabelInfo

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
#: Positions this close (mm) to a regular progression make a regularly spaced volume.
SPACING_TOLERANCE_MM = 1e-3

#: Patient and study attributes copied from the source (Type 2 ones written empty if absent).
COPIED = ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID",
          "PatientBirthDate", "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
          "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
          "AccessionNumber", "StudyDescription")
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
         "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")


@dataclass
class FrameSource:
    """The source image one SEG frame lies on."""

    sop_class_uid: str
    sop_instance_uid: str
    position: tuple[float, float, float]  # LPS mm
    frame_number: int  # 1-based frame of a multi-frame source; 0 for a single-frame file


def cielab(rgb: tuple[int, int, int]) -> list[int]:
    """sRGB (0-255) -> DICOM's CIELab encoding (D65 white; L*, a*, b* scaled to 0-65535)."""
    linear = np.asarray(rgb, dtype=float) / 255.0
    linear = np.where(linear > 0.04045, ((linear + 0.055) / 1.055) ** 2.4, linear / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ (linear * 100.0)
    ratio = xyz / np.array([95.047, 100.0, 108.883])
    f = np.where(ratio > 0.008856, np.cbrt(ratio), 7.787 * ratio + 16.0 / 116.0)
    lightness, a, b = 116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])
    lightness, a, b = min(max(lightness, 0.0), 100.0), min(max(a, -128.0), 127.0), \
        min(max(b, -128.0), 127.0)
    return [round(lightness * 0xFFFF / 100.0), round((a + 128.0) * 0xFFFF / 255.0),
            round((b + 128.0) * 0xFFFF / 255.0)]


def _item(**values: Any) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, scheme: str, meaning: str) -> Any:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _ds(value: float) -> str:
    """A DS string of at most 16 characters that keeps the value's precision."""
    text = repr(float(value))
    if len(text) <= 16:
        return text
    return format(float(value), ".10g")[:16]


def build_segmentation(frames_pixels: np.ndarray, sources: list[FrameSource],
                       segments: list[LabelInfo], seg_type: str, source: Any,
                       orientation: tuple[float, ...], pixel_spacing: tuple[float, float],
                       slice_thickness: float | None, series_uid: str, series_description: str
                       ) -> Any:
    """The Segmentation dataset of frames_pixels (frames, rows, columns: labels, 0 background)
    on the source frames `sources` (one per plane, in slice order); `source` is one source
    dataset (patient, study, frame of reference)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    labelmap = seg_type == "labelmap"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop_class = LABEL_MAP_SEGMENTATION_STORAGE if labelmap else SEGMENTATION_STORAGE
    sop_uid = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    _general(ds, source, sop_class, sop_uid, series_uid, series_description)
    _references(ds, sources, str(source.SeriesInstanceUID))
    spacing = regular_spacing([s.position for s in sources], orientation)
    ds.SharedFunctionalGroupsSequence = [_shared(orientation, pixel_spacing, slice_thickness,
                                                 spacing)]
    pixels, per_frame = _frames(frames_pixels, sources, segments, labelmap)
    _dimensions(ds, labelmap, spacing is not None)
    _image(ds, frames_pixels.shape[1:], len(per_frame), labelmap, frames_pixels.dtype.itemsize)
    ds.SegmentSequence = ([_background()] if labelmap else []) + \
        [_segment(info) for info in segments]
    ds.SegmentsOverlap = "NO"
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = pixels
    ds["PixelData"].VR = "OW" if labelmap and frames_pixels.dtype.itemsize == 2 else "OB"
    return ds


def _general(ds: Any, source: Any, sop_class: str, sop_uid: str, series_uid: str,
             description: str) -> None:
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    for keyword in COPIED:
        if keyword in source and (keyword != "SpecificCharacterSet" or source.get(keyword)):
            setattr(ds, keyword, source.get(keyword))
        elif keyword in TYPE2:
            setattr(ds, keyword, "")
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.ContentDate, ds.ContentTime = date, time
    ds.Modality = "SEG"
    ds.Manufacturer = ds.ManufacturerModelName = "convkit"
    ds.SoftwareVersions = __version__
    ds.DeviceSerialNumber = "0"
    ds.SeriesDescription = description
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 9100
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")
    ds.ContentLabel = "CT_SEG" if str(source.get("Modality", "")) == "CT" else "SEG"
    ds.ContentDescription = ""
    ds.ContentCreatorName = ""
    equipment = []
    if source.get("Manufacturer"):
        equipment.append(_item(Manufacturer=source.Manufacturer,
                               ContributionDescription="Acquisition equipment of the source "
                               "image(s)", PurposeOfReferenceCodeSequence=[
                                   _code("109101", "DCM", "Acquisition Equipment")]))
    equipment.append(_item(Manufacturer="convkit", ManufacturerModelName="convkit",
                           SoftwareVersions=__version__,
                           ContributionDateTime=now.strftime("%Y%m%d%H%M%S.%f"),
                           ContributionDescription="Software used to create this instance",
                           PurposeOfReferenceCodeSequence=[
                               _code("109102", "DCM", "Processing Equipment")]))
    ds.ContributingEquipmentSequence = equipment


def _references(ds: Any, sources: list[FrameSource], series_uid: str) -> None:
    instances = {s.sop_instance_uid: s.sop_class_uid for s in sources}
    referenced = [_item(ReferencedSOPClassUID=c, ReferencedSOPInstanceUID=u)
                  for u, c in instances.items()]
    ds.ReferencedSeriesSequence = [_item(ReferencedInstanceSequence=referenced,
                                         SeriesInstanceUID=series_uid)]
    ds.SourceImageSequence = [_item(ReferencedSOPClassUID=c, ReferencedSOPInstanceUID=u)
                              for u, c in instances.items()]


def regular_spacing(positions: list[tuple[float, float, float]],
                    orientation: tuple[float, ...]) -> float | None:
    """The step between planes (mm) when they form a regular stack along the normal."""
    if len(positions) < 2:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    points = np.asarray(positions, dtype=float)
    steps = np.diff(points, axis=0)
    step = float(np.dot(steps[0], normal))
    if abs(step) < SPACING_TOLERANCE_MM:
        return None
    expected = points[0] + np.outer(np.arange(len(points)), steps[0])
    if np.abs(points - expected).max() > SPACING_TOLERANCE_MM \
            or np.linalg.norm(steps[0] - step * normal) > SPACING_TOLERANCE_MM:
        return None
    return abs(step)


def _shared(orientation: tuple[float, ...], pixel_spacing: tuple[float, float],
            thickness: float | None, spacing: float | None) -> Any:
    measures = _item(SliceThickness=_ds(thickness or spacing or 1.0))
    if spacing is not None:
        measures.SpacingBetweenSlices = _ds(spacing)
    measures.PixelSpacing = [_ds(v) for v in pixel_spacing]
    return _item(PlaneOrientationSequence=[_item(
                     ImageOrientationPatient=[_ds(v) for v in orientation])],
                 PixelMeasuresSequence=[measures])


def _dimensions(ds: Any, labelmap: bool, regular: bool) -> None:
    from pydicom.tag import Tag
    from pydicom.uid import generate_uid

    uid = generate_uid()
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=uid)]
    position = _item(DimensionOrganizationUID=uid, DimensionIndexPointer=Tag(0x0020, 0x0032),
                     FunctionalGroupPointer=Tag(0x0020, 0x9113),
                     DimensionDescriptionLabel="Image Position Patient")
    segment = _item(DimensionOrganizationUID=uid, DimensionIndexPointer=Tag(0x0062, 0x000B),
                    FunctionalGroupPointer=Tag(0x0062, 0x000A),
                    DimensionDescriptionLabel="Referenced Segment Number")
    ds.DimensionIndexSequence = [position] if labelmap else [segment, position]
    if labelmap and regular:
        ds.DimensionOrganizationType = "3D"


def _image(ds: Any, shape: tuple[int, ...], n_frames: int, labelmap: bool,
           itemsize: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = n_frames
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    bits = 8 * itemsize if labelmap else 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    if labelmap:
        ds.PixelPaddingValue = 0
    ds.LossyImageCompression = "00"
    ds.SegmentationType = "LABELMAP" if labelmap else "BINARY"
    ds.PresentationLUTShape = "IDENTITY"


def _background() -> Any:
    background = _code("125040", "DCM", "Background")
    return _item(SegmentedPropertyCategoryCodeSequence=[background], SegmentNumber=0,
                 SegmentLabel="Background", SegmentAlgorithmType="MANUAL",
                 RecommendedDisplayCIELabValue=[0, 32896, 32896],
                 SegmentedPropertyTypeCodeSequence=[background])


def _segment(info: LabelInfo) -> Any:
    return _item(
        SegmentedPropertyCategoryCodeSequence=[
            _code(info.category.value, info.category.scheme, info.category.meaning)],
        SegmentNumber=info.segment, SegmentLabel=info.name[:64], SegmentAlgorithmType="MANUAL",
        RecommendedDisplayCIELabValue=cielab(info.color),
        SegmentedPropertyTypeCodeSequence=[
            _code(info.type.value, info.type.scheme, info.type.meaning)])


def _frames(stack: np.ndarray, sources: list[FrameSource], segments: list[LabelInfo],
            labelmap: bool) -> tuple[bytes, list[Any]]:
    """(Pixel Data, per-frame functional groups): empty frames left out; BINARY frames by
    segment, then position. The position index is the plane's (sources come in slice order)."""
    flat = stack.reshape(len(stack), -1)
    derivation = _derivation_templates()
    if labelmap:
        planes = np.flatnonzero(flat.any(axis=1))
        groups = [_per_frame(sources[p], [int(p) + 1], derivation) for p in planes]
        return np.ascontiguousarray(stack[planes]).tobytes(), groups
    groups, bits = [], []
    for info in segments:
        mask = flat == info.segment
        planes = np.flatnonzero(mask.any(axis=1))
        for plane in planes:
            item = _per_frame(sources[plane], [info.segment, int(plane) + 1], derivation)
            item.SegmentIdentificationSequence = [_item(ReferencedSegmentNumber=info.segment)]
            groups.append(item)
        if planes.size:
            bits.append(mask[planes])
    return _pack_bits(bits), groups


def _pack_bits(masks: list[np.ndarray]) -> bytes:
    """Frames of 0/1 pixels, one bit each, frame after frame without padding (the last byte
    padded, and the whole to an even length)."""
    if not masks:
        return b""
    frame = masks[0].shape[1]
    if frame % 8 == 0:  # each block packs to whole bytes: no need to join the masks first
        packed = b"".join([np.packbits(m, bitorder="little").tobytes() for m in masks])
    else:
        packed = np.packbits(np.concatenate([m.reshape(-1) for m in masks]),
                             bitorder="little").tobytes()
    return packed + b"\0" * (len(packed) % 2)


def _derivation_templates() -> dict[str, Any]:
    return {"purpose": [_code("121322", "DCM", "Source image for image processing operation")],
            "code": [_code("113076", "DCM", "Segmentation")]}


def _per_frame(source: FrameSource, index: list[int], templates: dict[str, Any]) -> Any:
    reference = _item(ReferencedSOPClassUID=source.sop_class_uid,
                      ReferencedSOPInstanceUID=source.sop_instance_uid)
    if source.frame_number:
        reference.ReferencedFrameNumber = source.frame_number
    reference.SpatialLocationsPreserved = "YES"
    reference.PurposeOfReferenceCodeSequence = templates["purpose"]
    return _item(
        DerivationImageSequence=[_item(SourceImageSequence=[reference],
                                       DerivationCodeSequence=templates["code"])],
        FrameContentSequence=[_item(DimensionIndexValues=index)],
        PlanePositionSequence=[_item(ImagePositionPatient=[_ds(v) for v in source.position])])
