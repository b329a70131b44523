"""Volume -> NRRD (.nrrd attached, .nhdr detached), in LPS space.

NRRD has no slope/intercept, so real-world values are written, in the smallest
type that holds them exactly, computed a slab at a time (a whole float64 copy of a
CT would take eight times its size). The header is written as pynrrd writes it
(field order, numbers to 17 significant digits) without its timestamp comment, so
that the same volume gives the same file; the gzip data go through formats.deflate
(ISA-L on every core) and are hashed as they are written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from convkit import __version__
from convkit.errors import RefusedError
from convkit.formats.deflate import gzip_bytes, worker_count
from convkit.formats.output import hashed_file
from convkit.geometry import lps_to_ras
from convkit.volume import Volume

_INTEGER_TYPES = [np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32",
                                        "int64")]
#: Voxels turned into real values at a time (a 16 MiB float64 slab).
SLAB_VOXELS = 2 << 20
#: Whole numbers up to this size are exact in float64 (so in the general path too).
_EXACT_INTEGERS = 2**53
#: numpy type -> NRRD type name.
NRRD_TYPE_NAMES = {"i1": "int8", "u1": "uint8", "i2": "int16", "u2": "uint16", "i4": "int32",
                   "u4": "uint32", "i8": "int64", "u8": "uint64", "f4": "float", "f8": "double"}
#: The fields written, in pynrrd's order.
_FIELD_ORDER = ("type", "dimension", "space", "sizes", "space directions", "kinds", "endian",
                "encoding", "content", "space origin", "data file")


def compact_real_values(volume: Volume) -> np.ndarray:
    """Real-world values in the smallest dtype that holds them exactly (Fortran order):
    an integer type when every value is a whole number one of them holds, else float32
    when it holds them all, else float64. Stored * slope + intercept in float64, a slab
    of the last axis at a time."""
    if volume.is_rgb or not volume.scaled:
        return volume.array
    integral = _integer_real_values(volume)
    if integral is not None:
        return integral
    slope, intercept = np.float64(volume.slope), np.float64(volume.intercept)
    whole, single = volume.array.size > 0, True
    low, high = np.inf, -np.inf
    for part in _slabs(volume.array):
        real = _real(part, slope, intercept)
        if real.size:
            whole = whole and np.array_equal(real, np.rint(real))
            single = single and np.array_equal(real.astype(np.float32), real)
            low, high = min(low, real.min()), max(high, real.max())
    integer = next((t for t in _INTEGER_TYPES if whole and np.iinfo(t).min <= low
                    and high <= np.iinfo(t).max), None)
    dtype = integer if integer is not None else np.dtype(np.float32 if single else np.float64)
    out = np.empty(volume.array.shape, dtype=dtype, order="F")
    for part, target in zip(_slabs(volume.array), _slabs(out), strict=True):
        target[...] = _real(part, slope, intercept)
    return out


def _integer_real_values(volume: Volume) -> np.ndarray | None:
    """compact_real_values of integer stored values with a whole slope and intercept (a CT's
    1 and -1024), in integer arithmetic: the same values and type, without the float passes
    (every real value is then a whole number, and the extremes are the stored ones'). None
    when that does not apply."""
    array = volume.array
    slope, intercept = volume.slope, volume.intercept
    if array.dtype.kind not in "iu" or not array.size or not float(slope).is_integer() \
            or not float(intercept).is_integer():
        return None
    ends = [int(array.min()) * int(slope) + int(intercept),
            int(array.max()) * int(slope) + int(intercept)]
    low, high = min(ends), max(ends)
    if max(abs(low), abs(high)) >= _EXACT_INTEGERS:
        return None
    dtype = next(t for t in _INTEGER_TYPES if np.iinfo(t).min <= low and high <= np.iinfo(t).max)
    out = np.empty(array.shape, dtype=dtype, order="F")
    for part, target in zip(_slabs(array), _slabs(out), strict=True):
        real = part.astype(np.int64)
        real *= int(slope)
        real += int(intercept)
        target[...] = real
    return out


def _slabs(array: np.ndarray) -> Iterator[np.ndarray]:
    """Views of a Fortran-ordered array along its last axis, about SLAB_VOXELS each."""
    last = array.shape[-1] if array.ndim else 1
    step = max(1, SLAB_VOXELS // max(1, array.size // max(last, 1)))
    for start in range(0, last, step):
        yield array[..., start:start + step]


def _real(part: np.ndarray, slope: np.float64, intercept: np.float64) -> np.ndarray:
    real = part.astype(np.float64)
    real *= slope
    real += intercept
    return real


def nrrd_header(volume: Volume, data: np.ndarray) -> dict:
    """The header fields: space LPS, directions and origin from the affine, gzip encoding."""
    lps = lps_to_ras(volume.affine)
    spatial = lps[:3, :3].T  # one row per axis i, j, k
    header = {
        "space": "left-posterior-superior",
        "encoding": "gzip",
        "space origin": lps[:3, 3],
    }
    # Non-spatial axes come first (RGB channels, or time points as a 'list'), as
    # ITK expects: it reads them as vector components of a 3D image.
    kinds = ["RGB-color" if volume.is_rgb else "list"] * (data.ndim - 3) + ["domain"] * 3
    directions = [np.full(3, np.nan)] * (data.ndim - 3) + [row for row in spatial]
    header["kinds"] = kinds
    header["space directions"] = np.array(directions)
    if volume.metadata.get("Modality"):
        header["content"] = f"{volume.metadata['Modality']} converted by convkit"
    return header



def write_nrrd(volume: Volume, path: Path) -> None:
    """Write volume to path: .nrrd (attached) or .nhdr (+ .raw.gz beside it)."""
    if path.suffix == ".nhdr" and not path.name.isascii():
        raise RefusedError(f"{path.name}: a detached NRRD header names its data file in ASCII "
                           "text, and this name is not ASCII",
                           "use --format nrrd (one file), or --name with ASCII-only fields",
                           "volume.name-not-ascii")
    data = nrrd_data(volume)
    header = nrrd_header(volume, data)
    threaded = worker_count() > 1
    voxels = data.reshape(-1, order="F").view(np.uint8).data
    if path.suffix == ".nhdr":
        data_file = path.with_name(path.stem + ".raw.gz")
        header["data file"] = data_file.name
        with hashed_file(data_file, threaded) as handle:
            gzip_bytes(handle, b"", voxels)
        with hashed_file(path, threaded) as handle:
            handle.write(header_text(header, data).encode("ascii"))
        return
    with hashed_file(path, threaded) as handle:
        handle.write(header_text(header, data).encode("ascii"))
        gzip_bytes(handle, b"", voxels)


def nrrd_data(volume: Volume) -> np.ndarray:
    """The array NRRD stores, Fortran-ordered: real values (compact_real_values); RGB as
    (3, i, j, k), the channels first; 4D as (t, i, j, k), the time points first (ITK reads
    those first axes as the components of a 3D image)."""
    data = compact_real_values(volume)
    if volume.is_rgb:
        channels = np.empty((3, *data.shape), dtype=np.uint8, order="F")
        for index, channel in enumerate("RGB"):
            channels[index] = data[channel]
        return channels
    if data.ndim == 4:
        return np.asfortranarray(np.moveaxis(data, 3, 0))
    return data


def header_text(header: dict, data: np.ndarray) -> str:
    """The NRRD header of data with the fields of nrrd_header, as pynrrd formats them."""
    fields = {"type": NRRD_TYPE_NAMES[f"{data.dtype.kind}{data.dtype.itemsize}"],
              "dimension": str(data.ndim), "sizes": " ".join(str(n) for n in data.shape)}
    if data.dtype.itemsize > 1:
        fields["endian"] = "little" if data.dtype.byteorder in "<=|" else "big"
    for name, value in header.items():
        if name == "space directions":
            value = " ".join("none" if np.all(np.isnan(row)) else _vector(row)
                             for row in value)
        elif name == "space origin":
            value = _vector(value)
        elif name == "kinds":
            value = " ".join(value)
        fields[name] = str(value)
    lines = ["NRRD0005", f"# written by convkit {__version__}",
             "# Complete NRRD file format specification at:",
             "# http://teem.sourceforge.net/nrrd/format.html"]
    lines += [f"{name}: {fields[name]}" for name in _FIELD_ORDER if name in fields]
    return "\n".join(lines) + "\n\n"


def _vector(values: np.ndarray) -> str:
    """(x,y,z), every number to 17 significant digits (as pynrrd's format_vector)."""
    return "(" + ",".join(f"{float(v):.17g}" for v in values) + ")"
