"""Volume -> NIfTI-1 (.nii / .nii.gz): header by nibabel, data streamed by us.

The voxel bytes are written straight from the Fortran-ordered array (no copy)
through a fast deflate (ISA-L igzip) instead of CPython's zlib: compression is
most of a conversion's time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit import __version__
from convkit.errors import RefusedError
from convkit.geometry import affine_problem
from convkit.volume import Volume

#: igzip level (0-3): 1 is several times faster than zlib level 6 at similar size.
GZIP_LEVEL = 1
_CHUNK_BYTES = 16 * 1024 * 1024
_VOX_OFFSET = 352  # 348-byte header + 4-byte extension flag


def nifti_header(volume: Volume):
    """A nibabel Nifti1Header: qform and sform (codes 1), pixdim, units, scaling, descrip."""
    import nibabel as nib

    check_float32_geometry(volume)
    header = nib.Nifti1Header()
    header.set_data_dtype(volume.array.dtype)
    header.set_data_shape(volume.shape)
    header.set_qform(volume.affine, code=1)
    header.set_sform(volume.affine, code=1)
    zooms = list(volume.spacing) + [volume.repetition_time_s or 1.0] * (len(volume.shape) - 3)
    header.set_zooms(zooms)
    header.set_xyzt_units("mm", "sec")
    if not volume.is_rgb:
        header.set_slope_inter(volume.slope, volume.intercept)
    header["descrip"] = describe(volume).encode()[:79]
    header["vox_offset"] = _VOX_OFFSET
    return header


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


def write_nifti(volume: Volume, path: Path) -> None:
    """Write volume to path (.nii or .nii.gz by suffix)."""
    header = nifti_header(volume).binaryblock + b"\x00" * 4
    data = _flat_bytes(volume.array)
    if path.name.endswith(".gz"):
        from isal import igzip

        # mtime 0: the same volume gives the same bytes, whenever it is written (batch runs
        # are compared, and verified, by sha256)
        with igzip.IGzipFile(path, "wb", compresslevel=GZIP_LEVEL, mtime=0) as handle:
            _write_all(handle, header, data)
    else:
        with open(path, "wb") as handle:
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
