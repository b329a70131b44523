"""Discovery: find DICOM files by content, read headers only, group them into series.

Every file under the folder is accounted for exactly once (FileRecord.status):
used, duplicate, not-dicom, dicomdir, unreadable (with the reason) or
skipped (with the reason). Grouping splits one SeriesInstanceUID into several
volumes where its files are not one volume (orientation, matrix, echo,
magnitude/phase, localizer).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convkit.geometry import same_orientation

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

ProgressCallback = Callable[[int, int], None]


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

    @property
    def complex_suffix(self) -> str:
        """'' for magnitude (or unknown), '_ph', '_real', '_imag' for the other components."""
        for value in self.image_type[2:]:
            for token in value.upper().replace("-", "_").split("_"):
                if token in COMPLEX_COMPONENTS and token not in ("M", "MAGNITUDE"):
                    return COMPLEX_COMPONENTS[token]
        return ""

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def is_mosaic(self) -> bool:
        return "MOSAIC" in self.image_type

    @property
    def expected_pixel_bytes(self) -> int:
        return (self.rows * self.columns * self.samples_per_pixel * self.number_of_frames
                * ((self.bits_allocated + 7) // 8))


@dataclass
class FileRecord:
    """The fate of one input file."""

    path: Path
    status: str  # used | duplicate | not-dicom | dicomdir | unreadable | skipped | refused
    reason: str = ""
    series: str = ""  # label of the series it belongs to
    series_uid: str = ""  # known for unreadable files whose header could be read


@dataclass
class SeriesGroup:
    """Files that should form one volume (3D, or 4D over time)."""

    headers: list[SliceHeader]
    split_suffix: str = ""  # e.g. '_e2', '_ph', '_ori2': how this group differs from siblings
    label: str = ""  # unique, file-name-safe name, set by naming

    @property
    def first(self) -> SliceHeader:
        return self.headers[0]

    @property
    def series_uid(self) -> str:
        return self.first.series_instance_uid


@dataclass
class ScanResult:
    """All series found under a folder, and what happened to every file."""

    root: Path
    series: list[SeriesGroup] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for record in self.files if record.status == status)


def iter_files(root: Path) -> Iterable[Path]:
    """Every regular file under root (or root itself), in a stable order."""
    if root.is_file():
        yield root
        return
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            yield Path(folder) / name


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


def read_header(path: Path) -> SliceHeader | FileRecord:
    """The SliceHeader of a DICOM file, or a FileRecord saying why it is not one."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not looks_like_dicom(path):
        return FileRecord(path, "not-dicom")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        meta = getattr(ds, "file_meta", None)
        sop_class = str(ds.get("SOPClassUID", "")
                        or (meta or {}).get("MediaStorageSOPClassUID", ""))
        if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
            return FileRecord(path, "dicomdir")
        if "Rows" not in ds or "Columns" not in ds:
            return FileRecord(path, "skipped", f"no image ({_sop_class_name(sop_class)})")
        header = _header_from_dataset(path, ds, sop_class)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, EOFError) as exc:
        return FileRecord(path, "unreadable", f"header: {exc}".splitlines()[0][:200])
    problem = _check_pixel_size(header, path.stat().st_size)
    if problem:
        return FileRecord(path, "unreadable", problem, series_uid=header.series_instance_uid)
    return header


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
        series_number=_int(ds.get("SeriesNumber")),
        series_description=str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        sop_class_uid=sop_class,
        transfer_syntax=syntax,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        bits_allocated=int(ds.get("BitsAllocated", 16) or 16),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        number_of_frames=_int(ds.get("NumberOfFrames")) or 1,
        image_type=tuple(str(v).upper() for v in _multi(ds.get("ImageType"))),
        orientation=_floats(ds.get("ImageOrientationPatient"), 6),
        position=_floats(ds.get("ImagePositionPatient"), 3),
        pixel_spacing=_floats(ds.get("PixelSpacing"), 2),
        slice_thickness=_float(ds.get("SliceThickness")),
        instance_number=_int(ds.get("InstanceNumber")),
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        acquisition_time=_seconds(ds.get("AcquisitionTime")),
        content_time=_seconds(ds.get("ContentTime")),
        trigger_time=_float(ds.get("TriggerTime")),
        temporal_position=_int(ds.get("TemporalPositionIdentifier")),
        echo_number=_int(_first(ds.get("EchoNumbers"))),
        echo_time=_float(ds.get("EchoTime")),
        rescale_slope=_float(ds.get("RescaleSlope")) or 1.0,
        rescale_intercept=_float(ds.get("RescaleIntercept")) or 0.0,
        gantry_tilt=_float(ds.get("GantryDetectorTilt")),
    )


def _check_pixel_size(header: SliceHeader, file_size: int) -> str:
    """A reason when a native-syntax file is too short to hold its pixel data."""
    if header.transfer_syntax not in NATIVE_SYNTAXES or header.transfer_syntax.endswith(".99"):
        return ""
    expected = header.expected_pixel_bytes
    if file_size < expected:
        return f"truncated pixel data: the file has {file_size} bytes, the pixels need {expected}"
    return ""


def scan_folder(
    root: Path | str,
    progress: ProgressCallback | None = None,
) -> ScanResult:
    """Read the headers of every file under root and group the DICOM images into series."""
    root = Path(root)
    paths = list(iter_files(root))
    result = ScanResult(root)
    headers: list[SliceHeader] = []
    for done, path in enumerate(paths, 1):
        outcome = read_header(path)
        if isinstance(outcome, FileRecord):
            result.files.append(outcome)
        else:
            headers.append(outcome)
        if progress:
            progress(done, len(paths))
    unique, duplicates = _drop_duplicates(headers, root)
    result.files.extend(duplicates)
    result.series = group_series(unique)
    name_series(result.series)
    for group in result.series:
        result.files.extend(FileRecord(h.path, "used", series=group.label) for h in group.headers)
    result.files.sort(key=lambda record: str(record.path))
    return result


def _drop_duplicates(headers: list[SliceHeader], root: Path,
                     ) -> tuple[list[SliceHeader], list[FileRecord]]:
    """Keep the first file of each SOPInstanceUID (in path order); report the others."""
    seen: dict[str, SliceHeader] = {}
    duplicates = []
    for header in sorted(headers, key=lambda h: str(h.path)):
        kept = seen.setdefault(header.sop_instance_uid, header)
        if kept is not header:
            where = kept.path.relative_to(root) if root.is_dir() else kept.path.name
            duplicates.append(FileRecord(header.path, "duplicate",
                                         f"same SOPInstanceUID as {where}"))
    return list(seen.values()), duplicates


def group_series(headers: list[SliceHeader]) -> list[SeriesGroup]:
    """Group by SeriesInstanceUID, then split what cannot be one volume."""
    by_uid: dict[str, list[SliceHeader]] = {}
    for header in headers:
        by_uid.setdefault(header.series_instance_uid, []).append(header)
    groups = []
    for members in by_uid.values():
        groups.extend(_split_series(members))
    groups.sort(key=_group_sort_key)
    return groups


def _group_sort_key(group: SeriesGroup) -> tuple:
    number = group.first.series_number
    return (number is None, number or 0, group.series_uid, group.split_suffix)


def _split_series(members: list[SliceHeader]) -> list[SeriesGroup]:
    """One SeriesInstanceUID -> groups of files that share everything a volume must share."""
    orientations: list[tuple[float, ...]] = []
    echoes = sorted({h.echo_number for h in members if h.echo_number is not None})
    parts: dict[tuple, list[SliceHeader]] = {}
    for header in members:
        key = (
            _orientation_index(orientations, header.orientation),
            header.rows, header.columns, header.samples_per_pixel,
            header.echo_number if len(echoes) > 1 else None,
            header.complex_suffix,
            header.is_localizer,
        )
        parts.setdefault(key, []).append(header)
    groups = []
    keys = sorted(parts, key=lambda k: tuple((v is None, v) for v in k))
    shapes = {(k[1], k[2], k[3]) for k in keys}
    orientation_ids = sorted({k[0] for k in keys})
    for key in keys:
        suffix = ""
        if key[6]:
            suffix += "_localizer"
        elif len(orientation_ids) > 1 and key[0] != orientation_ids[0]:
            suffix += f"_ori{orientation_ids.index(key[0]) + 1}"
        if len(shapes) > 1:
            suffix += f"_{key[2]}x{key[1]}"
        if key[4] is not None and key[4] != echoes[0]:
            suffix += f"_e{key[4]}"
        suffix += key[5]
        groups.append(SeriesGroup(sorted(parts[key], key=_slice_sort_key), suffix))
    return groups


def _orientation_index(
    known: list[tuple[float, ...]], orientation: tuple[float, ...] | None,
) -> int:
    """Index of the cluster of orientation (within tolerance), adding a new one if needed."""
    if orientation is None:
        return -1
    for index, other in enumerate(known):
        if same_orientation(np.asarray(orientation), np.asarray(other)):
            return index
    known.append(orientation)
    return len(known) - 1


def _slice_sort_key(header: SliceHeader) -> tuple:
    return (header.instance_number if header.instance_number is not None else 0, str(header.path))


def name_series(
    groups: list[SeriesGroup], template: str = "{SeriesNumber}_{SeriesDescription}",
) -> None:
    """Give every group a file-name-safe label, unique across the scan (deterministic)."""
    used: dict[str, int] = {}
    for group in groups:
        base = safe_name(format_name(template, group.first)) + group.split_suffix
        count = used.get(base.lower(), 0)
        used[base.lower()] = count + 1
        group.label = base if count == 0 else f"{base}_{count + 1}"


def format_name(template: str, header: SliceHeader) -> str:
    """Fill a name template such as '{SeriesNumber}_{SeriesDescription}' from header fields."""
    fields = {
        "SeriesNumber": "" if header.series_number is None else header.series_number,
        "SeriesDescription": header.series_description,
        "Modality": header.modality,
        "SeriesInstanceUID": header.series_instance_uid,
        "StudyInstanceUID": header.study_instance_uid,
    }
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        from convkit.errors import UsageError

        raise UsageError(f"bad --name template {template!r}: unknown field {exc}",
                         f"use fields among {', '.join(sorted(fields))}") from None


def safe_name(text: str) -> str:
    """Letters, digits, '-', '_' and '.' only; never empty, never hidden."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text.strip())
    cleaned = "_".join(part for part in cleaned.split("_") if part).strip(".")
    return cleaned or "series"


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else "unknown SOP class"


def _multi(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _first(value: Any) -> Any:
    values = _multi(value)
    return values[0] if values else None


def _int(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(float(value))
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    values = _multi(value)
    if len(values) != count:
        return None
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None


def _seconds(value: Any) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF) -> seconds since midnight."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds
