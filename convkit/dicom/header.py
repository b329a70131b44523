"""One DICOM file -> its SliceHeaders (one per 2D image), read without pixel data.

The fast tag walker (fastheader) reads most files; pydicom reads what it declines.
A file that gives no image says why in a FileRecord, so that every input file is
accounted for exactly once (FileStatus).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from convkit.dicom import values
from convkit.dicom.diffusion import DERIVED_DIFFUSION_TYPES, diffusion_header_fields
from convkit.dicom.fastheader import FastDataset, read_fast
from convkit.dicom.mosaic import is_mosaic, mosaic_layout
from convkit.dicom.multiframe import frame_headers
from convkit.dicom.vendors import is_philips, philips_scale_slope
from convkit.errors import ConvkitError, exception_reason

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Transfer syntaxes whose pixel data are stored uncompressed (size is checkable from the header).
NATIVE_SYNTAXES = {
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
}
#: ImageType values that mark the complex component of an MR image, and their file suffixes.
COMPLEX_COMPONENTS = {"M": "", "MAGNITUDE": "", "P": "_ph", "PHASE": "_ph",
                      "R": "_real", "REAL": "_real", "I": "_imag", "IMAGINARY": "_imag"}



@dataclass(slots=True)
class SliceHeader:
    """What discovery needs from one DICOM file (read without pixel data)."""

    path: Path
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    series_number: int | None
    series_description: str
    modality: str
    manufacturer: str
    sop_class_uid: str
    transfer_syntax: str
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    number_of_frames: int
    image_type: tuple[str, ...]
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    spacing_between_slices: float | None
    instance_number: int | None
    acquisition_number: int | None
    acquisition_time: float | None
    content_time: float | None
    trigger_time: float | None
    temporal_position: int | None
    echo_number: int | None
    echo_time: float | None
    rescale_slope: float
    rescale_intercept: float
    gantry_tilt: float | None
    frame: int = -1  # index of the 2D image in the file: a frame or a mosaic tile; -1 if single
    stack_id: str = ""  # enhanced multi-frame StackID
    philips_scale_slope: float | None = None  # private (2005,100E): 'precise' values
    mosaic: Any = None  # MosaicLayout shared by the tiles of one Siemens mosaic file
    diffusion: Any = None  # diffusion.Diffusion: b-value and LPS gradient direction
    problem: str = ""  # why this image cannot be converted faithfully (refused with its series)
    slice_time: float | None = None  # seconds from the start of the volume (mosaic CSA header)
    file_size: int | None = None  # bytes on disk, as read (reports need not stat the file again)

    def real_scaling(self, philips_precise: bool = False) -> tuple[float, float]:
        """(slope, intercept) to real-world values; Philips 'precise' values when asked.

        Philips stores DV = PV * RescaleSlope + RescaleIntercept (display values) and
        a private scale slope SS with FP = DV / (RescaleSlope * SS) (precise values).
        """
        slope, intercept = self.rescale_slope, self.rescale_intercept
        if philips_precise and self.philips_scale_slope:
            divisor = slope * self.philips_scale_slope
            return slope / divisor, intercept / divisor
        return slope, intercept

    @property
    def nominal_spacing(self) -> float:
        """Slice spacing from the header, for a single slice where positions cannot tell."""
        return abs(self.spacing_between_slices or 0) or abs(self.slice_thickness or 0) or 1.0

    @property
    def instance_order(self) -> tuple[int, int]:
        """InstanceNumber, then frame: the acquisition order when nothing better is known."""
        return (self.instance_number or 0, self.frame)

    @property
    def complex_suffix(self) -> str:
        """'' for magnitude (or unknown), '_ph', '_real', '_imag' for the other components."""
        for value in self.image_type[2:]:
            for token in value.upper().replace("-", "_").split("_"):
                if token in COMPLEX_COMPONENTS and token not in ("M", "MAGNITUDE"):
                    return COMPLEX_COMPONENTS[token]
        return ""

    @property
    def derived_suffix(self) -> str:
        """'_ADC', '_TRACEW', '_trace' ... for derived diffusion images: outputs of their own."""
        for value in self.image_type:
            if value in DERIVED_DIFFUSION_TYPES:
                return f"_{value}"
        if self.diffusion is not None and self.diffusion.is_isotropic:
            return "_trace"
        return ""

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_mosaic(self) -> bool:
        return "MOSAIC" in self.image_type

    @property
    def expected_pixel_bytes(self) -> int:
        """Bytes of uncompressed pixel data in the whole file (all frames, all tiles)."""
        rows, columns = self.rows, self.columns
        if self.mosaic is not None:
            rows = self.mosaic.tile_rows * self.mosaic.tiles_per_row
            columns = self.mosaic.tile_cols * self.mosaic.tiles_per_row
        return (rows * columns * self.samples_per_pixel * self.number_of_frames
                * ((self.bits_allocated + 7) // 8))



class FileStatus(StrEnum):
    """The fate of one input file (a str: JSON and CSV show the value)."""

    USED = "used"
    DUPLICATE = "duplicate"
    NOT_DICOM = "not-dicom"
    DICOMDIR = "dicomdir"
    UNREADABLE = "unreadable"
    SKIPPED = "skipped"
    REFUSED = "refused"


@dataclass
class FileRecord:
    """The fate of one input file."""

    path: Path
    status: FileStatus
    reason: str = ""
    series: str = ""  # label of the series it belongs to
    series_uid: str = ""  # known for unreadable files whose header could be read
    size: int | None = None  # bytes on disk when the scan read the file

#: Why a pipe, socket or device file in the tree is never opened (reading could block).
SPECIAL_FILE = "not a regular file (a pipe, socket or device): not opened"


def is_regular_file(path: Path) -> bool:
    """False for pipes, sockets and devices; True for files and for what cannot be
    stat-ed (a broken link is reported as unreadable later)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def looks_like_dicom(path: Path) -> bool:
    """DICOM Part 10 ('DICM' at byte 128), or a raw dataset starting with a group 0002/0008 tag."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] < b"\x20\x00"


def read_header(path: Path) -> list[SliceHeader] | FileRecord:
    """The SliceHeaders of a DICOM file (one per frame), or a FileRecord saying why there are none.

    A single-frame file gives one header; an enhanced multi-frame file one per frame.
    Most files, vendor private elements included, are read by the fast tag walker; what
    it does not cover (enhanced multi-frame files, diffusion attributes inside sequences,
    big endian, deflate, files without a preamble) by pydicom.
    """
    fast = read_fast(path)  # None for anything but a usual Part 10 file
    if fast is None and not is_regular_file(path):
        return FileRecord(path, FileStatus.NOT_DICOM, SPECIAL_FILE)
    if fast is None and not looks_like_dicom(path):
        return FileRecord(path, FileStatus.NOT_DICOM)
    try:
        ds = _read_dataset(path, fast)
        meta = getattr(ds, "file_meta", None)
        sop_class = str(ds.get("SOPClassUID", "")
                        or (meta or {}).get("MediaStorageSOPClassUID", ""))
        if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            return FileRecord(path, FileStatus.DICOMDIR)
        if "Rows" not in ds or "Columns" not in ds:
            return FileRecord(path, FileStatus.SKIPPED, f"no image ({_sop_class_name(sop_class)})")
        header = _header_from_dataset(path, ds, sop_class)
        headers = _expand(ds, header)
    except ConvkitError as exc:
        return FileRecord(path, FileStatus.UNREADABLE, exc.message)
    except Exception as exc:  # pydicom is imported only for the fallback: match by kind
        if not _is_read_error(exc):
            raise
        return FileRecord(path, FileStatus.UNREADABLE, f"header: {exception_reason(exc)}")
    size = getattr(ds, "file_size", None) or path.stat().st_size
    problem = _check_pixel_size(header, size, getattr(ds, "pixel_data_end", None))
    if problem:
        return FileRecord(path, FileStatus.UNREADABLE, problem,
                          series_uid=header.series_instance_uid, size=size)
    for item in headers:
        item.file_size = size
    return headers


def _is_read_error(exc: Exception) -> bool:
    """Errors that mean "this file's header cannot be read" (pydicom's InvalidDicomError too)."""
    return isinstance(exc, (OSError, ValueError, TypeError, AttributeError, KeyError,
                            IndexError, EOFError)) or type(exc).__name__ == "InvalidDicomError"


def _read_dataset(path: Path, fast: FastDataset | None) -> Any:
    """The fast tag walker's view of the file when it suffices, else pydicom's."""
    if fast is not None and _fast_path_suffices(fast):
        return fast
    import pydicom  # only here: header workers that never fall back never import it

    return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def _fast_path_suffices(ds: FastDataset) -> bool:
    """Multi-frame files (functional groups) and images whose diffusion attributes sit in
    sequences need the full dataset; everything else, vendor private elements included,
    is in the fast view."""
    return (not ds.sequences and (values.to_int(ds.get("NumberOfFrames")) or 1) == 1
            and "SOPInstanceUID" in ds and "SeriesInstanceUID" in ds)


def _expand(ds: Any, header: SliceHeader) -> list[SliceHeader]:
    """One header per 2D image: frames of an enhanced file, tiles of a mosaic, or the file.

    An enhanced file of one frame is expanded too: its geometry is only in the
    functional groups.
    """
    if header.number_of_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds \
            or "SharedFunctionalGroupsSequence" in ds:
        return frame_headers(ds, header)
    if header.is_mosaic and is_mosaic(ds):
        return mosaic_headers(ds, header)
    return [header]


def mosaic_headers(ds: Any, header: SliceHeader) -> list[SliceHeader]:
    """A header per tile of a Siemens mosaic, at the tile's own position (LPS)."""
    layout = mosaic_layout(ds)
    times = layout.slice_times_s
    return [dataclasses.replace(
        header, frame=tile, rows=layout.tile_rows, columns=layout.tile_cols,
        position=_xyz(layout.positions[tile]), mosaic=layout,
        slice_time=None if times is None else float(times[tile]),
        slice_thickness=header.slice_thickness or layout.spacing)
        for tile in range(layout.n_slices)]


def _xyz(point: Any) -> tuple[float, float, float]:
    """A 3-vector as three Python floats."""
    x, y, z = (float(v) for v in point)
    return x, y, z


def _header_from_dataset(path: Path, ds: Any, sop_class: str) -> SliceHeader:
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta else ""
    if not syntax:
        syntax = "1.2.840.10008.1.2"
    if "SeriesInstanceUID" not in ds or "SOPInstanceUID" not in ds:
        raise ValueError("missing SeriesInstanceUID or SOPInstanceUID")
    return SliceHeader(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_number=values.to_int(ds.get("SeriesNumber")),
        series_description=str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        sop_class_uid=sop_class,
        transfer_syntax=syntax,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        bits_allocated=int(ds.get("BitsAllocated", 16) or 16),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        number_of_frames=values.to_int(ds.get("NumberOfFrames")) or 1,
        image_type=tuple(str(v).upper() for v in values.multi(ds.get("ImageType"))),
        orientation=values.floats(ds.get("ImageOrientationPatient"), 6),
        position=values.floats(ds.get("ImagePositionPatient"), 3),
        pixel_spacing=values.floats(ds.get("PixelSpacing"), 2),
        slice_thickness=values.to_float(ds.get("SliceThickness")),
        spacing_between_slices=values.to_float(ds.get("SpacingBetweenSlices")),
        instance_number=values.to_int(ds.get("InstanceNumber")),
        acquisition_number=values.to_int(ds.get("AcquisitionNumber")),
        acquisition_time=values.time_seconds(ds.get("AcquisitionTime")),
        content_time=values.time_seconds(ds.get("ContentTime")),
        trigger_time=values.to_float(ds.get("TriggerTime")),
        temporal_position=values.to_int(ds.get("TemporalPositionIdentifier")),
        echo_number=values.to_int(values.first(ds.get("EchoNumbers"))),
        echo_time=values.to_float(ds.get("EchoTime")),
        rescale_slope=values.to_float(ds.get("RescaleSlope")) or 1.0,
        rescale_intercept=values.to_float(ds.get("RescaleIntercept")) or 0.0,
        gantry_tilt=values.to_float(ds.get("GantryDetectorTilt")),
        philips_scale_slope=(philips_scale_slope(ds)
                             if is_philips(str(ds.get("Manufacturer", ""))) else None),
        **diffusion_header_fields(ds),
    )


def _check_pixel_size(header: SliceHeader, file_size: int, pixel_end: int | None = None) -> str:
    """A reason when a file is too short to hold its pixel data.

    pixel_end (known from the fast path) is where the pixel data element must end;
    otherwise native data are checked against the file size, which catches all but
    the smallest truncations (decoding checks the rest).
    """
    if pixel_end is not None and file_size < pixel_end:
        return (f"truncated pixel data: the file has {file_size} bytes, the pixel data end "
                f"at byte {pixel_end}")
    if header.transfer_syntax not in NATIVE_SYNTAXES or header.transfer_syntax.endswith(".99"):
        return ""
    expected = header.expected_pixel_bytes
    if file_size < expected:
        return f"truncated pixel data: the file has {file_size} bytes, the pixels need {expected}"
    return ""


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else "unknown SOP class"
