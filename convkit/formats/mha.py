"""MetaImage (.mha / .mhd) <-> Volume: voxels through SimpleITK, geometry from the header.

The text header is parsed here once (read_metaimage_header, metaimage_affine) for the
reader and the audit alike; LPS on disk, RAS in convkit.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convkit.errors import InputError, RefusedError, exception_reason
from convkit.formats.compressed import (
    data_read_errors,
    gzip_can_hold,
    read_decompressed,
    read_exact,
)
from convkit.formats.detached import checked_data_files, several_data_files
from convkit.formats.itk import native_stderr_captured, sitk_image
from convkit.formats.nrrd import compact_real_values
from convkit.geometry import affine_problem, lps_to_ras
from convkit.volume import Volume, check_volume_bytes

#: Header bytes read at most (a MetaImage text header is a few hundred bytes; a LIST of
#: data files adds a name per line).
MAX_HEADER_BYTES = 1 << 20
#: MetaImage element types -> numpy type codes (MET_LONG is 32-bit in MetaIO).
MET_TYPES = {"MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2",
             "MET_INT": "i4", "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4",
             "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4",
             "MET_DOUBLE": "f8"}


@dataclass
class MetaImageHeader:
    """The key = value lines of a MetaImage header, up to ElementDataFile (the last key)."""

    fields: dict[str, str]  # as written, in order
    length: int  # bytes of header text: where ElementDataFile = LOCAL data start
    listed: list[str] = field(default_factory=list)  # the names after ElementDataFile = LIST

    def get(self, *keys: str) -> str:
        """The value of the first of keys present (case-insensitive), or ''."""
        lower = {key.lower(): value for key, value in self.fields.items()}
        return next((lower[key.lower()] for key in keys if key.lower() in lower), "")


def read_metaimage_header(path: Path) -> MetaImageHeader:
    """Parse the text header of a .mha / .mhd file (never its data)."""
    with open(path, "rb") as handle:
        head = handle.read(MAX_HEADER_BYTES)
    fields: dict[str, str] = {}
    length = 0
    lines = io.BytesIO(head)
    for raw_line in lines:
        length += len(raw_line)
        line = raw_line.decode("latin-1").strip()
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        fields[key] = value
        if key.lower() == "elementdatafile":
            break
    parsed = MetaImageHeader(fields, length)
    if parsed.get("ElementDataFile").split()[:1] == ["LIST"]:
        parsed.listed = [name for raw in lines if (name := raw.decode("latin-1").strip())]
    return parsed


class NonFiniteGeometry(ValueError):
    """A MetaImage geometry field holds inf or NaN (the message names it)."""


def metaimage_affine(header: MetaImageHeader) -> np.ndarray:
    """RAS affine of a 3D MetaImage header, read as ITK reads it (LPS on disk).

    Row n of TransformMatrix (or Rotation, Orientation) is the direction of voxel
    axis n; spacing is ElementSpacing (or ElementSize); the origin is Offset (or
    Position, Origin). Missing keys mean identity, unit spacing and zero origin.
    Raises ValueError for a field that is not numbers, NonFiniteGeometry for inf/NaN.
    """
    spacing = _numbers(header, ("ElementSpacing", "ElementSize"), "1 1 1", 3)
    rows = _numbers(header, ("TransformMatrix", "Rotation", "Orientation"),
                    "1 0 0 0 1 0 0 0 1", 9).reshape(3, 3)
    origin = _numbers(header, ("Offset", "Position", "Origin"), "0 0 0", 3)
    lps = np.eye(4)
    lps[:3, :3] = rows.T * spacing
    lps[:3, 3] = origin
    return lps_to_ras(lps)


def _numbers(header: MetaImageHeader, keys: tuple[str, ...], default: str, count: int
             ) -> np.ndarray:
    key = next((key for key in keys if header.get(key)), keys[0])
    text = header.get(key) or default
    values = np.array([float(v) for v in text.split()])
    if values.size != count:
        raise ValueError(f"expected {count} numbers, found {values.size} in {text!r}")
    if not np.all(np.isfinite(values)):
        raise NonFiniteGeometry(f"{key} is not finite ({text[:80]!r})")
    return values


@dataclass(frozen=True)
class MetaImageLayout:
    """What a checked 3D MetaImage header describes."""

    affine: np.ndarray  # RAS
    shape: tuple[int, ...]  # (k, j, i[, c]): the order of the bytes on disk
    dtype: np.dtype  # with the header's byte order

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


def read_mha(path: Path, allow_external_data: bool = False,
             max_bytes: int | None = None) -> Volume:
    """Voxels and RAS affine of a .mha / .mhd (geometry by metaimage_affine, as the audit).

    The header is checked before any data is read: the data files (formats.detached),
    the size (max_bytes, default volume.MAX_VOLUME_BYTES), HeaderSize and the geometry.
    Binary data in one file (LOCAL or a data file, raw or zlib) are read here, the zlib
    stream to its end (Adler-32 checked); a LIST or pattern of files and ASCII data go
    through SimpleITK.
    """
    header = read_metaimage_header(path)
    layout = _checked_header(path, header, max_bytes)
    entry = header.get("ElementDataFile")
    target, start = path, header.length
    if entry.upper() != "LOCAL":
        targets = checked_data_files(path, entry, header.listed, allow_external_data)
        target, start = targets[0], 0
    if several_data_files(entry) and header.get("CompressedData").lower() == "true":
        raise RefusedError(f"{path}: compressed MetaImage data split over several files "
                           f"({entry!r})", "convkit reads compressed data from one file: merge "
                           "the files with ITK first")
    if several_data_files(entry) or header.get("BinaryData").lower() == "false":
        array = _read_with_itk(path)
    else:
        array = _read_elements(path, target, start, header, layout)
        array = array.astype(array.dtype.newbyteorder("="), copy=False)
    array = np.moveaxis(array, (0, 1, 2), (2, 1, 0)) if array.ndim == 4 else array.T
    return Volume(np.asfortranarray(array), layout.affine, metadata={"Format": "MetaImage"})


def _read_elements(path: Path, target: Path, start: int, header: MetaImageHeader,
                   layout: MetaImageLayout) -> np.ndarray:
    """The (k, j, i[, c]) array of binary data in one file, as MetaIO reads it: HeaderSize
    bytes from the start of the data file skipped (-1: the data are its last bytes)."""
    nbytes = layout.nbytes
    compressed = header.get("CompressedData").lower() == "true"
    try:
        skip = int(header.get("HeaderSize") or 0)
        declared = int(header.get("CompressedDataSize") or 0)
    except ValueError as exc:
        raise InputError(f"{path}: bad MetaImage header ({exc})",
                         "HeaderSize and CompressedDataSize are integers") from exc
    with data_read_errors(path, "MetaImage"), open(target, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        start = skip if skip > 0 else size - nbytes if skip == -1 else start
        if skip < -1 or (skip == -1 and compressed) or not 0 <= start <= size:
            raise InputError(f"{path}: cannot read MetaImage: HeaderSize {skip} (the data "
                             f"would start beyond the {size} bytes of {target.name})",
                             "fix HeaderSize: the bytes to skip, or -1 for the last bytes")
        handle.seek(start)
        if not compressed:
            raw = read_exact(handle, nbytes)
        elif declared > size - start or not gzip_can_hold(size - start, nbytes):
            raise InputError(f"{path}: cannot read MetaImage: truncated ({size - start} "
                             f"compressed bytes for {nbytes} bytes of data)",
                             "the file is incomplete: copy or export it again")
        else:
            raw = read_decompressed(handle, "zlib", nbytes, extra_ok=True)
    return np.ndarray(layout.shape, layout.dtype, buffer=raw)


def _read_with_itk(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    with native_stderr_captured() as printed:  # MetaIO reports read errors on stderr only
        try:
            image = sitk.ReadImage(str(path))
            error = ""
        except RuntimeError as exc:
            error = exception_reason(exc, last=True)
    if error or printed:
        reason = "; ".join(printed[:2]) if printed else error
        raise InputError(f"{path}: cannot read MetaImage ({reason})",
                         "the file may be truncated or its data file missing")
    if image.GetDimension() != 3:
        raise RefusedError(f"{path}: {image.GetDimension()}D MetaImage is not supported",
                           "convkit reads 3D volumes (vector pixels allowed)")
    return sitk.GetArrayFromImage(image)  # (k, j, i[, c])


def _checked_header(path: Path, header: MetaImageHeader, max_bytes: int | None
                    ) -> MetaImageLayout:
    """The layout of a header that describes a 3D image convkit may read, else raise."""
    if not header.get("ElementDataFile"):
        raise InputError(f"{path}: not a MetaImage header (no ElementDataFile)",
                         "the file is damaged or not MetaImage")
    try:
        ndims = int(header.get("NDims") or 0)
        sizes = [int(v) for v in header.get("DimSize").split()]
        channels = int(header.get("ElementNumberOfChannels") or 1)
    except ValueError as exc:
        raise InputError(f"{path}: bad MetaImage header ({exc})",
                         "NDims, DimSize and ElementNumberOfChannels are integers") from exc
    if ndims != 3 or len(sizes) != 3:
        raise RefusedError(f"{path}: {ndims}D MetaImage is not supported",
                           "convkit reads 3D volumes (vector pixels allowed)")
    if min(sizes) < 1 or channels < 1:
        raise InputError(f"{path}: MetaImage DimSize {sizes} with {channels} channel(s): no "
                         "voxels to read", "every size must be 1 or more")
    element = header.get("ElementType").upper()
    if element not in MET_TYPES:
        raise InputError(f"{path}: MetaImage ElementType {element or 'missing'!r} is not "
                         "supported", f"one of {', '.join(MET_TYPES)}")
    msb = header.get("BinaryDataByteOrderMSB", "ElementByteOrderMSB").lower() == "true"
    dtype = np.dtype(MET_TYPES[element]).newbyteorder(">" if msb else "<")
    shape = tuple(reversed(sizes)) + ((channels,) if channels > 1 else ())
    check_volume_bytes(int(np.prod(shape, dtype=object)) * dtype.itemsize, str(path), max_bytes)
    try:
        affine = metaimage_affine(header)
    except NonFiniteGeometry as exc:
        raise RefusedError(f"{path}: the MetaImage {exc}",
                           "set Offset, ElementSpacing and TransformMatrix to real numbers") \
            from exc
    except (ValueError, OverflowError) as exc:
        raise InputError(f"{path}: bad MetaImage geometry ({exception_reason(exc)})",
                         "check TransformMatrix, ElementSpacing and Offset") from exc
    why = affine_problem(affine)
    if why:
        raise RefusedError(f"{path}: the MetaImage geometry (TransformMatrix, ElementSpacing) "
                           f"{why}", "set TransformMatrix and ElementSpacing from the image's "
                           "source")
    return MetaImageLayout(affine, shape, dtype)


def write_mha(volume: Volume, path: Path) -> None:
    """Real-world values (MetaImage has no slope/intercept) with LPS geometry."""
    import SimpleITK as sitk


    data = compact_real_values(volume)
    if volume.is_rgb:
        data = np.stack([data[channel] for channel in "RGB"], axis=-1)  # (i, j, k, 3)
    image = sitk_image(data, volume.affine, vector=data.ndim == 4)
    sitk.WriteImage(image, str(path), useCompression=True)
