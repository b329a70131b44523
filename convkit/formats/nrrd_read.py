"""NRRD (.nrrd attached, .nhdr detached) -> Volume, honouring the file's own `space`.

pynrrd converts nothing: a RAS-space NRRD and an LPS-space NRRD of the same image
have opposite x and y directions in their headers. Both become the same RAS affine
here. Non-spatial axes (RGB, a list of time points or components) must come first
(as ITK and Slicer write them) or last; they end up last (i, j, k, t).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from convkit.errors import InputError, RefusedError, exception_reason
from convkit.formats.compressed import (
    data_read_errors,
    gzip_can_hold,
    read_decompressed,
    read_exact,
)
from convkit.formats.detached import checked_data_files, several_data_files
from convkit.geometry import affine_problem
from convkit.volume import RGB_DTYPE, Volume, check_volume_bytes

#: NRRD spaces -> sign of x, y, z relative to RAS.
SPACE_SIGNS = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
    "scanner-xyz": (1, 1, 1),
}
#: NRRD type names (as pynrrd reads them) -> numpy type codes (byte order from 'endian').
NRRD_TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t"), "i1"),
    **dict.fromkeys(("uchar", "unsigned char", "uint8", "uint8_t"), "u1"),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16",
                     "int16_t"), "i2"),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
                    "u2"),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t"), "i4"),
    **dict.fromkeys(("uint", "unsigned int", "uint32", "uint32_t"), "u4"),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long",
                     "signed long long int", "int64", "int64_t"), "i8"),
    **dict.fromkeys(("ulonglong", "unsigned long long", "unsigned long long int", "uint64",
                     "uint64_t"), "u8"),
    "float": "f4", "double": "f8",
}
#: Header bytes read at most: a NRRD header is text (a detached LIST header holds one
#: file name per line).
MAX_HEADER_BYTES = 1 << 20
#: Characters of ASCII-encoded data allowed per value (digits, sign, exponent, separator).
ASCII_CHARS_PER_VALUE = 64
_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2",
              "ascii": "ascii", "text": "ascii", "txt": "ascii"}
_DATA_FILE_KEYS = ("data file", "datafile")
_CHUNK = 1 << 20


@dataclass
class NrrdHeader:
    """The text header of a NRRD file (attached or detached) and its parsed fields."""

    fields: dict[str, Any]  # parsed by pynrrd
    lines: list[str] = field(default_factory=list)  # magic line, fields and comments
    data_offset: int = 0  # where attached data start (bytes)
    data_entry: str = ""  # the 'data file' value ('' when the data are attached)
    listed: list[str] = field(default_factory=list)  # the names after 'data file: LIST'


def read_nrrd_header(path: Path) -> NrrdHeader:
    """Parse the header of a .nrrd / .nhdr file, never its data (pynrrd's parser, fed only
    the header lines: the names of a LIST data file are kept apart)."""
    import nrrd

    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES + 1)
    lines, offset, complete = _header_lines(head)
    if not complete and len(head) > MAX_HEADER_BYTES:
        raise InputError(f"{path}: the NRRD header is longer than {MAX_HEADER_BYTES} bytes "
                         "(no blank line ends it)", "the file is damaged or not NRRD")
    listed: list[str] = []
    for index, line in enumerate(lines):
        key, _, value = line.partition(":")
        if key.strip().lower() in _DATA_FILE_KEYS and value.split()[:1] == ["LIST"]:
            lines, listed = lines[:index + 1], lines[index + 1:]
            break
    try:
        with np.errstate(all="ignore"):  # pynrrd casts inf/NaN to int: checked below instead
            fields = nrrd.read_header(lines)
    except Exception as exc:  # pynrrd raises its own errors and ValueError for bad fields
        raise InputError(f"{path}: cannot read NRRD header ({exception_reason(exc)})",
                         "the file is damaged or not NRRD") from exc
    entry = next((str(fields[key]) for key in _DATA_FILE_KEYS if fields.get(key)), "")
    return NrrdHeader(dict(fields), lines, offset, entry.strip(), listed)


def _header_lines(head: bytes) -> tuple[list[str], int, bool]:
    """(lines, bytes up to the data, ended by a blank line?), as pynrrd splits a header.

    head: the first MAX_HEADER_BYTES + 1 bytes of the file (all of it when shorter).
    """
    lines: list[str] = []
    offset = 0
    cut = len(head) > MAX_HEADER_BYTES
    for raw in io.BytesIO(head):
        if cut and not raw.endswith(b"\n"):
            break  # the last line read is cut off
        offset += len(raw)
        text = raw.decode("latin-1").rstrip()
        if not text and lines:
            return lines, offset, True
        lines.append(text)
    return lines, offset, False


def read_nrrd(path: Path, allow_external_data: bool = False,
              max_bytes: int | None = None) -> Volume:
    """Stored values and RAS affine of an NRRD file (3D, or 3D plus one non-spatial axis).

    The header is checked before any data is read: the data file (formats.detached),
    the size (max_bytes, default volume.MAX_VOLUME_BYTES), skips, and the geometry.
    """
    parsed = read_nrrd_header(path)
    header = parsed.fields
    sizes, dtype = nrrd_layout(header, path)
    check_volume_bytes(math.prod(sizes) * dtype.itemsize, str(path), max_bytes)
    space = str(header.get("space", "")).strip().lower()
    if space not in SPACE_SIGNS or "space directions" not in header:
        raise RefusedError(f"{path}: NRRD without a 3D patient space (space: {space or 'none'})",
                           "only NRRDs with 'space' and 'space directions' have a world geometry")
    try:
        affine, spatial = nrrd_geometry(header)
    except (ValueError, TypeError, IndexError) as exc:
        raise InputError(f"{path}: bad NRRD geometry ({exception_reason(exc)})",
                         "check 'space directions' and 'space origin'") from exc
    ndim = len(sizes)
    if len(header["space directions"]) != ndim:
        raise InputError(f"{path}: {len(header['space directions'])} space directions for "
                         f"{ndim} axes", "give one direction (or none) per axis")
    leading = spatial == list(range(ndim - 3, ndim))
    if affine is None or ndim > 4 or not (leading or spatial == [0, 1, 2]):
        raise RefusedError(f"{path}: {len(spatial)} spatial axes of {ndim} (convkit reads "
                           "3D volumes with one optional list, time or RGB axis)")
    why = affine_problem(affine)
    if why:
        origin_only = np.all(np.isfinite(affine[:3, :3])) and \
            not np.all(np.isfinite(affine[:3, 3]))
        what = "space origin" if origin_only else "space directions"
        raise RefusedError(f"{path}: the NRRD's {what} {why}",
                           "set 'space origin' and 'space directions' to real numbers, with "
                           "directions of non-zero length in three directions")
    data = _read_data(path, parsed, sizes, dtype, allow_external_data)
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    array = _move_components_last(data, kinds) if leading else data
    metadata = {"Format": "NRRD", "space": space,
                "kinds": kinds, "encoding": str(header.get("encoding", ""))}
    return Volume(np.asfortranarray(array), affine, metadata=metadata)


def nrrd_layout(header: dict, path: Path) -> tuple[list[int], np.dtype]:
    """(sizes, numpy dtype) of the data an NRRD header describes; InputError when it
    describes none (sizes below 1, an unknown type, a missing endian)."""
    try:
        sizes = [int(v) for v in np.atleast_1d(header.get("sizes", []))]
        dimension = int(header.get("dimension", len(sizes)))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{path}: NRRD sizes are not integers ({exception_reason(exc)})",
                         "the header is damaged") from exc
    if not sizes or dimension != len(sizes) or min(sizes) < 1:
        raise InputError(f"{path}: NRRD sizes {sizes} (dimension {dimension}): no voxels to read",
                         "every size must be 1 or more, one per dimension")
    type_name = str(header.get("type", "")).strip().lower()
    if type_name not in NRRD_TYPES:
        raise InputError(f"{path}: NRRD type {type_name or 'none'!r} is not supported",
                         f"one of {', '.join(sorted(set(NRRD_TYPES)))}")
    code = NRRD_TYPES[type_name]
    encoding = str(header.get("encoding", "")).strip().lower()
    if code[1] != "1" and _ENCODINGS.get(encoding) != "ascii":
        endian = str(header.get("endian", "")).strip().lower()
        if endian not in ("little", "big"):
            raise InputError(f"{path}: NRRD endian {endian or 'missing'!r} (type {type_name})",
                             "set 'endian: little' or 'endian: big'")
        code = ("<" if endian == "little" else ">") + code
    return sizes, np.dtype(code)


def _read_data(path: Path, parsed: NrrdHeader, sizes: list[int], dtype: np.dtype,
               allow_external: bool) -> np.ndarray:
    header = parsed.fields
    encoding = _ENCODINGS.get(str(header.get("encoding", "")).strip().lower())
    if encoding is None:
        raise InputError(f"{path}: NRRD encoding {header.get('encoding')!r} is not supported",
                         "raw, gzip, bzip2 or ascii")
    target, start = path, parsed.data_offset
    if parsed.data_entry:
        targets = checked_data_files(path, parsed.data_entry, parsed.listed, allow_external)
        if len(targets) > 1 or several_data_files(parsed.data_entry):
            raise InputError(f"{path}: NRRD data in {len(targets)} files ({parsed.data_entry}) "
                             "is not supported", "join the data into one file")
        target, start = targets[0], 0
    line_skip = _skip_value(header, ("line skip", "lineskip"), path, 0)
    byte_skip = _skip_value(header, ("byte skip", "byteskip"), path, -1)
    count = math.prod(sizes)
    nbytes = count * dtype.itemsize
    with data_read_errors(path, "NRRD"), open(target, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek(start)
        _skip_lines(handle, line_skip, size - start, path)
        if encoding == "raw":
            raw = _read_raw(handle, byte_skip, nbytes, size, path, dtype.itemsize)
        elif encoding == "ascii":
            return _read_ascii(handle, byte_skip, count, dtype, sizes, path)
        else:
            available = size - handle.tell()
            if encoding == "gzip" and not gzip_can_hold(available, max(byte_skip, 0) + nbytes):
                raise InputError(f"{path}: cannot read NRRD: {available} bytes of gzip data "
                                 f"cannot hold the {nbytes} bytes its header describes",
                                 "the file is truncated or its sizes are damaged")
            raw = read_decompressed(handle, encoding, nbytes, byte_skip)
    return np.ndarray(tuple(sizes), dtype, buffer=raw, order="F")


def _skip_value(header: dict, keys: tuple[str, str], path: Path, lowest: int) -> int:
    value = next((header[key] for key in keys if key in header), 0)
    try:
        skip = int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{path}: NRRD {keys[0]} {value!r} is not an integer",
                         "fix the header") from exc
    if skip < lowest:
        raise InputError(f"{path}: cannot read NRRD: Invalid {keys[0].replace(' ', '')} {skip} "
                         f"(at least {lowest})", "fix the header")
    return skip


def _skip_lines(handle: IO[bytes], lines: int, available: int, path: Path) -> None:
    """Move past `line skip` lines, refusing more lines than the file has bytes."""
    if lines > available:
        raise InputError(f"{path}: cannot read NRRD: line skip {lines} is more than the file "
                         f"holds ({available} bytes)", "fix the header's line skip")
    while lines:
        chunk = handle.read(_CHUNK)
        if not chunk:
            raise InputError(f"{path}: cannot read NRRD: line skip: the file ends {lines} "
                             "line(s) early",
                             "fix the header's line skip")
        end = -1
        while lines and (end := chunk.find(b"\n", end + 1)) >= 0:
            lines -= 1
        if not lines:
            handle.seek(end + 1 - len(chunk), os.SEEK_CUR)


def _read_raw(handle: IO[bytes], byte_skip: int, nbytes: int, size: int, path: Path,
              itemsize: int) -> np.ndarray:
    """The raw bytes of the data: exactly nbytes (less than one value more is ignored, as
    pynrrd ignores it: a final newline)."""
    here = handle.tell()
    start = size - nbytes if byte_skip == -1 else here + byte_skip
    available = size - start
    if start < here or available < nbytes or available - nbytes >= itemsize:
        found = max(size - here - max(byte_skip, 0), 0)
        raise InputError(f"{path}: cannot read NRRD: Size of the data does not equal what its "
                         f"header describes ({found} bytes for {nbytes})",
                         "the file is incomplete, or its sizes, type or byte skip are wrong")
    handle.seek(start)
    return read_exact(handle, nbytes)


def _read_ascii(handle: IO[bytes], byte_skip: int, count: int, dtype: np.dtype,
                sizes: list[int], path: Path) -> np.ndarray:
    if byte_skip > 0:
        handle.seek(byte_skip, os.SEEK_CUR)
    limit = count * ASCII_CHARS_PER_VALUE + _CHUNK
    text = handle.read(limit + 1)
    if len(text) > limit:
        raise InputError(f"{path}: cannot read NRRD: more ASCII data than {count} values can take",
                         "check the header's sizes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (and stops) at text that is no number
        try:
            values = np.fromstring(text.decode("latin-1"), dtype=dtype, sep=" ")
        except (ValueError, DeprecationWarning) as exc:
            raise InputError(f"{path}: cannot read NRRD: ASCII data that are not numbers "
                             f"({exception_reason(exc)})", "the file is damaged") from exc
    if values.size != count:
        raise InputError(f"{path}: cannot read NRRD: ASCII data hold {values.size} of the "
                         f"{count} values its header describes",
                         "the file is incomplete or its sizes are wrong")
    return values.reshape(tuple(sizes), order="F")


def nrrd_geometry(header: dict) -> tuple[np.ndarray | None, list[int]]:
    """(RAS affine, or None without a 3D patient space; indices of the spatial axes).

    The affine is built from 'space directions' (one row per spatial axis, in the
    file's space) and 'space origin' (zero when absent), with the signs of the
    header's own space. Axes whose direction is 'none' are not spatial.
    """
    space = str(header.get("space", "")).strip().lower()
    directions = header.get("space directions")
    if directions is None:
        return None, []
    directions = np.asarray(directions, dtype=float)
    spatial = [i for i, row in enumerate(directions) if not np.all(np.isnan(row))]  # not 'none'
    if space not in SPACE_SIGNS or len(spatial) != 3:
        return None, spatial
    signs = np.array(SPACE_SIGNS[space], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = (directions[spatial] * signs).T
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float).reshape(3)
    affine[:3, 3] = origin * signs
    return affine, spatial


def _move_components_last(data: np.ndarray, kinds: list[str]) -> np.ndarray:
    if data.ndim == 3:
        return data
    if data.ndim == 4 and kinds and kinds[0] in ("rgb-color", "rgb") and data.shape[0] == 3:
        rgb = np.empty(data.shape[1:], dtype=RGB_DTYPE, order="F")
        for channel, name in enumerate("RGB"):
            rgb[name] = data[channel]
        return rgb
    if data.ndim == 4:
        return np.moveaxis(data, 0, 3)
    raise RefusedError(f"NRRD with {data.ndim} dimensions is not supported")
