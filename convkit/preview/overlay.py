"""Overlays: label volumes sampled in world space, colours and legends, the GGO highlight.

A label volume lives on its own grid (its own affine, shape and orientation);
each displayed pixel looks up the label voxel that contains its RAS position
(nearest neighbour), so a mask lands on the right anatomy whatever the two
grids are. The GGO highlight is such a label volume, computed from the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from convkit.errors import InputError, UsageError
from convkit.geometry import io_orientation
from convkit.volume import Volume

#: Colours of labels 1, 2, ... (cycled): well separated hues that read on grey images.
LABEL_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
)
#: Highlight colour of ground-glass voxels.
GGO_COLOR = (255, 200, 0)
#: Ground-glass opacity range (HU, inclusive) of --highlight ggo.
GGO_HU_RANGE = (-750.0, -300.0)
#: Lung mask: voxels below this (HU) are air or aerated lung.
LUNG_AIR_HU = -400.0
#: Lung mask: 3D components of internal air at least this fraction of the largest are kept.
LUNG_COMPONENT_FRACTION = 0.1
#: Lung mask: computed on a grid of at most this many voxels (strided, coarsening the finest
#: axes first), then brought back to the image's grid; the GGO range is tested at full
#: resolution. Keeps a 512 x 512 x 300 CT to about a second.
LUNG_MASK_MAX_VOXELS = 4_000_000
#: Most distinct labels an overlay may hold (a label map, not a continuous image).
MAX_LABELS = 64
HIGHLIGHTS = ("ggo",)


@dataclass
class LegendEntry:
    text: str
    color: tuple[int, int, int]


@dataclass
class Overlay:
    """A label volume to draw over the image.

    labels: integer label array (i, j, k) on its own grid; affine: voxel -> RAS.
    colors: label value -> RGB. alpha: opacity of the fill (0..1); contour: draw
    only the outline (opaque) instead of a fill.
    """

    name: str
    labels: np.ndarray
    affine: np.ndarray
    colors: dict[int, tuple[int, int, int]]
    legend: list[LegendEntry]
    alpha: float = 0.4
    contour: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha, "contour": self.contour,
                "legend": [entry.text for entry in self.legend], **self.info}


def label_overlay(mask: Volume, name: str, alpha: float = 0.4, contour: bool = False) -> Overlay:
    """An Overlay from a label volume (3D, or 4D with one time point): one colour per label."""
    array = mask.array
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3 or mask.is_rgb:
        raise InputError(f"overlay {name}: expected a 3D label volume, got shape {array.shape}",
                         "pass a mask or label map (integer values, 0 = background)")
    values = mask.real_array() if mask.scaled else array
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
        raise InputError(f"overlay {name}: the values are not integer labels",
                         "pass a mask or label map (integer values, 0 = background)")
    present = np.unique(values)
    present = present[present != 0]
    if present.size > MAX_LABELS:
        raise InputError(f"overlay {name}: {present.size} distinct labels (at most {MAX_LABELS})",
                         "pass a mask or label map, not an image")
    labels = values.astype(np.int32)
    voxel_ml = abs(np.linalg.det(mask.affine[:3, :3])) / 1000
    colors, legend, counts = {}, [], {}
    # segment names of a SEG/RTSTRUCT overlay (convkit.seg.objects puts them in the metadata)
    names = {int(s["SegmentNumber"]): f" {s['SegmentLabel']}"
             for s in mask.metadata.get("Segments", []) if s.get("SegmentLabel")}
    for index, value in enumerate(present.astype(int)):
        color = LABEL_COLORS[index % len(LABEL_COLORS)]
        colors[int(value)] = color
        count = int(np.count_nonzero(labels == value))
        counts[int(value)] = count
        legend.append(LegendEntry(f"{name} {value}{names.get(int(value), '')}: "
                                  f"{count * voxel_ml:.1f} mL", color))
    info = {"labels": [{"value": v, "color": list(colors[v]), "voxels": counts[v],
                        "volume_ml": round(counts[v] * voxel_ml, 3)} for v in colors]}
    _check_alpha(alpha)
    return Overlay(name, labels, np.asarray(mask.affine, float), colors, legend, alpha, contour,
                   info)


def _check_alpha(alpha: float) -> None:
    if not 0 <= alpha <= 1:
        raise UsageError(f"--alpha {alpha}: must be between 0 and 1")


def sample_labels(overlay: Overlay, world: np.ndarray) -> np.ndarray:
    """Label at each RAS point of world (..., 3): the voxel containing it, 0 outside."""
    inverse = np.linalg.inv(overlay.affine)
    voxel = world @ inverse[:3, :3].T + inverse[:3, 3]
    index = np.floor(voxel + 0.5).astype(np.int64)
    shape = np.array(overlay.labels.shape)
    inside = np.all((index >= 0) & (index < shape), axis=-1)
    result = np.zeros(world.shape[:-1], dtype=np.int32)
    i, j, k = (index[..., axis][inside] for axis in range(3))
    result[inside] = overlay.labels[i, j, k]
    return result


def blend(rgb: np.ndarray, labels: np.ndarray, overlay: Overlay) -> None:
    """Tint rgb (rows, cols, 3 uint8) in place where labels > 0, fill or contour."""
    if overlay.contour:
        edge = _edges(labels)
        for value, color in overlay.colors.items():
            rgb[edge & (labels == value)] = color
        return
    for value, color in overlay.colors.items():
        where = labels == value
        if not where.any():
            continue
        mixed = (1 - overlay.alpha) * rgb[where] + overlay.alpha * np.array(color, float)
        rgb[where] = np.rint(mixed).astype(np.uint8)


def _edges(labels: np.ndarray) -> np.ndarray:
    """Labelled pixels with a 4-neighbour of another label (or the image border)."""
    padded = np.pad(labels, 1, mode="constant", constant_values=-1)
    centre = padded[1:-1, 1:-1]
    edge = np.zeros(labels.shape, dtype=bool)
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dr:dr + labels.shape[0], dc:dc + labels.shape[1]] != centre
    return edge & (labels > 0)


def ggo_overlay(volume: Volume, time_index: int = 0, alpha: float = 0.5) -> Overlay:
    """Ground-glass highlight: voxels in GGO_HU_RANGE inside a simple lung mask.

    A visual aid, not a diagnosis. The lung mask is threshold and connectivity
    (see lung_mask). The legend gives the highlighted fraction of lung volume.
    Thresholds are applied to the stored values (no float copy of the volume).
    """
    _check_alpha(alpha)
    array = volume.array[..., time_index] if volume.array.ndim == 4 else volume.array
    if volume.is_rgb or array.ndim != 3 or volume.slope <= 0:
        raise UsageError("--highlight ggo needs a 3D CT volume in Hounsfield units")

    low, high = GGO_HU_RANGE
    limit = _stored_limit(array.dtype, volume.slope, volume.intercept)
    coarse, steps = _coarse_lung_mask(array < limit(LUNG_AIR_HU, True), volume.affine)
    ggo = array >= limit(low, True)
    ggo &= array <= limit(high, False)
    # Only the voxels in range need the lung mask: look them up in memory order.
    order: Literal["C", "F"] = "F" if ggo.flags.f_contiguous else "C"
    flat = ggo.ravel(order=order)  # a view of the contiguous array
    candidates = np.flatnonzero(flat)
    index = np.unravel_index(candidates, ggo.shape, order=order)
    flat[candidates] = coarse[tuple(i // step for i, step in zip(index, steps, strict=True))]
    block = [np.minimum(step, n - np.arange(m) * step)  # fine voxels per coarse voxel
             for n, m, step in zip(array.shape, coarse.shape, steps, strict=True)]
    lung_voxels = int(np.einsum("ijk,i,j,k->", coarse.astype(np.int64), *block))
    ggo_voxels = int(np.count_nonzero(ggo))
    voxel_ml = abs(np.linalg.det(volume.affine[:3, :3])) / 1000
    fraction = ggo_voxels / lung_voxels if lung_voxels else 0.0
    text = (f"GGO {low:g}..{high:g} HU: {100 * fraction:.1f}% of lung "
            f"({ggo_voxels * voxel_ml:.0f} of {lung_voxels * voxel_ml:.0f} mL)")
    info = {"kind": "ggo", "range_hu": [low, high], "lung_voxels": lung_voxels,
            "ggo_voxels": ggo_voxels, "lung_ml": round(lung_voxels * voxel_ml, 3),
            "ggo_ml": round(ggo_voxels * voxel_ml, 3), "fraction_of_lung": round(fraction, 6),
            "note": "visual aid, not a diagnosis"}
    return Overlay("ggo", ggo.view(np.uint8), np.asarray(volume.affine, float), {1: GGO_COLOR},
                   [LegendEntry(text, GGO_COLOR)], alpha, False, info)


def _stored_limit(dtype: np.dtype, slope: float, intercept: float):
    """limit(hu, up): the stored value of a HU threshold (slope > 0), for comparisons that
    stay exact and make no float copy: for integer types rounded up (for >= and <) or down
    (for <=) and clipped to the type's range."""
    def limit(hu: float, up: bool):
        value = (hu - intercept) / slope
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = np.ceil(value) if up else np.floor(value)
            return dtype.type(np.clip(value, info.min, info.max))
        return dtype.type(value)

    return limit


def lung_mask(air: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A simple lung mask (bool, same layout as air) from the air mask of a CT.

    Large volumes are handled on a coarser grid (LUNG_MASK_MAX_VOXELS): every step-th voxel
    along each axis (the central one of each block), the mask then repeated back.
    """
    coarse, steps = _coarse_lung_mask(air, affine)
    if steps == [1, 1, 1]:
        return coarse
    return _repeat_blocks(coarse, steps, air.shape)


def _coarse_lung_mask(air: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """(mask, steps): the lung mask on the grid air[f0 // 2::f0, f1 // 2::f1, f2 // 2::f2]
    (steps f = 1 for volumes of at most LUNG_MASK_MAX_VOXELS); see lung_mask.

    1. air: voxels below LUNG_AIR_HU (given);
    2. per axial slice, drop the air connected to the slice's border (outside the body);
    3. in 3D, keep the connected components of what is left that have at least
       LUNG_COMPONENT_FRACTION of the largest one's voxels (the lungs, with the trachea
       and main bronchi; large bowel gas may also be kept);
    4. per axial slice, fill the holes (vessels, nodules, dense opacities inside the lungs).

    Axial means: perpendicular to the array axis closest to superior-inferior.
    """
    steps = _coarse_steps(air.shape, np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0))
    if steps != [1, 1, 1]:
        picks = [np.minimum(np.arange(-(-n // f)) * f + f // 2, n - 1)
                 for n, f in zip(air.shape, steps, strict=True)]
        return _coarse_lung_mask(air[np.ix_(*picks)], affine)[0], steps
    ornt = io_orientation(np.asarray(affine, float))
    si_axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    order = [axis for axis in range(3) if axis != si_axis] + [si_axis]
    air = np.transpose(air, order)  # (a, b, slices)
    inside = air & ~_per_slice(air, _border_connected, separator=True)
    if not inside.any():
        return np.zeros(air.shape, dtype=bool).transpose(np.argsort(order)), steps
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(inside.transpose(2, 1, 0)).view(np.uint8))
    components = sitk.RelabelComponent(sitk.ConnectedComponent(image))
    labels = sitk.GetArrayFromImage(components).transpose(2, 1, 0)
    sizes = np.bincount(labels.ravel())  # RelabelComponent numbers them largest first
    kept = int(np.count_nonzero(sizes[1:] >= LUNG_COMPONENT_FRACTION * sizes[1]))
    lungs = (labels >= 1) & (labels <= kept)
    lungs = _per_slice(lungs, _fill_holes, separator=False)
    return np.transpose(lungs, np.argsort(order)), steps


def _repeat_blocks(coarse: np.ndarray, steps: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """Each coarse voxel repeated steps times along each axis, cropped to shape; in Fortran
    order, like volume arrays, so that combining it with them stays fast."""
    (a, b, c), (f0, f1, f2) = coarse.shape, steps
    transposed = np.ascontiguousarray(coarse.T)  # (c, b, a)
    blocks = np.broadcast_to(transposed[:, None, :, None, :, None], (c, f2, b, f1, a, f0))
    full = blocks.reshape(c * f2, b * f1, a * f0)[:shape[2], :shape[1], :shape[0]]
    return np.asfortranarray(full.T)


def _coarse_steps(shape: tuple[int, ...], spacing: np.ndarray) -> list[int]:
    """Integer steps per axis so that the strided grid has at most LUNG_MASK_MAX_VOXELS,
    coarsening the axis with the finest effective spacing first."""
    steps = [1, 1, 1]
    while np.prod([-(-n // f) for n, f in zip(shape, steps, strict=True)]) > LUNG_MASK_MAX_VOXELS:
        axis = int(np.argmin([s * f for s, f in zip(spacing, steps, strict=True)]))
        steps[axis] += 1
    return steps


def _per_slice(mask: np.ndarray, operation, separator: bool) -> np.ndarray:
    """Apply a 2D operation to every slice (last axis) at once.

    The slices are laid side by side in one 2D image, separated by a line of
    `separator` pixels, so 2D connectivity never crosses from one slice to the next.
    """
    a, b, n = mask.shape
    tiled = np.full((a, b + 1, n), separator, dtype=bool)
    tiled[:, :b, :] = mask
    flat = tiled.reshape(a, (b + 1) * n, order="F")  # [x, y + (b + 1) * z]
    result = operation(flat)
    return result.reshape(a, b + 1, n, order="F")[:, :b, :]


def _border_connected(mask: np.ndarray) -> np.ndarray:
    """Pixels of a 2D mask connected (4-connectivity) to the image border."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.T).view(np.uint8))
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(image)).T
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    lookup = np.zeros(int(labels.max()) + 1, dtype=bool)
    lookup[border] = True
    lookup[0] = False
    return lookup[labels]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.T).view(np.uint8))
    filled = sitk.BinaryFillhole(image, fullyConnected=False, foregroundValue=1)
    return sitk.GetArrayFromImage(filled).T.astype(bool)
