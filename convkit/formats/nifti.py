"""Volume -> NIfTI-1 (.nii / .nii.gz): the header encoded here, the data streamed.

The 348-byte header is built with numpy from the volume (header_block) rather than by
nibabel: importing nibabel imports pydicom and its pixel plugins (for DICOM header
extensions), a fifth of a conversion's start-up. The bytes are those nibabel's
Nifti1Header gives for the same calls (set_data_dtype, set_data_shape, set_qform and
set_sform with code 1, set_zooms, set_xyzt_units('mm', 'sec'), set_slope_inter), which
tests hold it to; to_nibabel reads nibabel's header from them.

The voxel bytes are written straight from the Fortran-ordered array (no copy)
through a fast deflate (ISA-L igzip) on every core (formats.deflate) instead of
CPython's zlib: compression is most of a conversion's time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit import __version__
from convkit.errors import RefusedError
from convkit.formats.deflate import DeflatingStream, gzip_bytes, worker_count, write_gzip
from convkit.formats.output import hashed_file
from convkit.geometry import affine_problem
from convkit.volume import RGB_DTYPE, Volume

_CHUNK_BYTES = 16 * 1024 * 1024
_VOX_OFFSET = 352  # 348-byte header + 4-byte extension flag
#: The NIfTI-1 header (348 bytes, little endian; NIfTI-1.1 field names).
HEADER_DTYPE = np.dtype([
    ("sizeof_hdr", "<i4"), ("data_type", "S10"), ("db_name", "S18"), ("extents", "<i4"),
    ("session_error", "<i2"), ("regular", "S1"), ("dim_info", "u1"), ("dim", "<i2", (8,)),
    ("intent_p1", "<f4"), ("intent_p2", "<f4"), ("intent_p3", "<f4"), ("intent_code", "<i2"),
    ("datatype", "<i2"), ("bitpix", "<i2"), ("slice_start", "<i2"), ("pixdim", "<f4", (8,)),
    ("vox_offset", "<f4"), ("scl_slope", "<f4"), ("scl_inter", "<f4"), ("slice_end", "<i2"),
    ("slice_code", "u1"), ("xyzt_units", "u1"), ("cal_max", "<f4"), ("cal_min", "<f4"),
    ("slice_duration", "<f4"), ("toffset", "<f4"), ("glmax", "<i4"), ("glmin", "<i4"),
    ("descrip", "S80"), ("aux_file", "S24"), ("qform_code", "<i2"), ("sform_code", "<i2"),
    ("quatern_b", "<f4"), ("quatern_c", "<f4"), ("quatern_d", "<f4"), ("qoffset_x", "<f4"),
    ("qoffset_y", "<f4"), ("qoffset_z", "<f4"), ("srow_x", "<f4", (4,)),
    ("srow_y", "<f4", (4,)), ("srow_z", "<f4", (4,)), ("intent_name", "S16"), ("magic", "S4"),
])
#: NIfTI datatype codes of the voxel types convkit writes (by numpy type, byte order aside).
DATATYPE_CODES = {
    "u1": 2, "i2": 4, "i4": 8, "f4": 16, "c8": 32, "f8": 64, "i1": 256, "u2": 512,
    "u4": 768, "i8": 1024, "u8": 1280, "c16": 1792,
}
_COLOUR_CODES = {RGB_DTYPE: 128, np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"),
                                            ("A", "u1")]): 2304}
#: dim[] is int16: the largest extent along one axis.
MAX_DIM = 32767
_XYZT_MM_SEC = 2 | 8  # NIFTI_UNITS_MM | NIFTI_UNITS_SEC


def header_block(volume: Volume) -> bytes:
    """The 348-byte NIfTI-1 header of a volume: qform and sform (codes 1) from its affine,
    pixdim, mm and s, scaling, descrip. RefusedError (exit 4) for what NIfTI-1 cannot hold."""
    check_float32_geometry(volume)
    header = np.zeros((), dtype=HEADER_DTYPE)
    header["sizeof_hdr"], header["magic"], header["vox_offset"] = 348, b"n+1", _VOX_OFFSET
    header["datatype"], header["bitpix"] = _datatype(volume.array.dtype)
    header["dim"] = _dims(volume.shape)
    qfac, quaternion, lengths = qform_parameters(volume.affine)
    zooms = list(volume.spacing) + [volume.repetition_time_s or 1.0] * (len(volume.shape) - 3)
    if any(zoom < 0 for zoom in zooms):
        raise RefusedError(f"negative voxel sizes {zooms}", "the source geometry is corrupt",
                           "volume.bad-geometry")
    header["pixdim"] = [qfac, *lengths, 1, 1, 1, 1]
    header["pixdim"][1:1 + len(zooms)] = zooms
    header["qform_code"] = header["sform_code"] = 1
    header["quatern_b"], header["quatern_c"], header["quatern_d"] = quaternion[1:]
    header["qoffset_x"], header["qoffset_y"], header["qoffset_z"] = volume.affine[:3, 3]
    header["srow_x"], header["srow_y"], header["srow_z"] = volume.affine[:3]
    header["xyzt_units"] = _XYZT_MM_SEC
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    if not volume.is_rgb:
        header["scl_slope"], header["scl_inter"] = volume.slope, volume.intercept
    header["descrip"] = describe(volume).encode()[:79]
    return header.tobytes()


def qform_parameters(affine: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(qfac, unit quaternion (w, x, y, z) with w >= 0, column lengths) of an affine's 3x3.

    The rotation is the orthogonal matrix closest to the direction cosines (their polar
    decomposition, by SVD: a qform cannot hold shears), its quaternion the eigenvector of
    the largest eigenvalue of Bar-Itzhack's symmetric 4x4 matrix, which tolerates
    rounding in the cosines. A left-handed frame has qfac -1 and its last column negated.
    """
    columns = np.array(affine[:3, :3], dtype=np.float64)
    lengths = np.sqrt(np.sum(columns * columns, axis=0))
    cosines = columns / lengths
    qfac = 1 if np.linalg.det(cosines) > 0 else -1
    if qfac < 0:
        cosines[:, -1] *= -1
    left, _, right = np.linalg.svd(cosines)
    rotation = np.dot(left, right)
    (xx, yx, zx), (xy, yy, zy), (xz, yz, zz) = rotation  # rows: x', y', z' of each axis
    symmetric = np.array([
        [xx - yy - zz, 0, 0, 0],
        [yx + xy, yy - xx - zz, 0, 0],
        [zx + xz, zy + yz, zz - xx - yy, 0],
        [yz - zy, zx - xz, xy - yx, xx + yy + zz]]) / 3.0
    values, vectors = np.linalg.eigh(symmetric)  # reads the lower triangle
    quaternion = vectors[[3, 0, 1, 2], np.argmax(values)]
    if quaternion[0] < 0:
        quaternion = quaternion * -1
    return qfac, quaternion, lengths


def data_dtype(code: int) -> np.dtype | None:
    """The little-endian voxel type of a NIfTI datatype code convkit knows (None: another)."""
    for dtype, known in _COLOUR_CODES.items():
        if known == code:
            return dtype
    name = next((name for name, known in DATATYPE_CODES.items() if known == code), None)
    return None if name is None else np.dtype(f"<{name[0]}{name[1:]}")


def _datatype(dtype: np.dtype) -> tuple[int, int]:
    """(NIfTI datatype code, bitpix) of a voxel type; RefusedError for one NIfTI lacks."""
    code = _COLOUR_CODES.get(dtype) if dtype.names else \
        DATATYPE_CODES.get(f"{dtype.kind}{dtype.itemsize}")
    if code is None:
        raise RefusedError(f"NIfTI-1 has no data type for {dtype} voxels",
                           "cast the volume (e.g. --dtype float32) or write NRRD",
                           "volume.bad-dtype")
    return code, dtype.itemsize * 8


def _dims(shape: tuple[int, ...]) -> list[int]:
    if len(shape) > 7 or max(shape, default=0) > MAX_DIM:
        raise RefusedError(f"a grid of {' x '.join(map(str, shape))} voxels does not fit "
                           f"NIfTI-1's dim fields (at most {MAX_DIM} along an axis)",
                           "write NRRD (-f nrrd) instead", "volume.too-large")
    return [len(shape), *shape, *[1] * (7 - len(shape))]


def nifti_header(volume: Volume):
    """header_block as a nibabel Nifti1Header."""
    import nibabel as nib

    return nib.Nifti1Header(header_block(volume))


def check_float32_geometry(volume: Volume) -> None:
    """Refuse (exit 4) an affine or scaling that NIfTI-1's float32 fields cannot hold: an
    origin of 1e308 mm is finite in the volume and infinite in the file."""
    with np.errstate(over="ignore"):
        affine32 = volume.affine.astype(np.float32)
        scaling32 = np.array([volume.slope, volume.intercept], dtype=np.float32)
    why = affine_problem(affine32)
    if why:
        raise RefusedError(f"the affine {why} in NIfTI's float32 header fields "
                           f"(largest entry {np.max(np.abs(volume.affine)):.3g})",
                           "the source geometry is corrupt: fix its origin or voxel sizes",
                           "volume.bad-geometry")
    if volume.slope == 0:
        raise RefusedError("a scaling slope of 0 (every voxel would be the intercept)",
                           "the source's scaling is corrupt", "volume.bad-scaling")
    if not np.all(np.isfinite(scaling32)):
        raise RefusedError(f"the scaling (slope {volume.slope:g}, intercept "
                           f"{volume.intercept:g}) does not fit NIfTI's float32 fields",
                           "the source's scaling is corrupt", "volume.bad-scaling")


def to_nibabel(volume: Volume):
    """A nibabel Nifti1Image whose get_fdata() gives real-world values.

    nibabel applies scl_slope/scl_inter only to data read from a file, so a
    scaled volume is handed over as float32 real-world values (unscaled
    volumes share the array, no copy).
    """
    import nibabel as nib

    header = nifti_header(volume)
    data = volume.real_array() if volume.scaled else volume.array
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)
    return nib.Nifti1Image(data, volume.affine, header=header)


def describe(volume: Volume) -> str:
    """Short, identifier-free description for the header's descrip field."""
    parts = [f"convkit {__version__}"]
    meta = volume.metadata
    if meta.get("Modality"):
        parts.append(str(meta["Modality"]))
    if meta.get("EchoTime") is not None:
        parts.append(f"TE={meta['EchoTime'] * 1000:g}")
    if meta.get("RepetitionTime") is not None:
        parts.append(f"TR={meta['RepetitionTime'] * 1000:g}")
    if meta.get("TiltCorrected"):
        parts.append("tilt corrected")
    if meta.get("Resampled"):
        parts.append("resampled")
    return "; ".join(parts)


def write_nifti(volume: Volume, path: Path, deflated: DeflatingStream | None = None) -> None:
    """Write volume to path (.nii or .nii.gz by suffix).

    deflated: the voxel bytes already being compressed while they were decoded
    (dicom.pixels); used only when its source is this very volume array and it holds all
    of it, else cancelled and the voxels compressed here. The file is the same either way.
    """
    header = header_block(volume) + b"\x00" * 4
    data = _flat_bytes(volume.array)
    compressed = path.name.endswith(".gz")
    usable = compressed and deflated is not None and deflated.source is volume.array \
        and deflated.size == len(data) and volume.array.dtype.isnative
    if deflated is not None and not usable:
        deflated.cancel()
    with hashed_file(path, threaded=worker_count() > 1) as handle:
        if compressed and usable:
            assert deflated is not None
            write_gzip(handle, header, deflated)
        elif compressed:
            gzip_bytes(handle, header, data)
        else:
            _write_all(handle, header, data)


def _flat_bytes(array: np.ndarray) -> memoryview:
    """The array's bytes in Fortran (NIfTI) order, without a copy when already Fortran-ordered."""
    flat = np.asarray(array).reshape(-1, order="F")
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return flat.view(np.uint8).data  # the same memoryview as memoryview(...) of the array


def _write_all(handle, header: bytes, data: memoryview) -> None:
    handle.write(header)
    for start in range(0, len(data), _CHUNK_BYTES):
        handle.write(data[start:start + _CHUNK_BYTES])
