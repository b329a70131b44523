"""Volume files (NIfTI, NRRD, MetaImage) from their headers only, and whether the data is all there.

No voxel is decoded. The size check compares what the header describes with what
the file holds: the file size for raw data, the gzip trailer (ISIZE) for gzip
streams (the whole stream is decompressed, and discarded, only when the trailer
disagrees), a streaming count for bzip2 and zlib.

What the size check cannot see: a gzip stream whose deflate data are corrupt but
whose trailer is intact (the trailer holds the original length, so it agrees) is
only caught by decompressing all of it, which an audit of headers does not do; when
the audit does decompress (the trailer disagrees), a CRC mismatch is reported as
corrupt. convert, compare, preview and nii2dicom always read to the end and check
the CRC (formats.compressed).

Detached data files follow formats.detached: one outside the header's folder, or
one that is not a regular file, is reported (status 'external') and never opened,
nor stat'ed when it lies outside.
"""

from __future__ import annotations

import io
import math
import re
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
from convkit.audit.sniff import nifti_kind, read_head
from convkit.errors import ConvkitError, InputError, exception_reason
from convkit.formats.compressed import EndedEarly, StreamError, gzip_can_hold, stream_length
from convkit.formats.detached import data_file_names, locate
from convkit.formats.mha import MET_TYPES, metaimage_affine, read_metaimage_header
from convkit.formats.nifti_read import (
    QFORM_SFORM_ATOL_MM,
    choose_affine,
    intent_name,
    xyzt_units,
)
from convkit.formats.nrrd_read import NRRD_TYPES, SPACE_SIGNS, nrrd_geometry, read_nrrd_header
from convkit.geometry import affine_problem, is_sheared

#: Header bytes read at most (NIfTI extensions, NRRD and MetaImage text headers).
MAX_HEADER_BYTES = 1 << 20


@dataclass
class SizeCheck:
    """Whether the file holds the data its header describes."""

    status: str  # ok | truncated | extra | missing | external | unchecked
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
        reason = exc.message.removeprefix(f"{path}: ") if isinstance(exc, ConvkitError) \
            else exception_reason(exc)
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
    if not nifti_kind(base).startswith("nifti"):  # sniffed by its name only
        damage = "a corrupt gzip stream" if compressed and len(base) < 348 else "no NIfTI header"
        raise ValueError(f"not a NIfTI file ({damage})")
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
    if any(size < 1 for size in shape):
        info.problem = f"dim {list(shape)}: no voxels (convert refuses it)"
    dtype = header.get_data_dtype()
    info.dtype = _dtype_name(dtype)
    _nifti_affine(header, info)
    _nifti_scaling(header, info)
    info.spatial_unit, info.time_unit = xyzt_units(header)
    descrip = _text(header["descrip"])
    aux = _text(header["aux_file"])
    intent = intent_name(header)
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


def _nifti_affine(header, info: VolumeHeader) -> None:
    """The affine the readers use (nifti_read.choose_affine), where it comes from, and how
    far the qform is from the sform."""
    affine, _notes = choose_affine(header)
    sform, scode = header.get_sform(coded=True)
    qcode = int(header["qform_code"])
    info.qform_code, info.sform_code = qcode, int(header["sform_code"])
    if scode and scode > 0:
        info.affine_source = "sform"
        info.sheared = is_sheared(sform)
        if qcode > 0:
            with np.errstate(all="ignore"):  # inf - inf: not a distance (the sform is checked)
                difference = float(np.max(np.abs(header.get_qform() - sform)))
            info.qform_sform_mm = difference if difference > QFORM_SFORM_ATOL_MM else 0.0
    elif qcode > 0:
        info.affine_source = "qform"
    else:
        info.affine_source = "pixdim"
    info.affine = None if info.affine_source == "pixdim" else np.asarray(affine, float)
    _check_affine(info)


def _nifti_scaling(header, info: VolumeHeader) -> None:
    """slope and intercept as nibabel reads them (None: unscaled); an infinite slope or a
    non-finite intercept beside a valid slope is a problem (the readers refuse it)."""
    slope, intercept = float(header["scl_slope"]), float(header["scl_inter"])
    if slope == 0 or math.isnan(slope):
        return
    if not math.isfinite(slope) or not math.isfinite(intercept):
        info.problem = f"scl_slope {slope}, scl_inter {intercept}: not finite"
        return
    info.slope, info.intercept = slope, intercept


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

def _read_nrrd(path: Path) -> VolumeHeader:
    parsed = read_nrrd_header(path)  # the readers' parser: LIST names kept apart
    header, lines = parsed.fields, parsed.lines
    info = VolumeHeader(path, "nrrd", lines[0].strip() if lines else "NRRD")
    sizes = [int(v) for v in np.atleast_1d(header.get("sizes", []))]
    if any(size < 1 for size in sizes):
        info.problem = f"sizes {sizes}: no voxels (convert refuses it)"
    type_name = str(header.get("type", "")).strip().lower()
    code = NRRD_TYPES.get(type_name)
    itemsize = np.dtype(code).itemsize if code else None
    info.dtype = np.dtype(code).name if code else type_name
    space = str(header.get("space", "")).strip().lower()
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    affine, spatial = nrrd_geometry(header)
    others = [i for i in range(len(sizes)) if i not in spatial]
    info.shape = tuple(sizes[i] for i in spatial) + tuple(sizes[i] for i in others) \
        if len(spatial) == 3 else tuple(sizes)
    if affine is not None:
        info.affine, info.affine_source = affine, "space directions"
        info.spatial_unit = ",".join(header.get("space units", [])) or "mm"
        _check_affine(info)
    elif len(sizes) < 3 or (space in SPACE_SIGNS and len(spatial) != 3):
        info.unsupported = (f"{len(sizes)}D NRRD" if len(sizes) < 3
                            else f"NRRD with {len(spatial)} spatial axes of {len(sizes)}")
    encoding = str(header.get("encoding", "raw")).lower()
    info.fields.update({"space": space, "encoding": encoding, "kinds": " ".join(kinds),
                        "content": str(header.get("content", ""))})
    info.header = {key: _plain(value) for key, value in header.items()}
    _nrrd_identifiers(lines, info)
    nbytes = _data_bytes(sizes, itemsize) if itemsize else None
    info.size = _nrrd_size(path, parsed, nbytes, encoding, info)
    return info


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


def _nrrd_size(path: Path, parsed, nbytes: int | None, encoding: str,
               info: VolumeHeader) -> SizeCheck:
    header = parsed.fields
    start = parsed.data_offset
    target = path
    if parsed.data_entry:
        found, why = _data_file(path, parsed.data_entry, parsed.listed, nbytes, info)
        if found is None:
            return why
        target, start = found, 0
    if nbytes is None:
        return SizeCheck("unchecked", None, None, "unknown type")
    line_skip = int(header.get("line skip", header.get("lineskip", 0)) or 0)
    if line_skip > 0:
        if line_skip > target.stat().st_size - start:
            return SizeCheck("truncated", nbytes, None,
                             f"line skip {line_skip} is more than the file holds")
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


def _data_file(path: Path, entry: str, listed: list[str], nbytes: int | None,
               info: VolumeHeader) -> tuple[Path | None, SizeCheck]:
    """(the one data file to size-check, or None and the SizeCheck that says why not).

    Every file a LIST or pattern names is located (formats.detached.locate): one
    outside the header's folder, or not a regular file, makes the status 'external'
    (nothing outside is stat'ed); the files found are this volume's sidecars.
    """
    try:
        names = data_file_names(entry, listed)
    except InputError as exc:
        return None, SizeCheck("unchecked", nbytes, None, exc.message)
    located = [(name, *locate(path, name)) for name in names]
    refused = [(name, problem) for name, _, problem in located
               if problem and problem != "missing"]
    if refused:
        name, problem = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        return None, SizeCheck("external", nbytes, None,
                               f"data file {name!r} is {problem}{more}: not read")
    missing = [name for name, _, problem in located if problem == "missing"]
    info.data_files.extend(target for _, target, problem in located if not problem)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return None, SizeCheck("missing", nbytes, None, f"data file {missing[0]} not found{more}")
    if len(located) > 1:
        return None, SizeCheck("unchecked", nbytes, None, f"{len(located)} data files")
    return located[0][1], SizeCheck("unchecked")


# ------------------------------------------------------------------------------------------
# MetaImage

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
    if "ndims" not in lower or "elementdatafile" not in lower:  # sniffed by its name only
        raise ValueError("not a MetaImage header (no NDims or ElementDataFile)")
    ndims = int(lower.get("ndims", "0"))
    sizes = [int(v) for v in lower.get("dimsize", "").split()]
    channels = int(lower.get("elementnumberofchannels", "1") or 1)
    info.shape = tuple(sizes) + ((channels,) if channels > 1 else ())
    element = lower.get("elementtype", "").upper()
    info.dtype = np.dtype(MET_TYPES[element]).name if element in MET_TYPES else element.lower()
    info.header = dict(fields)
    if ndims != 3 or len(sizes) != 3:
        info.unsupported = f"{ndims}D MetaImage"
    else:
        info.affine, info.affine_source = metaimage_affine(parsed), "TransformMatrix"
        info.spatial_unit = "mm"
        _check_affine(info)
    info.fields.update({"compressed": lower.get("compresseddata", "False"),
                        "anatomical_orientation": lower.get("anatomicalorientation", "")})
    for key, value in fields.items():
        if key.lower() in ("comment", "name") or key.lower() not in _MET_KEYS:
            found = key_value_identifiers(key, value)
            if found:
                info.identifying[key] = found
    itemsize = np.dtype(MET_TYPES[element]).itemsize if element in MET_TYPES else None
    nbytes = _data_bytes(sizes, itemsize) * channels if itemsize and sizes else None
    info.size = _metaimage_size(path, lower, header_length, nbytes, info, parsed.listed)
    return info


def _metaimage_size(path: Path, lower: dict[str, str], header_length: int,
                    nbytes: int | None, info: VolumeHeader, listed: list[str]) -> SizeCheck:
    name = lower.get("elementdatafile", "")
    target, start = path, header_length
    if name.upper() != "LOCAL":
        found, why = _data_file(path, name, listed, nbytes, info)
        if found is None:
            return why
        target, start = found, 0
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
    if compression == "gzip" and not gzip_can_hold(size - start, expected):
        return SizeCheck("truncated", expected, None,
                         f"{size - start} bytes of gzip data cannot hold it")
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
    """(decompressed bytes, stream complete?, error) without keeping the data, counted by
    formats.compressed (concatenated members followed, checksums verified)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            return stream_length(handle, compression, limit), True, ""
    except EndedEarly as exc:
        return exc.total, False, ""
    except StreamError as exc:
        return exc.total, False, str(exc)
    except OSError as exc:
        return 0, False, exception_reason(exc, 120)


def _data_bytes(shape: Any, itemsize: int | None) -> int:
    return int(math.prod(int(v) for v in shape)) * int(itemsize or 0)


# ------------------------------------------------------------------------------------------
# Small helpers


def _check_affine(info: VolumeHeader) -> None:
    """A non-finite or degenerate affine is a problem of the header (the readers refuse it):
    reported as such, and kept from the geometry checks and the pairing."""
    why = "" if info.affine is None else affine_problem(info.affine)
    if why:
        info.problem = f"the {info.affine_source} {why}"
        info.affine = None


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
