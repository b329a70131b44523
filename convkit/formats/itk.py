"""Volume <-> SimpleITK images: the one place that hands convkit geometry to ITK.

ITK works in LPS: direction columns are the voxel axes, spacing their lengths and
origin the first voxel's centre. convkit affines are RAS (volume.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from convkit.geometry import lps_to_ras
from convkit.volume import Volume


def sitk_image(array: np.ndarray, affine_ras: np.ndarray, vector: bool = False):
    """A SimpleITK image of an (i, j, k) array, or (i, j, k, c) components when vector.

    The geometry is the RAS affine's, given to ITK in LPS. ITK cannot hold shear:
    callers refuse or resample a sheared affine first (geometry.is_sheared).
    """
    import SimpleITK as sitk

    if vector:
        kji = np.moveaxis(array, (0, 1, 2), (2, 1, 0))  # components stay last
        image = sitk.GetImageFromArray(np.ascontiguousarray(kji), isVector=True)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).T))
    lps = lps_to_ras(np.asarray(affine_ras, float))
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    return image


def to_sitk(volume: Volume):
    """A SimpleITK image of the real-world values of a 3D volume (LPS, as ITK expects).

    Colour volumes become 3-component vector images.
    """
    if volume.array.ndim != 3:
        raise ValueError("to_sitk supports 3D volumes; take one time point first")
    if volume.is_rgb:
        channels = np.stack([volume.array[c] for c in "RGB"], axis=-1)  # (i, j, k, 3)
        return sitk_image(channels, volume.affine, vector=True)
    values = volume.real_array() if volume.scaled else volume.array
    return sitk_image(values, volume.affine)


@contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Capture what C++ code (ITK's MetaIO) writes straight to file descriptor 2, so that it
    becomes part of convkit's one-line message instead of raw text on the user's terminal.
    Yields a list that holds the captured lines once the block is left."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
