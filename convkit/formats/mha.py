"""MetaImage (.mha / .mhd) <-> Volume: voxels through SimpleITK, geometry from the header.

The text header is parsed here once (read_metaimage_header, metaimage_affine) for the
reader and the audit alike; LPS on disk, RAS in convkit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convkit.errors import InputError, RefusedError, exception_reason
from convkit.formats.itk import sitk_image
from convkit.formats.nrrd import compact_real_values
from convkit.geometry import lps_to_ras
from convkit.volume import Volume

#: Header bytes read at most (a MetaImage text header is a few hundred bytes).
MAX_HEADER_BYTES = 1 << 20


@dataclass
class MetaImageHeader:
    """The key = value lines of a MetaImage header, up to ElementDataFile (the last key)."""

    fields: dict[str, str]  # as written, in order
    length: int  # bytes of header text: where ElementDataFile = LOCAL data start

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
    for raw_line in io.BytesIO(head):
        length += len(raw_line)
        line = raw_line.decode("latin-1").strip()
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        fields[key] = value
        if key.lower() == "elementdatafile":
            break
    return MetaImageHeader(fields, length)


def metaimage_affine(header: MetaImageHeader) -> np.ndarray:
    """RAS affine of a 3D MetaImage header, read as ITK reads it (LPS on disk).

    Row n of TransformMatrix (or Rotation, Orientation) is the direction of voxel
    axis n; spacing is ElementSpacing (or ElementSize); the origin is Offset (or
    Position, Origin). Missing keys mean identity, unit spacing and zero origin.
    """
    spacing = _numbers(header.get("ElementSpacing", "ElementSize") or "1 1 1", 3)
    rows = _numbers(header.get("TransformMatrix", "Rotation", "Orientation")
                    or "1 0 0 0 1 0 0 0 1", 9).reshape(3, 3)
    origin = _numbers(header.get("Offset", "Position", "Origin") or "0 0 0", 3)
    lps = np.eye(4)
    lps[:3, :3] = rows.T * spacing
    lps[:3, 3] = origin
    return lps_to_ras(lps)


def _numbers(text: str, count: int) -> np.ndarray:
    values = np.array([float(v) for v in text.split()])
    if values.size != count:
        raise ValueError(f"expected {count} numbers, found {values.size} in {text!r}")
    return values


def read_mha(path: Path) -> Volume:
    """Voxels by SimpleITK, geometry from the header by metaimage_affine (the audit's too)."""
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
    try:
        affine = metaimage_affine(read_metaimage_header(path))
    except ValueError as exc:
        raise InputError(f"{path}: bad MetaImage geometry ({exc})",
                         "check TransformMatrix, ElementSpacing and Offset") from exc
    return Volume(np.asfortranarray(array), affine, metadata={"Format": "MetaImage"})


def write_mha(volume: Volume, path: Path) -> None:
    """Real-world values (MetaImage has no slope/intercept) with LPS geometry."""
    import SimpleITK as sitk


    data = compact_real_values(volume)
    if volume.is_rgb:
        data = np.stack([data[channel] for channel in "RGB"], axis=-1)  # (i, j, k, 3)
    image = sitk_image(data, volume.affine, vector=data.ndim == 4)
    sitk.WriteImage(image, str(path), useCompression=True)
