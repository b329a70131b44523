"""MetaImage (.mha / .mhd) <-> Volume through SimpleITK (LPS on disk, RAS in convkit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit.errors import InputError, RefusedError, exception_reason
from convkit.geometry import lps_to_ras
from convkit.volume import Volume


def read_mha(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read MetaImage ({exception_reason(exc, last=True)})",
                         "the file may be truncated or its data file missing") from exc
    if image.GetDimension() != 3:
        raise RefusedError(f"{path}: {image.GetDimension()}D MetaImage is not supported",
                           "convkit reads 3D volumes (vector pixels allowed)")
    array = sitk.GetArrayFromImage(image)  # (k, j, i[, c])
    array = np.moveaxis(array, (0, 1, 2), (2, 1, 0)) if array.ndim == 4 else array.T
    lps = np.eye(4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return Volume(np.asfortranarray(array), lps_to_ras(lps), metadata={"Format": "MetaImage"})


def write_mha(volume: Volume, path: Path) -> None:
    """Real-world values (MetaImage has no slope/intercept) with LPS geometry."""
    import SimpleITK as sitk

    from convkit.formats.nrrd import compact_real_values

    data = compact_real_values(volume)
    if volume.is_rgb:
        data = np.stack([data[channel] for channel in "RGB"], axis=-1)  # (i, j, k, 3)
    if data.ndim == 4:
        kji = np.moveaxis(data, (0, 1, 2), (2, 1, 0))  # components stay last
        image = sitk.GetImageFromArray(np.ascontiguousarray(kji), isVector=True)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(data.T))
    lps = lps_to_ras(volume.affine)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    sitk.WriteImage(image, str(path), useCompression=True)
