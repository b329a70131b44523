"""One DICOM file -> its SliceHeaders (one per 2D image), read without pixel data.

The fast tag walker (fastheader) reads most files; pydicom reads what it declines.
A file that gives no image says why in a FileRecord, so that every input file is
accounted for exactly once (FileStatus).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from convkit import geometry
from convkit.dicom import values
from convkit.dicom.dataset import (
    is_read_error,
    read_dataset,
    read_reason,
    truncation,
    warnings_caught,
)
from convkit.dicom.diffusion import DERIVED_DIFFUSION_TYPES, diffusion_header_fields
from convkit.dicom.fastheader import FastDataset, Fragments, has_eoi, read_fast, series_uid_of
from convkit.dicom.mosaic import mosaic_layout, mosaic_problem
from convkit.dicom.multiframe import frame_headers
from convkit.dicom.vendors import (
    ge_sequence_fields,
    is_ge,
    is_philips,
    philips_scale_slope,
    uih_grid_images,
)
from convkit.errors import ConvkitError, InputError
from convkit.seg.sopclass import segmentation_kind
from convkit.volume import format_gib, max_volume_bytes

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
#: ImageType values (third on) of B0 field maps (Philips B0, enhanced FIELD_MAP).
FIELD_MAP_TYPES = frozenset({"B0", "B0_MAP", "B0MAP", "FIELD_MAP", "FIELDMAP"})
#: The file suffix of a B0 field map in Hz (as dcm2niix names it); its sidecar says Units: Hz.
FIELD_MAP_SUFFIX = "_fieldmaphz"
#: Encapsulated syntaxes whose every frame ends with an end-of-image marker (FF D9): JPEG
#: (baseline, extended, lossless), JPEG-LS, JPEG 2000 and HTJ2K. A frame without one was cut.
EOI_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"})
RLE_SYNTAX = "1.2.840.10008.1.2.5"
#: RLE codes a run of at most 128 equal bytes in two: no frame is smaller than 1/64 of itself.
RLE_MAX_RATIO = 64
#: More frames than this in one file is a corrupt NumberOfFrames (each frame becomes a
#: SliceHeader before anything else is checked).
MAX_FRAMES = 100_000
#: Positions and lengths (mm) beyond this are corrupt (1 km): larger ones would overflow the
#: geometry's arithmetic long before they meant anything.
MAX_COORDINATE_MM = 1e6
#: RescaleSlope and RescaleIntercept must be float32 numbers: every output stores them (or
#: the values they give) as float32.
FLOAT32_MAX = 3.4028234663852886e38


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
    notes: tuple[str, ...] = ()  # what reading the file met and fixed (plan -> Volume.notes)
    overlays: tuple[int, ...] = ()  # groups (0x6000, 0x6002 ...) holding overlay data (60xx,3000)
    complex_component: str = ""  # enhanced frames: ComplexImageComponent (MAGNITUDE, PHASE ...)
    pulse_sequence: str = ""  # GE pulse sequence name, lower case ('b0map', 'epi_pepolar')
    ge_locations: int | None = None  # GE locations in acquisition (0021,104F)
    ge_user_data12: float | None = None  # GE user data 12 (0019,10B3): pepolar volume order
    #: file offset of native pixel data holding exactly expected_pixel_bytes (None: unknown,
    #: encapsulated, or of another length): pixels.py reads them without pydicom
    pixel_offset: int | None = None
    reversed_phase: bool = False  # acquired with the reversed phase-encoding polarity (group.py)
    ge_phase_direction: str = ""  # GE InPlanePhaseEncodingDirection (ROW, COL)

    def real_scaling(self, philips_precise: bool | None = None) -> tuple[float, float]:
        """(slope, intercept) to real-world values; Philips 'precise' values when
        uses_precise(philips_precise).

        Philips stores DV = PV * RescaleSlope + RescaleIntercept (display values) and
        a private scale slope SS with FP = DV / (RescaleSlope * SS) (precise values).
        """
        slope, intercept = self.rescale_slope, self.rescale_intercept
        if self.philips_scale_slope and self.uses_precise(philips_precise):
            divisor = slope * self.philips_scale_slope
            return slope / divisor, intercept / divisor
        return slope, intercept

    @property
    def physical_kind(self) -> str:
        """'phase' or 'field map' for images whose values are a physical quantity (radians,
        Hz), '' for the others (magnitude, real, imaginary, maps of no unit)."""
        if self.complex_suffix == "_ph":
            return "phase"
        if self.is_field_map:
            return "field map"
        return ""

    def uses_precise(self, philips_precise: bool | None = None) -> bool:
        """Whether Philips precise values are written: as asked (True or False), else (None)
        per image kind: precise for phase and field maps (radians, Hz), display values
        (what the scanner's viewer shows) for the others."""
        if not self.philips_scale_slope:
            return False
        return bool(self.physical_kind) if philips_precise is None else philips_precise

    @property
    def nominal_spacing(self) -> float:
        """Slice spacing from the header, for a single slice where positions cannot tell."""
        return abs(self.spacing_between_slices or 0) or abs(self.slice_thickness or 0) or 1.0

    @property
    def instance_order(self) -> tuple[int, int]:
        """InstanceNumber, then frame: the acquisition order when nothing better is known."""
        return (self.instance_number or 0, self.frame)

    @property
    def is_field_map(self) -> bool:
        """A B0 field map (in Hz): FrameType/ImageType FIELD_MAP, or 'B0 MAP' / B0 (Philips)."""
        return any(value.replace(" ", "_") in FIELD_MAP_TYPES or ("B0" in value and "MAP" in value)
                   for value in self.image_type[2:])

    @property
    def complex_suffix(self) -> str:
        """'' for magnitude (or unknown), '_ph', '_real', '_imag' for the other components,
        '_fieldmaphz' for a B0 field map (whatever component it is stored as)."""
        if self.is_field_map:
            return FIELD_MAP_SUFFIX
        if self.complex_component in COMPLEX_COMPONENTS:
            return COMPLEX_COMPONENTS[self.complex_component]
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
    CONFLICT = "conflict"  # shares its SOPInstanceUID with a file that differs (scan.py)


@dataclass
class FileRecord:
    """The fate of one input file."""

    path: Path
    status: FileStatus
    reason: str = ""
    series: str = ""  # label of the series it belongs to
    series_uid: str = ""  # known for unreadable files whose header could be read
    size: int | None = None  # bytes on disk when the scan read the file
    segmentation: str = ""  # 'SEG' or 'RTSTRUCT' (convkit.seg.sopclass): not an image

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
    big endian, deflate, files without a preamble) by pydicom, whose warnings become the
    headers' notes (or the reason a truncated file is unreadable), never stderr.

    Nothing is expanded before the sizes are checked: a file claiming more frames than
    its pixel data can hold is unreadable at once. A value that is not finite, a
    non-positive size or spacing, an absurd coordinate make the file unreadable (the
    reason names the attribute); a degenerate ImageOrientationPatient makes its images
    refused with their series (SliceHeader.problem).
    """
    fast = read_fast(path)  # None for anything but a usual Part 10 file
    if fast is None and not is_regular_file(path):
        return FileRecord(path, FileStatus.NOT_DICOM, SPECIAL_FILE)
    if fast is None and not looks_like_dicom(path):
        return FileRecord(path, FileStatus.NOT_DICOM)
    if fast is not None and fast.problem:  # walked, but pydicom could not read it
        return FileRecord(path, FileStatus.UNREADABLE, fast.problem, size=fast.file_size,
                          series_uid=str(fast.get("SeriesInstanceUID", "") or ""))
    if fast is not None and _fast_path_suffices(fast):
        return _read_header(path, fast, fast)
    with warnings_caught() as caught:
        outcome = _read_header(path, None, fast)
    cut = truncation(caught)
    if cut and isinstance(outcome, list):  # what was read may not be what the file holds
        return FileRecord(path, FileStatus.UNREADABLE, f"truncated: {cut}",
                          series_uid=outcome[0].series_instance_uid, size=outcome[0].file_size)
    if cut and isinstance(outcome, FileRecord) and outcome.status == FileStatus.SKIPPED:
        # "no image": Rows may lie past the cut
        return dataclasses.replace(outcome, status=FileStatus.UNREADABLE,
                                   reason=f"truncated: {cut}")
    if caught and isinstance(outcome, list):
        notes = tuple(f"pydicom: {text}" for text in caught)
        outcome = [dataclasses.replace(header, notes=header.notes + notes) for header in outcome]
    return outcome


def _read_header(path: Path, ds: Any, fast: FastDataset | None,
                 ) -> list[SliceHeader] | FileRecord:
    """read_header of a dataset (the fast view, or None: pydicom reads the file)."""
    size: int | None = None
    try:
        if ds is None:
            ds = read_dataset(path)
        meta = getattr(ds, "file_meta", None)
        sop_class = str(ds.get("SOPClassUID", "")
                        or (meta or {}).get("MediaStorageSOPClassUID", ""))
        if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            return FileRecord(path, FileStatus.DICOMDIR)
        kind = segmentation_kind(sop_class)
        if kind:  # a segmentation of another series: dicom2nii converts it as a label map
            return FileRecord(path, FileStatus.SKIPPED, f"{kind}: segmentation of another "
                              "series", series_uid=_series_uid(ds, path), segmentation=kind)
        if "Rows" not in ds or "Columns" not in ds:
            return FileRecord(path, FileStatus.SKIPPED, f"no image ({_sop_class_name(sop_class)})",
                              series_uid=_series_uid(ds, path))
        size = fast.file_size if fast is not None and fast.file_size else path.stat().st_size
        no_pixels = _without_pixel_data(path, ds, sop_class, fast, size)
        if no_pixels is not None:
            return no_pixels
        header = _header_from_dataset(path, ds, sop_class)
        problem = _check_pixel_data(header, size, fast)
        if problem:  # before expanding: a corrupt NumberOfFrames must not become headers
            return FileRecord(path, FileStatus.UNREADABLE, problem,
                              series_uid=header.series_instance_uid, size=size)
        headers = [checked_header(item) for item in _expand(ds, header)]
        screenshot = not_patient_space(headers, ds)
        if screenshot:
            return FileRecord(path, FileStatus.SKIPPED, screenshot,
                              series_uid=header.series_instance_uid, size=size)
    except ConvkitError as exc:
        return FileRecord(path, FileStatus.UNREADABLE, exc.message,
                          series_uid=_series_uid(ds, path), size=size)
    except Exception as exc:  # pydicom is imported only for the fallback: match by kind
        if not is_read_error(exc):
            raise
        return FileRecord(path, FileStatus.UNREADABLE, f"header: {read_reason(exc)}",
                          series_uid=_series_uid(ds, path), size=size)
    offset = _native_pixel_offset(headers[0], fast) if headers else None
    for item in headers:
        item.file_size = size
        item.pixel_offset = offset
    return headers


def _native_pixel_offset(header: SliceHeader, fast: FastDataset | None) -> int | None:
    """Where the fast walker found native pixel data of exactly the size the header implies."""
    if fast is None or fast.pixel_data_start is None or fast.pixel_data_end is None \
            or header.transfer_syntax not in NATIVE_SYNTAXES:
        return None
    length = fast.pixel_data_end - fast.pixel_data_start
    return fast.pixel_data_start if length == header.expected_pixel_bytes else None


#: The reason of a skipped screenshot, report page or other image without patient geometry
#: starts with this (the audit reports them on their own: they may show identifiers).
NOT_PATIENT_IMAGE = "not a patient-space image"
#: Secondary Capture Image Storage; its multi-frame variants are this UID + '.n'.
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _without_pixel_data(path: Path, ds: Any, sop_class: str, fast: FastDataset | None,
                        size: int) -> FileRecord | None:
    """The record of a file with Rows and Columns but no PixelData (None when it has some,
    or when that is not known): skipped as no image when its SOP class is no image
    storage class (a vendor's private object, such as Philips' private MR series data; MR
    spectroscopy), unreadable when it is (a copy cut before its pixels). Only the tag
    walker knows that PixelData is absent (pydicom stops before it); other files are
    read as images, as before."""
    if fast is None or fast.pixel_data_end is not None:
        return None
    name = _sop_class_name(sop_class)
    series_uid = _series_uid(ds, path)
    if "Image Storage" in name:
        return FileRecord(path, FileStatus.UNREADABLE, f"truncated pixel data: a {name} file "
                          "without PixelData", series_uid=series_uid, size=size)
    kind = "SOP class" if sop_class.startswith("1.2.840.10008.") else "a private SOP class"
    return FileRecord(path, FileStatus.SKIPPED, f"not an image: {kind} {name} with "
                      "Rows/Columns but no PixelData", series_uid=series_uid, size=size)


def not_patient_space(headers: list[SliceHeader], ds: Any) -> str:
    """Why the images of a file are not in patient space ('' when they may be): no
    ImagePositionPatient or ImageOrientationPatient in any, and ImageType DERIVED\\SECONDARY
    or a colour Secondary Capture: a screenshot, a dose or patient-information page. A grey
    Secondary Capture of a primary image (a whole-body NM) stays an image, refused without
    geometry as before. The reason says whether the file declares burned-in text
    (BurnedInAnnotation)."""
    if any(h.position is not None or h.orientation is not None for h in headers):
        return ""
    first = headers[0]
    capture = first.sop_class_uid == SECONDARY_CAPTURE or \
        first.sop_class_uid.startswith(SECONDARY_CAPTURE + ".")
    secondary = first.image_type[:2] == ("DERIVED", "SECONDARY")
    if not (secondary or (capture and first.samples_per_pixel == 3)):
        return ""  # an image that lost its geometry: refused with its series (no-geometry)
    what = "ImageType DERIVED\\SECONDARY" if secondary else "colour Secondary Capture"
    burned = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        identifiers = "BurnedInAnnotation YES: it carries burned-in identifying text"
    elif burned == "NO":
        identifiers = "BurnedInAnnotation NO"
    else:
        identifiers = "it may carry burned-in identifying text (no BurnedInAnnotation)"
    return (f"{NOT_PATIENT_IMAGE} ({what} without ImagePositionPatient/"
            f"ImageOrientationPatient: a screenshot or report page); {identifiers}")


def _series_uid(ds: Any, path: Path | None = None) -> str:
    """The SeriesInstanceUID of a file that is not used (for its FileRecord: its series is
    then known to be incomplete): from its dataset, or, when pydicom could not open it,
    from the tag walker; '' when neither finds one."""
    if ds is None:
        return series_uid_of(path) if path is not None else ""
    try:
        return str(ds.get("SeriesInstanceUID", "") or "")
    except Exception as exc:  # a damaged value raises when it is converted
        if not is_read_error(exc):
            raise
        return ""


def _fast_path_suffices(ds: FastDataset) -> bool:
    """Multi-frame files (functional groups) and images whose diffusion attributes sit in
    sequences need the full dataset; everything else, vendor private elements included,
    is in the fast view."""
    try:
        frames = values.to_int(ds.get("NumberOfFrames"), "NumberOfFrames")
    except values.BadValueError:
        return True  # the fast view says why the file is unreadable as well as pydicom
    return (not ds.sequences and (frames or 1) == 1
            and "SOPInstanceUID" in ds and "SeriesInstanceUID" in ds)


def _expand(ds: Any, header: SliceHeader) -> list[SliceHeader]:
    """One header per 2D image: frames of an enhanced file, tiles of a mosaic, or the file.

    An enhanced file of one frame is expanded too: its geometry is only in the
    functional groups.
    """
    if header.number_of_frames > 1 or "PerFrameFunctionalGroupsSequence" in ds \
            or "SharedFunctionalGroupsSequence" in ds:
        return frame_headers(ds, header)
    grid = uih_grid_images(ds)
    if grid > 1:
        return [dataclasses.replace(header, problem=(
            f"unsupported UIH grid: {grid} images tiled in one (UIH NumberOfImagesInGrid "
            "(0065,1050)); convkit does not un-tile UIH grids yet"))]
    if header.is_mosaic and not orientation_problem(header.orientation):
        missing = mosaic_problem(ds)
        if missing:  # refused with its series, saying what the anonymiser removed
            return [dataclasses.replace(header, problem=missing)]
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

    # pydicom converts values when they are read (an IS of 'inf' raises there); the fast
    # view holds them converted already
    get = ds.get if isinstance(ds, FastDataset) else functools.partial(values.element, ds)

    def integer(keyword: str) -> int | None:
        return values.to_int(get(keyword), keyword)

    def number(keyword: str) -> float | None:
        return values.to_float(get(keyword), keyword)

    return SliceHeader(
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_number=integer("SeriesNumber"),
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
        number_of_frames=integer("NumberOfFrames") or 1,
        image_type=tuple(str(v).upper() for v in values.multi(ds.get("ImageType"))),
        orientation=values.floats(ds.get("ImageOrientationPatient"), 6,
                                  "ImageOrientationPatient"),
        position=values.floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient"),
        pixel_spacing=values.floats(ds.get("PixelSpacing"), 2, "PixelSpacing"),
        slice_thickness=number("SliceThickness"),
        spacing_between_slices=number("SpacingBetweenSlices"),
        instance_number=integer("InstanceNumber"),
        acquisition_number=integer("AcquisitionNumber"),
        acquisition_time=values.time_seconds(ds.get("AcquisitionTime")),
        content_time=values.time_seconds(ds.get("ContentTime")),
        trigger_time=number("TriggerTime"),
        temporal_position=integer("TemporalPositionIdentifier"),
        echo_number=values.to_int(values.first(get("EchoNumbers")), "EchoNumbers"),
        echo_time=number("EchoTime"),
        rescale_slope=number("RescaleSlope") or 1.0,
        rescale_intercept=number("RescaleIntercept") or 0.0,
        gantry_tilt=number("GantryDetectorTilt"),
        philips_scale_slope=(philips_scale_slope(ds)
                             if is_philips(str(ds.get("Manufacturer", ""))) else None),
        overlays=overlay_groups(ds),
        **diffusion_header_fields(ds),
        **(ge_sequence_fields(ds) if is_ge(str(ds.get("Manufacturer", "") or "")) else {}),
    )


#: Overlay planes: groups 6000-601E (even), their data in (60xx,3000).
OVERLAY_GROUPS = tuple(range(0x6000, 0x6020, 2))


def overlay_groups(ds: Any) -> tuple[int, ...]:
    """The groups of the overlay planes whose data (60xx,3000) a file holds."""
    if isinstance(ds, FastDataset):
        return ds.overlays
    return tuple(group for group in OVERLAY_GROUPS if (group, 0x3000) in ds)


def _check_pixel_data(header: SliceHeader, file_size: int, fast: FastDataset | None) -> str:
    """A reason when a file cannot hold the pixel data its header describes ('' if it can).

    Checked before a header is expanded into frames (a header claiming 2^31 frames
    must cost nothing): the number of frames, the bytes one decode would allocate, and
    truncation. fast (the tag walker's view, when it read the file) knows where the
    pixel data element ends and, for encapsulated data, its items: a frame needs one,
    and in JPEG-family syntaxes ends with an end-of-image marker. Otherwise native data
    are checked against the file size, which catches all but the smallest truncations
    (decoding checks the rest).
    """
    frames = header.number_of_frames
    if frames > MAX_FRAMES:
        return f"NumberOfFrames {frames} is more than convkit reads ({MAX_FRAMES}): corrupt"
    if frames < 1 or header.rows < 1 or header.columns < 1:
        return (f"Rows x Columns x NumberOfFrames is {header.rows} x {header.columns} x "
                f"{frames}: no pixels")
    needed = header.expected_pixel_bytes
    if needed > max_volume_bytes():
        return (f"Rows x Columns x NumberOfFrames ({header.rows} x {header.columns} x {frames}, "
                f"{header.bits_allocated} bits) would need {format_gib(needed)}, limit "
                f"{format_gib(max_volume_bytes())}: corrupt")
    pixel_end = fast.pixel_data_end if fast is not None else None
    if pixel_end is not None and file_size < pixel_end:
        return (f"truncated pixel data: the file has {file_size} bytes, the pixel data end "
                f"at byte {pixel_end}")
    fragments = fast.fragments if fast is not None else None
    if fragments is not None:
        return fragment_problem(header, fragments)
    if header.transfer_syntax not in NATIVE_SYNTAXES or header.transfer_syntax.endswith(".99"):
        return ""
    if file_size < needed:
        return f"truncated pixel data: the file has {file_size} bytes, the pixels need {needed}"
    return ""


def fragment_problem(header: SliceHeader, fragments: Fragments) -> str:
    """Why the encapsulated pixel data of a file cannot hold its frames ('' when they can).

    Every frame needs a fragment. In the JPEG family a frame ends with an end-of-image
    marker, so when each fragment is a frame each must end with one, and otherwise the
    last must (a decoder given a cut stream may return an image without complaint, the
    lost part made up). RLE cannot compress more than 64:1 (two bytes per run of at most
    128): less data than that cannot be the image, whatever a decoder would allocate.
    """
    if fragments.problem:
        return f"damaged pixel data: {fragments.problem}"
    ends, frames = fragments.ends_with_eoi, header.number_of_frames
    if len(ends) < frames:
        return f"truncated pixel data: {len(ends)} fragment(s) for NumberOfFrames {frames}"
    if header.transfer_syntax == RLE_SYNTAX and \
            sum(fragments.lengths) * RLE_MAX_RATIO < header.expected_pixel_bytes:
        return (f"truncated pixel data: {sum(fragments.lengths)} bytes of RLE data cannot hold "
                f"{header.rows} x {header.columns} x {frames} pixels "
                f"({header.expected_pixel_bytes} bytes)")
    if header.transfer_syntax not in EOI_SYNTAXES or not ends:
        return ""
    checked = ends if len(ends) == frames else ends[-1:]
    offset = len(ends) - len(checked)
    cut = next((index + offset for index, ok in enumerate(checked) if not ok), None)
    if cut is None:
        return ""
    return (f"truncated pixel data: compressed fragment {cut + 1} of {len(ends)} ends without "
            "an end-of-image marker (FF D9)")


def fragments_of(pixel_data: bytes) -> Fragments:
    """The Fragments of encapsulated pixel data already in memory (pydicom's dataset)."""
    from pydicom.encaps import generate_fragments

    items = generate_fragments(pixel_data)
    next(items, None)  # the basic offset table
    lengths, ends = [], []
    for fragment in items:
        lengths.append(len(fragment))
        ends.append(has_eoi(bytes(fragment[-16:])))
    return Fragments(tuple(lengths), tuple(ends))


def checked_header(header: SliceHeader) -> SliceHeader:
    """header with its values checked: InputError (the file is unreadable) for sizes and
    coordinates no image can have; a degenerate orientation becomes header.problem (the
    series is refused); an orientation a little off unit length is normalised, noted."""
    spacing = header.pixel_spacing
    if spacing is not None and min(spacing) <= 0:
        raise InputError(f"PixelSpacing {_text(spacing)} is not positive")
    for keyword, numbers in (("ImagePositionPatient", header.position),
                             ("PixelSpacing", spacing),
                             ("SliceThickness", (header.slice_thickness or 0,)),
                             ("SpacingBetweenSlices", (header.spacing_between_slices or 0,))):
        if numbers is not None and max(map(abs, numbers)) > MAX_COORDINATE_MM:
            raise InputError(f"{keyword} {_text(numbers)} is beyond {MAX_COORDINATE_MM:g} mm")
    if max(abs(header.rescale_slope), abs(header.rescale_intercept)) > FLOAT32_MAX:
        keyword, value = max((("RescaleSlope", header.rescale_slope),
                              ("RescaleIntercept", header.rescale_intercept)),
                             key=lambda item: abs(item[1]))
        raise InputError(f"{keyword} {value:g} is beyond the float32 range of every output")
    if header.orientation is None:
        return header
    unit, note, problem = _orientation_verdict(header.orientation)
    if problem:  # nothing downstream is handed the degenerate vectors
        return dataclasses.replace(header, problem=header.problem or problem, orientation=None)
    if not note:
        return header
    return dataclasses.replace(header, orientation=unit, notes=(*header.notes, note))


def orientation_problem(orientation: tuple[float, ...] | None) -> str:
    """Why an ImageOrientationPatient cannot place an image ('' when it can, or is absent)."""
    return "" if orientation is None else _orientation_verdict(orientation)[2]


@functools.lru_cache(maxsize=4096)
def _orientation_verdict(orientation: tuple[float, ...]) -> tuple[tuple[float, ...], str, str]:
    """(unit orientation, note, problem) of an ImageOrientationPatient: the files of a
    series share theirs, so each is judged once."""
    try:
        unit, note = geometry.unit_orientation(orientation)
    except geometry.DegenerateOrientation as exc:
        return orientation, "", str(exc)
    return unit, note, ""


def _text(numbers: tuple[float, ...]) -> str:
    return "\\".join(f"{v:g}" for v in numbers)


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else "unknown SOP class"
