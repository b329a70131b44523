"""A DICOM Segmentation object built directly with pydicom (no highdicom on the write path).

The module structure follows what highdicom 0.28 writes for the same input (compared element
by element on small cases; highdicom stays the reader and oracle in the tests): patient and
study attributes copied from the source, a SEG series, the Segmentation Image module, one
Segment Sequence item per label (LABELMAP: plus segment 0, the background), shared functional
groups (orientation, pixel measures) and per-frame groups (the source image each frame derives
from, its position, its dimension index and, BINARY, its segment: encoded directly, see
below). Pixel Data is written from numpy arrays after the dataset: LABELMAP as 8/16-bit
labels, BINARY as bits (np.packbits, little-endian bit order, 16 frames at a time).
"""

from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass
from pathlib import Path
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
                       ) -> SegObject:
    """The Segmentation object of frames_pixels (frames, rows, columns: labels, 0 background)
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
    pixels, per_frame, n_frames = _frames(frames_pixels, sources, segments, labelmap)
    raw = raw_sequence(0x52009230, per_frame)
    _dimensions(ds, labelmap, spacing is not None)
    _image(ds, frames_pixels.shape[1:], n_frames, labelmap, frames_pixels.dtype.itemsize)
    ds.SegmentSequence = ([_background()] if labelmap else []) + \
        [_segment(info) for info in segments]
    ds.SegmentsOverlap = "NO"
    ds._dict[raw.tag] = raw  # noqa: SLF001  (a raw element is written as its bytes)
    # explicit VR little endian in its own character set, as if read so: pydicom then writes
    # the raw per-frame groups as they are (else it parses every item to check its VRs)
    ds.set_original_encoding(False, True, ds._character_set)  # noqa: SLF001
    vr = "OW" if labelmap and frames_pixels.dtype.itemsize == 2 else "OB"
    return SegObject(ds, pixels, vr)


@dataclass
class SegObject:
    """A Segmentation dataset and its Pixel Data, kept apart: the frames (tens of MB) are
    written from their arrays after the dataset, not copied into it."""

    dataset: Any  # pydicom Dataset without Pixel Data
    pixels: list[Any]  # C-contiguous arrays or bytes, written one after another
    vr: str  # OB or OW

    def save(self, path: Path) -> None:
        """The file: the dataset (pydicom), then Pixel Data, the last element (7FE0,0010)."""
        length = sum(memoryview(part).nbytes for part in self.pixels)
        self.dataset.save_as(path, enforce_file_format=True)
        with open(path, "ab") as stream:
            stream.write(_element_header(0x7FE0, 0x0010, self.vr, length + length % 2))
            for part in self.pixels:
                stream.write(memoryview(part).cast("B"))
            stream.write(b"\0" * (length % 2))


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
        ds.add_new(0x00280120, "US", 0)  # Pixel Padding Value (US or SS: unsigned here)
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
            labelmap: bool) -> tuple[list[Any], bytes, int]:
    """(Pixel Data in parts, the encoded Per-Frame Functional Groups Sequence's value,
    frames): empty frames left out; BINARY frames by segment, then position. The position
    index is the plane's (sources come in slice order)."""
    flat = stack.reshape(len(stack), -1)
    references = [_source_reference(s) for s in sources]
    positions = [_element(0x0020, 0x0032, "DS", "\\".join(_ds(v) for v in s.position))
                 for s in sources]
    items: list[bytes] = []
    if labelmap:
        planes = np.flatnonzero(flat.any(axis=1))
        items += [_frame_group(references[p], [int(p) + 1], positions[p], None) for p in planes]
        frames = stack if planes.size == len(stack) else stack[planes]  # no copy when all
        little = np.ascontiguousarray(frames, dtype=frames.dtype.newbyteorder("<"))
        return [little], _sequence(0, 0, items), len(items)
    whole_bytes = flat.shape[1] % 8 == 0  # a frame packs to whole bytes: pack each segment now
    parts: list[Any] = []
    for info in segments:
        if whole_bytes:
            planes, packed = _segment_bits(flat, info.segment)
            parts += packed
        else:
            mask = flat == info.segment
            planes = np.flatnonzero(mask.any(axis=1))
            parts.append(mask[planes])
        items += [_frame_group(references[p], [info.segment, int(p) + 1], positions[p],
                               info.segment) for p in planes]
    if not whole_bytes:
        parts = [_pack_bits(np.concatenate(parts))]
    return parts, _sequence(0, 0, items), len(items)


#: Frames compared and packed at a time (a few MB: the buffers stay warm, no page faults).
FRAMES_PER_BLOCK = 16


def _segment_bits(flat: np.ndarray, segment: int) -> tuple[np.ndarray, list[bytes]]:
    """(planes holding the segment, their packed bits in blocks) of frames of whole bytes:
    each block of frames is compared into one reused buffer and packed, and the empty frames
    are found in the 8x smaller bits."""
    buffer = np.empty((min(FRAMES_PER_BLOCK, len(flat)), flat.shape[1]), dtype=bool)
    planes, packed = [], []
    for start in range(0, len(flat), FRAMES_PER_BLOCK):
        block = flat[start:start + FRAMES_PER_BLOCK]
        mask = np.equal(block, segment, out=buffer[: len(block)])
        bits = np.packbits(mask, axis=1, bitorder="little")
        present = np.flatnonzero(bits.any(axis=1))
        if present.size:
            planes.append(present + start)
            packed.append(bits[present].tobytes())
    return (np.concatenate(planes) if planes else np.zeros(0, np.int64)), packed


def _pack_bits(frames: np.ndarray) -> bytes:
    """0/1 pixels, one bit each (the first pixel in the lowest bit), frame after frame
    without padding; the last byte padded with zero bits."""
    return np.packbits(frames, bitorder="little").tobytes()


# ------------------------------------------------------------------------------------------
# The per-frame functional groups, encoded directly (Explicit VR Little Endian, defined
# lengths): one item per frame, thousands of them, which pydicom's Dataset would build and
# write element by element (tests read them back with pydicom and compare with highdicom).

#: VRs with a 4-byte length (and two reserved bytes) in explicit VR.
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def _element(group: int, element: int, vr: str, value: str | bytes) -> bytes:
    data = value if isinstance(value, bytes) else value.encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return _element_header(group, element, vr, len(data)) + data


def _element_header(group: int, element: int, vr: str, length: int) -> bytes:
    if vr in LONG_VRS:
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, length)
    return struct.pack("<HH2sH", group, element, vr.encode(), length)


def _sequence(group: int, element: int, items: list[bytes]) -> bytes:
    """A sequence of defined length; the value of a raw SQ element when group is 0."""
    body = b"".join([struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item for item in items])
    return _element(group, element, "SQ", body) if group else body


def _code_bytes(value: str, scheme: str, meaning: str) -> bytes:
    return (_element(0x0008, 0x0100, "SH", value) + _element(0x0008, 0x0102, "SH", scheme)
            + _element(0x0008, 0x0104, "LO", meaning))


def _source_reference(source: FrameSource) -> bytes:
    """Derivation Image Sequence of a frame: the source image (and frame) it lies on."""
    reference = (_element(0x0008, 0x1150, "UI", source.sop_class_uid)
                 + _element(0x0008, 0x1155, "UI", source.sop_instance_uid))
    if source.frame_number:
        reference += _element(0x0008, 0x1160, "IS", str(source.frame_number))
    reference += (_element(0x0028, 0x135A, "CS", "YES") + _sequence(0x0040, 0xA170, [
        _code_bytes("121322", "DCM", "Source image for image processing operation")]))
    derivation = (_sequence(0x0008, 0x2112, [reference])
                  + _sequence(0x0008, 0x9215, [_code_bytes("113076", "DCM", "Segmentation")]))
    return _sequence(0x0008, 0x9124, [derivation])


def _frame_group(reference: bytes, index: list[int], position: bytes,
                 segment: int | None) -> bytes:
    values = struct.pack(f"<{len(index)}I", *index)
    group = (reference + _sequence(0x0020, 0x9111, [_element(0x0020, 0x9157, "UL", values)])
             + _sequence(0x0020, 0x9113, [position]))
    if segment is not None:
        group += _sequence(0x0062, 0x000A, [_element(0x0062, 0x000B, "US",
                                                     struct.pack("<H", segment))])
    return group


def raw_sequence(keyword_tag: int, value: bytes) -> Any:
    """A raw (already encoded) SQ element for a Dataset: written as it is."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    return RawDataElement(Tag(keyword_tag), "SQ", len(value), value, 0, False, True)
