"""Volume -> NRRD (.nrrd attached, .nhdr detached) with pynrrd, in LPS space.

NRRD has no slope/intercept, so real-world values are written, in the smallest
type that holds them exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit.errors import RefusedError
from convkit.geometry import lps_to_ras
from convkit.volume import Volume

#: zlib level for NRRD's gzip encoding (pynrrd uses CPython zlib).
NRRD_GZIP_LEVEL = 1
_INTEGER_TYPES = [np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32",
                                        "int64")]


def compact_real_values(volume: Volume) -> np.ndarray:
    """Real-world values in the smallest dtype that holds them exactly (Fortran order)."""
    if volume.is_rgb or not volume.scaled:
        return volume.array
    real = volume.real_array(np.float64)
    if real.size and np.array_equal(real, np.rint(real)):
        low, high = real.min(), real.max()
        for dtype in _INTEGER_TYPES:
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return real.astype(dtype, order="F")
    single = real.astype(np.float32, order="F")
    return single if np.array_equal(single, real) else real


def nrrd_header(volume: Volume, data: np.ndarray) -> dict:
    """pynrrd header: space LPS, directions and origin from the affine, gzip encoding."""
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
    import nrrd

    if path.suffix == ".nhdr" and not path.name.isascii():
        raise RefusedError(f"{path.name}: a detached NRRD header names its data file in ASCII "
                           "text, and this name is not ASCII",
                           "use --format nrrd (one file), or --name with ASCII-only fields",
                           "volume.name-not-ascii")
    data = compact_real_values(volume)
    if volume.is_rgb:
        data = np.stack([data[channel] for channel in "RGB"])  # (3, i, j, k): RGB-color first
    elif data.ndim == 4:
        data = np.moveaxis(data, 3, 0)  # (t, i, j, k): time points as a list axis first
    header = nrrd_header(volume, data)
    nrrd.write(str(path), data, header, detached_header=path.suffix == ".nhdr",
               compression_level=NRRD_GZIP_LEVEL, index_order="F")
