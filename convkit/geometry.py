"""Pure geometry: affines from DICOM attributes, slice order and spacing, tilt.

No I/O here, only numpy. Conventions used throughout convkit:

- DICOM patient space is LPS; NIfTI world space is RAS. Functions say which.
- Voxel index order is (i, j, k[, t]) with i along a DICOM row (increasing
  column index, ImageOrientationPatient[:3]), j down a column (increasing row
  index, ImageOrientationPatient[3:]) and k across slices.
- An affine maps (i, j, k, 1) to world millimetres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Two ImageOrientationPatient vectors closer than this (max abs cosine difference) are equal.
ORIENTATION_TOLERANCE = 1e-3
#: Slice positions (projected on the normal) closer than this are the same position, in mm.
SAME_POSITION_TOLERANCE_MM = 0.01
#: A slice may sit this far from the regular grid (mm, or this fraction of the spacing,
#: whichever is larger) before the spacing counts as uneven.
SPACING_TOLERANCE_MM = 0.02
SPACING_TOLERANCE_FRACTION = 0.01
#: In-plane drift of slice origins (mm, or this fraction of a pixel, whichever is larger)
#: above which a stack counts as sheared (gantry tilt).
SHEAR_TOLERANCE_MM = 0.02
SHEAR_TOLERANCE_FRACTION = 0.01
#: An affine is sheared when the cosine between two of its voxel axes exceeds this
#: (1e-4: 0.006 degrees; float32 headers written by ITK, nibabel and dcm2niix stay
#: far below it, real shear such as gantry tilt far above).
AFFINE_SHEAR_TOLERANCE = 1e-4

#: ImageOrientationPatient vectors further than this from unit length are normalised with a
#: note (closer ones are the rounding of their decimal strings, normalised silently).
ORIENTATION_ROUNDING = 1e-5

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class DegenerateOrientation(ValueError):
    """An ImageOrientationPatient that defines no image plane (zero-length, parallel, not
    finite) or not a rotation (vectors far from unit length or from perpendicular)."""


def _iop_text(iop: npt.ArrayLike) -> str:
    """Values as DICOM shows them, backslash-separated."""
    return "\\".join(f"{v:g}" for v in np.ravel(iop))


def unit_orientation(orientation: Sequence[float]) -> tuple[tuple[float, ...], str]:
    """(ImageOrientationPatient with unit vectors, a note when they were not quite unit).

    Vectors within ORIENTATION_TOLERANCE of unit length (and of perpendicular) are
    taken: normalised, with a note when off by more than ORIENTATION_ROUNDING. Anything
    else raises DegenerateOrientation, whose message names the attribute and the values.
    Plain Python (no numpy): discovery asks it of every file.
    """
    iop = tuple(float(v) for v in orientation)
    if len(iop) != 6 or not all(math.isfinite(v) for v in iop):
        raise DegenerateOrientation(f"ImageOrientationPatient {_iop_text(iop)} is degenerate "
                                    "(not six finite numbers)")
    row, col = iop[:3], iop[3:]
    row_norm, col_norm = math.hypot(*row), math.hypot(*col)
    if min(row_norm, col_norm) < ORIENTATION_TOLERANCE:
        raise DegenerateOrientation(f"ImageOrientationPatient {_iop_text(iop)} is degenerate "
                                    "(a zero-length vector)")
    cosine = abs(sum(a * b for a, b in zip(row, col, strict=True))) / (row_norm * col_norm)
    if 1 - cosine < ORIENTATION_TOLERANCE:
        raise DegenerateOrientation(f"ImageOrientationPatient {_iop_text(iop)} is degenerate "
                                    "(parallel row and column vectors)")
    off = max(abs(row_norm - 1), abs(col_norm - 1))
    if off > ORIENTATION_TOLERANCE:
        raise DegenerateOrientation(f"ImageOrientationPatient {_iop_text(iop)} is degenerate "
                                    f"(vectors of length {row_norm:.6g} and {col_norm:.6g}, "
                                    "not 1)")
    if cosine > ORIENTATION_TOLERANCE:
        raise DegenerateOrientation(f"ImageOrientationPatient {_iop_text(iop)} is degenerate "
                                    f"(vectors at {math.degrees(math.acos(cosine)):.4g} "
                                    "degrees, not 90)")
    if off <= ORIENTATION_ROUNDING:
        return iop, ""
    unit = tuple(v / row_norm for v in row) + tuple(v / col_norm for v in col)
    return unit, (f"ImageOrientationPatient normalised to unit vectors (lengths "
                  f"{row_norm:.6g} and {col_norm:.6g})")


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert an affine to LPS world into one to RAS world (and back: it is its own inverse)."""
    return LPS_TO_RAS @ affine


def plane_axes(orientation: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row direction, column direction and slice normal (LPS) from ImageOrientationPatient.

    The row direction is the first triplet (increasing column index), the column
    direction the second (increasing row index); normal = row x column. Raises
    DegenerateOrientation for zero-length, parallel or non-finite vectors.
    """
    iop = np.asarray(orientation, dtype=float).reshape(2, 3)
    norms = np.linalg.norm(iop, axis=1)
    if not np.all(np.isfinite(iop)) or np.min(norms) < ORIENTATION_TOLERANCE:
        raise DegenerateOrientation(f"ImageOrientationPatient {_iop_text(iop)} is degenerate")
    row_dir, col_dir = iop[0] / norms[0], iop[1] / norms[1]
    normal = np.cross(row_dir, col_dir)
    length = float(np.linalg.norm(normal))
    if length < ORIENTATION_TOLERANCE:
        raise DegenerateOrientation(f"ImageOrientationPatient {_iop_text(iop)} is degenerate "
                                    "(parallel row and column vectors)")
    return row_dir, col_dir, normal / length


def same_orientation(a: npt.ArrayLike, b: npt.ArrayLike) -> bool:
    """True when two ImageOrientationPatient vectors agree within ORIENTATION_TOLERANCE."""
    difference = np.abs(np.asarray(a, float) - np.asarray(b, float))
    return bool(np.max(difference) <= ORIENTATION_TOLERANCE)


def affine_lps(
    orientation: npt.ArrayLike,
    pixel_spacing: tuple[float, float],
    origin: npt.ArrayLike,
    slice_step: npt.ArrayLike,
) -> np.ndarray:
    """Voxel (i, j, k) -> LPS mm.

    pixel_spacing is DICOM's [between rows, between columns]; origin is the
    ImagePositionPatient of slice k = 0; slice_step is the LPS vector from one
    slice origin to the next.
    """
    row_dir, col_dir, _ = plane_axes(orientation)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * float(pixel_spacing[1])
    affine[:3, 1] = col_dir * float(pixel_spacing[0])
    affine[:3, 2] = np.asarray(slice_step, dtype=float)
    affine[:3, 3] = np.asarray(origin, dtype=float)
    return affine


@dataclass(frozen=True)
class Gap:
    """An irregular step between two consecutive distinct slice positions (mm along the normal)."""

    after_index: int  # 0-based index (in sorted order) of the slice before the step
    position_mm: float  # projected position of that slice
    step_mm: float  # the step found
    expected_mm: float  # the typical step of the series


@dataclass(frozen=True)
class StackGeometry:
    """The geometry of one stack of distinct slice positions (LPS).

    distances and offsets are relative to the first slice in sorted order
    (ascending along the normal).
    """

    row_dir: np.ndarray
    col_dir: np.ndarray
    normal: np.ndarray
    origin: np.ndarray  # LPS position of the first slice in sorted order
    distances: np.ndarray  # (n,) mm along the normal
    offsets: np.ndarray  # (n, 2) in-plane drift of each slice origin, mm along row_dir, col_dir
    spacing: float  # regular slice spacing: span / (n - 1), or the fallback for one slice
    gaps: tuple[Gap, ...]
    sheared: bool

    @property
    def regular(self) -> bool:
        return not self.gaps

    @property
    def tilt_degrees(self) -> float:
        """Angle between the slice stacking direction and the slice normal."""
        if len(self.distances) < 2 or self.distances[-1] == 0:
            return 0.0
        drift = np.hypot(*(self.offsets[-1] - self.offsets[0]))
        return float(np.degrees(np.arctan2(drift, self.distances[-1] - self.distances[0])))


def project_positions(positions: npt.ArrayLike, orientation: npt.ArrayLike) -> np.ndarray:
    """Distance of each LPS position along the slice normal (mm)."""
    _, _, normal = plane_axes(orientation)
    return np.asarray(positions, dtype=float) @ normal


def analyse_stack(
    positions: npt.ArrayLike,
    orientation: npt.ArrayLike,
    pixel_spacing: tuple[float, float],
    fallback_spacing: float = 1.0,
) -> StackGeometry:
    """Geometry of distinct slice positions given in ascending order along the normal.

    positions: (n, 3) LPS ImagePositionPatient values, already sorted. The result
    reports uneven steps (gaps) and in-plane drift (shear, i.e. gantry tilt)
    rather than hiding them; fallback_spacing is used for a single slice.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    row_dir, col_dir, normal = plane_axes(orientation)
    rel = positions - positions[0]
    distances = rel @ normal
    offsets = np.stack([rel @ row_dir, rel @ col_dir], axis=1)
    n = len(positions)
    spacing = float(distances[-1] / (n - 1)) if n > 1 else float(fallback_spacing)
    gaps: tuple[Gap, ...] = ()
    if n > 2:
        gaps = _find_gaps(distances, spacing)
    shear_tol = max(SHEAR_TOLERANCE_MM, SHEAR_TOLERANCE_FRACTION * float(min(pixel_spacing)))
    sheared = bool(n > 1 and np.max(np.abs(offsets)) > shear_tol)
    return StackGeometry(row_dir, col_dir, normal, positions[0], distances, offsets, spacing,
                         gaps, sheared)


def _find_gaps(distances: np.ndarray, spacing: float) -> tuple[Gap, ...]:
    """Steps that put a slice off the regular grid first + k * spacing."""
    steps = np.diff(distances)
    typical = typical_step(steps)
    tol = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * abs(typical))
    grid = np.arange(len(distances)) * spacing
    if np.max(np.abs(distances - grid)) <= tol and np.max(np.abs(steps - typical)) <= tol:
        return ()
    return tuple(
        Gap(int(i), float(distances[i]), float(step), typical)
        for i, step in enumerate(steps)
        if abs(step - typical) > tol
    )


def typical_step(steps: np.ndarray) -> float:
    """The step most other steps agree with (ties: the smallest), robust to a few gaps."""
    steps = np.asarray(steps, dtype=float).ravel()
    tol = np.maximum(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * np.abs(steps))
    support = np.empty(len(steps), dtype=np.intp)  # how many steps agree with each step
    for start in range(0, len(steps), _STEP_BLOCK):  # blocks: n x n booleans at once is big
        block = slice(start, start + _STEP_BLOCK)
        agree = np.abs(steps[None, :] - steps[block, None]) <= tol[block, None]
        support[block] = np.count_nonzero(agree, axis=1)
    return float(np.min(steps[support == np.max(support)]))


#: Steps whose support typical_step counts at once (a block of booleans: 1024 x n).
_STEP_BLOCK = 1024


def is_sheared(affine: np.ndarray) -> bool:
    """True when the voxel axes of an affine (LPS or RAS alike) are not mutually orthogonal.

    A qform, a DICOM series and an ITK direction matrix cannot hold shear: every
    reader and writer asks this one question, with AFFINE_SHEAR_TOLERANCE. A
    zero-length axis counts as sheared (it has no direction at all).
    """
    linear = np.asarray(affine, float)[:3, :3]
    norms = np.linalg.norm(linear, axis=0)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        return True
    unit = linear / norms
    return bool(np.max(np.abs(unit.T @ unit - np.eye(3))) > AFFINE_SHEAR_TOLERANCE)


def _world_axes(linear: np.ndarray) -> list[int]:
    """For each world axis, the voxel axis closest to it (largest cosine first)."""
    norms = np.linalg.norm(linear, axis=0)
    cosines = np.abs(linear / np.where(norms > 0, norms, 1.0))
    voxel_of_world = [0, 0, 0]
    free_world, free_voxel = [0, 1, 2], [0, 1, 2]
    for _ in range(3):
        world, voxel = max(((w, v) for w in free_world for v in free_voxel),
                           key=lambda wv: cosines[wv[0], wv[1]])
        voxel_of_world[world] = voxel
        free_world.remove(world)
        free_voxel.remove(voxel)
    return voxel_of_world


def axis_codes(affine_ras: np.ndarray) -> str:
    """Closest canonical axis letters of a RAS affine, e.g. 'RAS' or 'LPI' ('???' for a
    degenerate one: a zero-length, collinear or non-finite axis).

    The letters nib-ls and nibabel's aff2axcodes give. Orthogonal affines (every
    DICOM output grid) are coded here in pure numpy, so that a DICOM-only audit
    need not import nibabel (~0.3 s); sheared or degenerate ones go to nibabel's
    SVD-based io_orientation.
    """
    linear = np.asarray(affine_ras, float)[:3, :3]
    if not np.all(np.isfinite(linear)) or np.linalg.matrix_rank(linear) < 3:
        return "???"  # no direction to name (a zero-length or non-finite axis)
    if is_sheared(affine_ras):
        from nibabel.orientations import aff2axcodes

        return "".join(code or "?" for code in aff2axcodes(np.asarray(affine_ras, float)))
    letters = [""] * 3
    for world, voxel in enumerate(_world_axes(linear)):
        letters[voxel] = ("RAS" if linear[world, voxel] > 0 else "LPI")[world]
    return "".join(letters)


def io_orientation(affine: np.ndarray) -> np.ndarray:
    """nibabel's io_orientation: per voxel axis, [the world axis it is closest to, +1 or -1].

    Orthogonal affines in numpy (_world_axes: the same answer, without importing nibabel,
    which imports pydicom); sheared or degenerate ones by nibabel's SVD."""
    affine = np.asarray(affine, float)
    linear = affine[:3, :3]
    if not np.all(np.isfinite(linear)) or np.linalg.matrix_rank(linear) < 3 \
            or is_sheared(affine):
        from nibabel.orientations import io_orientation as nibabel_orientation

        return nibabel_orientation(affine)
    orientation = np.zeros((3, 2))
    for world, voxel in enumerate(_world_axes(linear)):
        orientation[voxel] = [world, 1.0 if linear[world, voxel] > 0 else -1.0]
    return orientation


def reoriented(array: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """The array in the axes an io_orientation names (nibabel's apply_orientation): flipped
    where it says -1, then its first axes put in world order (a view, no copy)."""
    for axis, sign in enumerate(orientation[:, 1]):
        if sign == -1:
            array = np.flip(array, axis=axis)
    order = np.arange(array.ndim)
    order[:len(orientation)] = np.argsort(orientation[:, 0])
    return array.transpose(order)


def reorientation_affine(orientation: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The affine from the reoriented array's indices to the original's (nibabel's
    inv_ornt_aff): affine @ this maps the reoriented array to the world."""
    count = len(orientation)
    half = (np.asarray(shape[:count], float) - 1) / 2.0
    unflip = np.diag([*orientation[:, 1], 1.0])
    unflip[:count, count] = orientation[:, 1] * -half + half
    unorder = np.eye(count + 1)[[*orientation[:, 0].astype(int), count], :]
    return np.dot(unflip, unorder)


def canonical_grid(affine: np.ndarray, shape: tuple[int, ...],
                   ) -> tuple[np.ndarray, tuple[int, ...]]:
    """(affine, shape) of the same grid (RAS), its axes reordered and flipped to the closest RAS+.

    Each voxel axis goes to the world axis its direction is closest to (largest
    cosine first), pointing the positive way; the returned affine maps indices of
    the reoriented array to the same RAS positions. Pure numpy (a few
    microseconds, the same result as nibabel's io_orientation for orthogonal
    affines).
    """
    shape3 = [int(v) for v in shape[:3]]
    linear = np.asarray(affine, float)[:3, :3]
    voxel_of_world = _world_axes(linear)
    result = np.eye(4)
    result[:3, 3] = np.asarray(affine, float)[:3, 3]
    for world, voxel in enumerate(voxel_of_world):
        column = linear[:, voxel]
        if column[world] < 0:  # flip: index n-1 becomes 0
            result[:3, 3] += column * (shape3[voxel] - 1)
            column = -column
        result[:3, world] = column
    return result, tuple(shape3[v] for v in voxel_of_world)


def grid_corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(8, 3) world positions of the grid's corner voxel centres."""
    extent = [max(int(n) - 1, 0) for n in shape[:3]]
    points = np.array([[i, j, k, 1.0] for i in (0, extent[0]) for j in (0, extent[1])
                       for k in (0, extent[2])])
    return (affine @ points.T).T[:, :3]


@dataclass(frozen=True)
class PlacedGrid:
    """A grid brought to the closest canonical axes, with what comparisons need (RAS mm)."""

    affine: np.ndarray
    shape: tuple[int, ...]
    corners: np.ndarray
    centre: np.ndarray
    diagonal: float


def place_grid(affine: np.ndarray, shape: tuple[int, ...]) -> PlacedGrid:
    """The grid in canonical axes, its corners, centre and diagonal: grids compared in world
    space are compared through this (axis order and flips no longer matter)."""
    canonical_affine, canonical_shape = canonical_grid(affine, shape)
    points = grid_corners(canonical_affine, canonical_shape)
    return PlacedGrid(canonical_affine, canonical_shape, points, points.mean(axis=0),
                      float(np.linalg.norm(points[-1] - points[0])))


def obliquity_degrees(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and its closest world axis (NaN for a
    degenerate affine: a zero-length or non-finite axis has no direction)."""
    linear = np.asarray(affine, float)[:3, :3]
    norms = np.linalg.norm(linear, axis=0)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        return float("nan")
    unit = linear / norms
    return float(np.degrees(np.arccos(np.clip(np.max(np.abs(unit), axis=0).min(), -1, 1))))


#: Voxel axes whose parallelepiped has less than this fraction of the volume of a box
#: with the same edge lengths are linearly dependent (a degenerate affine).
AFFINE_DEGENERATE_TOLERANCE = 1e-6


def affine_problem(affine: np.ndarray) -> str:
    """Why an affine cannot place voxels in space ('' when it can): 'is not finite', or
    'is degenerate (...)' for a zero-length axis or axes that are linearly dependent."""
    affine = np.asarray(affine, float)
    if not np.all(np.isfinite(affine)):
        return "is not finite"
    linear = affine[:3, :3]
    with np.errstate(all="ignore"):  # lengths of 1e300 overflow: not a voxel size either
        norms = np.linalg.norm(linear, axis=0)
        volume = abs(float(np.linalg.det(linear))), float(np.prod(norms))
    if not np.all(np.isfinite(norms)) or not all(np.isfinite(volume)):
        return "is not finite (voxel axes too long)"
    zero = [str(axis) for axis in range(3) if norms[axis] == 0]
    if zero:
        axes = f"axis {zero[0]} has" if len(zero) == 1 else f"axes {', '.join(zero)} have"
        return f"is degenerate (voxel {axes} length 0)"
    if volume[0] < AFFINE_DEGENERATE_TOLERANCE * volume[1]:
        return "is degenerate (its voxel axes are linearly dependent)"
    return ""
