"""Volume files (NIfTI, NRRD, MetaImage) from their headers only, and whether the data is all there.

No voxel is decoded. The size check compares what the header describes with what
the file holds: the file size for raw data, the gzip trailer (ISIZE) for gzip
streams (the whole stream is decompressed, and discarded, only when the trailer
disagrees), a streaming count for bzip2 and zlib.
"""

from __future__ import annotations

import bz2
import io
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convkit.audit.identifiers import (
    DICOM_IDENTIFIERS,
    IdentifiersUnchecked,
    key_value_identifiers,
    real_value,
    text_identifiers,
)
from convkit.audit.sniff import read_head
from convkit.errors import exception_reason
from convkit.formats.detached import data_file_path, several_data_files
from convkit.formats.mha import metaimage_affine, read_metaimage_header
from convkit.formats.nifti_read import QFORM_SFORM_ATOL_MM, choose_affine
from convkit.formats.nrrd_read import SPACE_SIGNS, nrrd_geometry
from convkit.geometry import is_sheared

#: Header bytes read at most (NIfTI extensions, NRRD and MetaImage text headers).
MAX_HEADER_BYTES = 1 << 20
#: Chunk size for streaming decompression (counting bytes, keeping none).
_CHUNK = 1 << 20


@dataclass
class SizeCheck:
    """Whether the file holds the data its header describes."""

    status: str  # ok | truncated | extra | missing | unchecked
    expected: int | None = None  # bytes of data (uncompressed) the header describes
    found: int | None = None  # bytes of data (uncompressed) the file holds
    detail: str = ""

    @property
    def text(self) -> str:
        if self.status == "truncated" and self.expected is not None and self.found is not None:
            return f"truncated ({self.found} of {self.expected} bytes)"
        if self.status == "extra" and self.expected is not None and self.found is not None:
            return f"ok (+{self.found - self.expected} bytes)"
        return self.status + (f" ({self.detail})" if self.detail and self.status != "ok" else "")


@dataclass
class VolumeHeader:
    """What a volume header says, in convkit's conventions (RAS affine, (i, j, k[, t]) shape)."""

    path: Path
    kind: str  # nifti | nrrd | metaimage
    format: str  # 'NIfTI-1', 'NIfTI-2', 'NIfTI-1 pair', 'NRRD0004', 'MetaImage'
    shape: tuple[int, ...] = ()
    dtype: str = ""
    affine: np.ndarray | None = None  # voxel -> RAS mm; None without world geometry
    affine_source: str = ""  # sform | qform | pixdim | space directions | TransformMatrix
    slope: float | None = None
    intercept: float | None = None
    qform_code: int | None = None
    sform_code: int | None = None
    qform_sform_mm: float | None = None  # largest difference between qform and sform (mm)
    sheared: bool = False
    spatial_unit: str = ""
    time_unit: str = ""
    fields: dict[str, Any] = field(default_factory=dict)  # format-specific, for the table
    header: dict[str, Any] = field(default_factory=dict)  # every header field (single-file mode)
    identifying: dict[str, list[str]] = field(default_factory=dict)  # field -> what looks so
    identifiers_unchecked: list[str] = field(default_factory=list)  # parts that could not be read
    data_files: list[Path] = field(default_factory=list)  # detached data (sidecars of this file)
    size: SizeCheck = field(default_factory=lambda: SizeCheck("unchecked"))
    checks: list[tuple[int, str, str]] = field(default_factory=list)  # nibabel (level, msg, fix)
    unsupported: str = ""  # why convkit would not read this as a volume
    problem: str = ""  # why the header cannot be parsed

    @property
    def spacing(self) -> tuple[float, ...]:
        if self.affine is None:
            return ()
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[:3])

    @property
    def n_times(self) -> int:
        """Volumes along the 4th axis (1 for 3D, trailing singleton axes ignored)."""
        return int(self.shape[3]) if len(self.shape) > 3 else 1


def read_volume_header(path: Path, kind: str) -> VolumeHeader:
    """The header of a volume file of a sniffed kind ('nifti1', 'nifti2-pair', 'nrrd' ...)."""
    try:
        if kind.startswith("nifti"):
            return _read_nifti(path, kind)
        if kind == "nrrd":
            return _read_nrrd(path)
        return _read_metaimage(path)
    except Exception as exc:  # a damaged header of any kind is a finding, never a crash
        family = "nifti" if kind.startswith("nifti") else kind
        reason = exception_reason(exc)
        return VolumeHeader(path, family, _FORMAT_NAMES.get(kind, kind), problem=reason)


_FORMAT_NAMES = {"nifti1": "NIfTI-1", "nifti2": "NIfTI-2", "nifti1-pair": "NIfTI-1 pair",
                 "nifti2-pair": "NIfTI-2 pair", "nrrd": "NRRD", "metaimage": "MetaImage"}


# ------------------------------------------------------------------------------------------
# NIfTI


def _read_nifti(path: Path, kind: str) -> VolumeHeader:
    import nibabel as nib

    two = kind.startswith("nifti2")
    klass = nib.Nifti2Header if two else nib.Nifti1Header
    base, compressed = read_head(path, 540 if two else 348)
    probe = klass.from_fileobj(io.BytesIO(base), check=False)
    offset = int(probe["vox_offset"])
    pair = kind.endswith("pair")
    want = MAX_HEADER_BYTES if pair else min(max(offset, len(base)), MAX_HEADER_BYTES)
    raw, _ = read_head(path, want) if want > len(base) else (base, compressed)
    info = VolumeHeader(path, "nifti", _FORMAT_NAMES[kind])
    try:
        header = klass.from_fileobj(io.BytesIO(raw), check=False)
    except Exception as exc:  # damaged extensions: the header itself is still worth reporting
        header = probe
        info.identifiers_unchecked.append(f"extensions unreadable ({exception_reason(exc)})")
    shape = tuple(int(v) for v in header.get_data_shape())
    info.shape = shape
    dtype = header.get_data_dtype()
    info.dtype = _dtype_name(dtype)
    affine, _notes = choose_affine(header)
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    info.qform_code, info.sform_code = int(header["qform_code"]), int(header["sform_code"])
    if scode and scode > 0:
        info.affine_source = "sform"
        info.sheared = is_sheared(sform)
        if qcode and qcode > 0:
            difference = float(np.max(np.abs(qform - sform)))
            info.qform_sform_mm = difference if difference > QFORM_SFORM_ATOL_MM else 0.0
    elif qcode and qcode > 0:
        info.affine_source = "qform"
    else:
        info.affine_source = "pixdim"
    info.affine = None if info.affine_source == "pixdim" else np.asarray(affine, float)
    slope, intercept = header.get_slope_inter()
    info.slope = None if slope is None else float(slope)
    info.intercept = None if intercept is None else float(intercept)
    info.spatial_unit, info.time_unit = header.get_xyzt_units()
    descrip = _text(header["descrip"])
    aux = _text(header["aux_file"])
    intent = header.get_intent()[0]
    extensions = [(int(ext.get_code()), ext.get_content()) for ext in header.extensions]
    info.fields.update({
        "intent": str(intent), "descrip": descrip, "aux_file": aux,
        "extensions": ", ".join(_extension_name(code) for code, _ in extensions),
    })
    for name, text in (("descrip", descrip), ("aux_file", aux)):
        found = text_identifiers(text)
        if found:
            info.identifying[name] = found
    for index, (code, content) in enumerate(extensions):
        where = f"extension {index + 1} ({_extension_name(code)})"
        try:
            found = _extension_identifiers(code, content)
        except IdentifiersUnchecked as exc:
            info.identifiers_unchecked.append(f"{where}: {exc}")
            continue
        if found:
            info.identifying[where] = found
    info.header = _nifti_header_dict(header, extensions)
    info.checks = _nibabel_checks(header)
    if pair:
        info.size = _pair_data_size(path, offset, _data_bytes(shape, dtype.itemsize), info)
    else:
        info.size = data_size(path, 0, offset + _data_bytes(shape, dtype.itemsize),
                              "gzip" if compressed else None)
    return info


def _nibabel_checks(header) -> list[tuple[int, str, str]]:
    from nibabel.batteryrunners import BatteryRunner

    try:
        reports = BatteryRunner(header._get_checks()).check_only(header)
    except Exception:  # nibabel's checks are a bonus; they must not break the audit
        return []
    return [(int(r.problem_level), str(r.problem_msg), str(r.fix_msg)) for r in reports
            if r.problem_level > 0]


def _pair_data_size(path: Path, offset: int, nbytes: int, info: VolumeHeader) -> SizeCheck:
    """The .img (or .img.gz) beside a .hdr of a NIfTI pair."""
    stem = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    stem = stem.rsplit(".", 1)[0]
    for name in (f"{stem}.img", f"{stem}.img.gz", f"{stem}.IMG"):
        candidate = path.with_name(name)
        if candidate.is_file():
            info.data_files.append(candidate)
            return data_size(candidate, 0, offset + nbytes,
                             "gzip" if name.endswith(".gz") else None)
    return SizeCheck("missing", offset + nbytes, None, f"no {stem}.img beside the header")


def _extension_name(code: int) -> str:
    names = {2: "dicom", 4: "afni", 6: "comment", 8: "xcede", 12: "jimdiminfo", 14: "workflow",
             16: "freesurfer", 18: "pypickle", 32: "cifti", 40: "mind"}
    return names.get(code, f"code {code}")


def _extension_identifiers(code: int, content: Any) -> list[str]:
    if code == 2:  # a DICOM dataset: look at its identifying attributes

        try:
            items = content.items() if hasattr(content, "items") else []
            return [str(el.keyword) for _, el in items
                    if el.keyword in DICOM_IDENTIFIERS and real_value(el.value)]
        except Exception as exc:  # a damaged embedded dataset: pydicom raises many types
            raise IdentifiersUnchecked(exception_reason(exc)) from exc
    if isinstance(content, bytes):
        content = content.decode("utf-8", errors="replace")
    return text_identifiers(str(content))


def _nifti_header_dict(header, extensions: list[tuple[int, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in header.keys():
        value = header[name]
        if name in ("descrip", "aux_file", "intent_name", "magic", "db_name", "data_type"):
            fields[name] = _text(value)
        else:
            fields[name] = _plain(value)
    fields["extensions"] = [{"code": code, "name": _extension_name(code),
                             "bytes": len(content) if isinstance(content, (bytes, str)) else None}
                            for code, content in extensions]
    return fields


# ------------------------------------------------------------------------------------------
# NRRD

_NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
        "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
        "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int",
        "int64", "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64",
        "uint64_t", "double"),
}
_NRRD_ITEMSIZE = {name: size for size, names in _NRRD_TYPES.items() for name in names}
_NRRD_DTYPE = {"signed char": "int8", "uchar": "uint8", "unsigned char": "uint8",
               "short": "int16", "ushort": "uint16", "unsigned short": "uint16", "int": "int32",
               "uint": "uint32", "unsigned int": "uint32", "longlong": "int64",
               "ulonglong": "uint64", "float": "float32", "double": "float64"}


def _read_nrrd(path: Path) -> VolumeHeader:
    import nrrd


    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES)
    end, header_length = _nrrd_header_end(head)
    lines = head[:end].decode("latin-1").splitlines()
    header = nrrd.read_header(lines)
    info = VolumeHeader(path, "nrrd", lines[0].strip() if lines else "NRRD")
    sizes = [int(v) for v in np.atleast_1d(header.get("sizes", []))]
    type_name = str(header.get("type", "")).strip().lower()
    itemsize = _NRRD_ITEMSIZE.get(type_name)
    info.dtype = _NRRD_DTYPE.get(type_name, np.dtype(type_name).name if type_name in (
        "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64") else type_name)
    space = str(header.get("space", "")).strip().lower()
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    affine, spatial = nrrd_geometry(header)
    others = [i for i in range(len(sizes)) if i not in spatial]
    info.shape = tuple(sizes[i] for i in spatial) + tuple(sizes[i] for i in others) \
        if len(spatial) == 3 else tuple(sizes)
    if affine is not None:
        affine[:3, 3] = np.nan_to_num(affine[:3, 3])
        info.affine, info.affine_source = affine, "space directions"
        info.spatial_unit = ",".join(header.get("space units", [])) or "mm"
    elif len(sizes) < 3 or (space in SPACE_SIGNS and len(spatial) != 3):
        info.unsupported = (f"{len(sizes)}D NRRD" if len(sizes) < 3
                            else f"NRRD with {len(spatial)} spatial axes of {len(sizes)}")
    encoding = str(header.get("encoding", "raw")).lower()
    info.fields.update({"space": space, "encoding": encoding, "kinds": " ".join(kinds),
                        "content": str(header.get("content", ""))})
    info.header = {key: _plain(value) for key, value in header.items()}
    _nrrd_identifiers(lines, info)
    nbytes = _data_bytes(sizes, itemsize) if itemsize else None
    info.size = _nrrd_size(path, header, header_length, nbytes, encoding, info)
    return info


def _nrrd_header_end(head: bytes) -> tuple[int, int]:
    """(end of the header text, offset of the attached data)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = head.find(separator)
        if index >= 0:
            return index, index + len(separator)
    return len(head), len(head)


def _nrrd_identifiers(lines: list[str], info: VolumeHeader) -> None:
    for line in lines[1:]:
        if line.startswith("#"):  # comments often carry a creation date: names only
            found = [what for what in text_identifiers(line[1:]) if what != "a date"]
            if found:
                info.identifying.setdefault("comment", []).extend(found)
        elif ":=" in line:
            key, value = line.split(":=", 1)
            found = key_value_identifiers(key.strip(), value.strip())
            if found:
                info.identifying[f"{key.strip()}:="] = found
        elif line.lower().startswith("content:"):
            found = text_identifiers(line.split(":", 1)[1])
            if found:
                info.identifying["content"] = found


def _nrrd_size(path: Path, header: dict, header_length: int, nbytes: int | None,
               encoding: str, info: VolumeHeader) -> SizeCheck:
    data_file = header.get("data file") or header.get("datafile")
    start = header_length
    target = path
    if data_file:
        name = str(data_file).strip()
        if several_data_files(name):
            return SizeCheck("unchecked", nbytes, None, "several data files")
        target = data_file_path(path, name)
        start = 0
        if not target.is_file():
            return SizeCheck("missing", nbytes, None, f"data file {name} not found")
        info.data_files.append(target)
    if nbytes is None:
        return SizeCheck("unchecked", None, None, "unknown type")
    if int(header.get("line skip", header.get("lineskip", 0)) or 0) > 0:
        return SizeCheck("unchecked", nbytes, None, "line skip")
    skip = int(header.get("byte skip", header.get("byteskip", 0)) or 0)
    if encoding in ("raw",):
        if skip < 0:  # the data are the last bytes of the file
            available = target.stat().st_size - start
            return _compare(nbytes, available) if available < nbytes else \
                SizeCheck("ok", nbytes, nbytes)
        return _compare(skip + nbytes, target.stat().st_size - start)
    if encoding in ("gzip", "gz"):
        return data_size(target, start, max(skip, 0) + nbytes, "gzip")
    if encoding in ("bzip2", "bz2"):
        return data_size(target, start, max(skip, 0) + nbytes, "bzip2")
    return SizeCheck("unchecked", nbytes, None, f"{encoding} encoding")


# ------------------------------------------------------------------------------------------
# MetaImage

_MET_ITEMSIZE = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
                 "MET_UINT": 4, "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8,
                 "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
_MET_DTYPE = {"MET_CHAR": "int8", "MET_UCHAR": "uint8", "MET_SHORT": "int16",
              "MET_USHORT": "uint16", "MET_INT": "int32", "MET_UINT": "uint32",
              "MET_LONG": "int32", "MET_ULONG": "uint32", "MET_LONG_LONG": "int64",
              "MET_ULONG_LONG": "uint64", "MET_FLOAT": "float32", "MET_DOUBLE": "float64"}
#: Standard MetaIO keys: anything else is a custom field (checked for identifying text).
_MET_KEYS = {
    "objecttype", "objectsubtype", "ndims", "binarydata", "binarydatabyteordermsb",
    "elementbyteordermsb", "compresseddata", "compresseddatasize", "transformmatrix",
    "rotation", "orientation", "offset", "position", "origin", "centerofrotation",
    "anatomicalorientation", "elementspacing", "elementsize", "dimsize", "elementtype",
    "elementdatafile", "elementnumberofchannels", "headersize", "modality", "elementmin",
    "elementmax", "id", "parentid", "color", "sequenceid", "comment", "name",
}


def _read_metaimage(path: Path) -> VolumeHeader:
    parsed = read_metaimage_header(path)
    fields, header_length = parsed.fields, parsed.length
    lower = {key.lower(): value for key, value in fields.items()}
    info = VolumeHeader(path, "metaimage", "MetaImage")
    ndims = int(lower.get("ndims", "0"))
    sizes = [int(v) for v in lower.get("dimsize", "").split()]
    channels = int(lower.get("elementnumberofchannels", "1") or 1)
    info.shape = tuple(sizes) + ((channels,) if channels > 1 else ())
    element = lower.get("elementtype", "").upper()
    info.dtype = _MET_DTYPE.get(element, element.lower())
    info.header = dict(fields)
    if ndims != 3 or len(sizes) != 3:
        info.unsupported = f"{ndims}D MetaImage"
    else:
        info.affine, info.affine_source = metaimage_affine(parsed), "TransformMatrix"
        info.spatial_unit = "mm"
    info.fields.update({"compressed": lower.get("compresseddata", "False"),
                        "anatomical_orientation": lower.get("anatomicalorientation", "")})
    for key, value in fields.items():
        if key.lower() in ("comment", "name") or key.lower() not in _MET_KEYS:
            found = key_value_identifiers(key, value)
            if found:
                info.identifying[key] = found
    itemsize = _MET_ITEMSIZE.get(element)
    nbytes = _data_bytes(sizes, itemsize) * channels if itemsize and sizes else None
    info.size = _metaimage_size(path, lower, header_length, nbytes, info)
    return info


def _metaimage_size(path: Path, lower: dict[str, str], header_length: int,
                    nbytes: int | None, info: VolumeHeader) -> SizeCheck:
    name = lower.get("elementdatafile", "")
    target, start = path, header_length
    if name.upper() != "LOCAL":
        if not name or several_data_files(name):
            return SizeCheck("unchecked", nbytes, None, "several data files")
        target = data_file_path(path, name)
        start = 0
        if not target.is_file():
            return SizeCheck("missing", nbytes, None, f"data file {name} not found")
        info.data_files.append(target)
    if nbytes is None:
        return SizeCheck("unchecked", None, None, "unknown element type")
    skip = int(lower.get("headersize", "0") or 0)
    available = target.stat().st_size - start
    if lower.get("compresseddata", "false").lower() == "true":
        declared = lower.get("compresseddatasize")
        if declared and available < int(declared):
            return SizeCheck("truncated", nbytes, None,
                             f"{available} of {declared} compressed bytes")
        return data_size(target, start, nbytes, "zlib")
    if skip == -1:  # the data are the last bytes of the file
        return _compare(nbytes, available) if available < nbytes else \
            SizeCheck("ok", nbytes, nbytes)
    return _compare(max(skip, 0) + nbytes, available)


# ------------------------------------------------------------------------------------------
# Sizes


def data_size(path: Path, start: int, expected: int, compression: str | None) -> SizeCheck:
    """Compare expected (uncompressed) bytes with what path holds from byte start on.

    compression: None (raw), 'gzip' (trailer first, full count only if it disagrees),
    'bzip2' or 'zlib' (streaming count, nothing kept).
    """
    size = path.stat().st_size
    if compression is None:
        return _compare(expected, size - start)
    if compression == "gzip" and size - start >= 18:
        with open(path, "rb") as handle:
            handle.seek(size - 4)
            trailer = int.from_bytes(handle.read(4), "little")
        if trailer == expected % (1 << 32):
            return SizeCheck("ok", expected, expected)
    found, complete, error = _stream_length(path, start, compression, expected)
    if error:
        return SizeCheck("truncated", expected, found, f"corrupt stream: {error}")
    if not complete and found < expected:
        return SizeCheck("truncated", expected, found, "the compressed stream ends early")
    return _compare(expected, found)


def _compare(expected: int, found: int) -> SizeCheck:
    if found < expected:
        return SizeCheck("truncated", expected, found)
    if found > expected:
        return SizeCheck("extra", expected, found)
    return SizeCheck("ok", expected, found)


def _stream_length(path: Path, start: int, compression: str, limit: int,
                   ) -> tuple[int, bool, str]:
    """(decompressed bytes, stream complete?, error) without keeping the data.

    Follows concatenated gzip/bzip2 members; counting stops a little past limit
    (more than expected is all there is to know).
    """
    magic = {"gzip": b"\x1f\x8b", "bzip2": b"BZh"}.get(compression)

    def new():
        if compression == "bzip2":
            return bz2.BZ2Decompressor()
        return zlib.decompressobj(31 if compression == "gzip" else 47)

    total, decompressor, pending = 0, new(), b""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            while True:
                if not pending:
                    pending = handle.read(_CHUNK)
                    if not pending:
                        return total, False, ""
                total += len(decompressor.decompress(pending, _CHUNK))
                if compression == "bzip2":
                    pending = b""
                    while not decompressor.eof and not decompressor.needs_input:
                        total += len(decompressor.decompress(b"", _CHUNK))
                else:
                    pending = decompressor.unconsumed_tail
                if total > limit:
                    return total, True, ""
                if decompressor.eof:
                    leftover = decompressor.unused_data or handle.read(_CHUNK)
                    if not magic or not leftover.startswith(magic):
                        return total, True, ""  # the end, or trailing bytes after the stream
                    decompressor, pending = new(), leftover
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        return total, False, exception_reason(exc, 120)


def _data_bytes(shape: Any, itemsize: int | None) -> int:
    return int(math.prod(int(v) for v in shape)) * int(itemsize or 0)


# ------------------------------------------------------------------------------------------
# Small helpers


def _text(value: Any) -> str:
    raw = value.item() if hasattr(value, "item") else value
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    return str(raw).strip("\x00 ").strip()


def _dtype_name(dtype: np.dtype) -> str:
    if dtype.names:
        return {3: "rgb24", 4: "rgba32"}.get(len(dtype.names), str(dtype))
    return dtype.name


def _plain(value: Any) -> Any:
    """numpy and other values -> JSON-ready Python values."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SU":
            return _text(value)
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return re.sub(r"\s+", " ", str(value))
