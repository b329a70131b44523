"""Cross-format: a volume file checked against the DICOM series it was made from.

A volume belongs to a series by its JSON sidecar's SeriesInstanceUID (what convkit
and dcm2niix write beside NAME.nii.gz), or else by geometry: the series nearest in
the folder tree (the volume's folder, then its parents) whose grid it matches. The
comparison is in world space: both grids are brought to the closest canonical
(RAS+) axes, then shapes and the world positions of the grid corners must agree.
So a file written reoriented (LAS, by another converter) matches its series, and
one whose affine was changed, flipped, or stretched does not.

A volume that matches no grid exactly but has the same matrix as a series nearby
and overlaps it in space is taken to belong to it, and the difference is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convkit.audit.findings import Finding, finding
from convkit.audit.series import Grid, SeriesAudit

#: Grid corners (voxel centres) may be this far apart and still be the same grid (mm).
PAIR_TOLERANCE_MM = 0.02
#: A loosely paired volume's centre lies within this fraction of the series' diagonal
#: (a flipped axis moves the centre by up to the whole extent along it).
LOOSE_CENTRE_FRACTION = 1.0


@dataclass
class Pairing:
    """Which series a volume was checked against, how, and the outcome."""

    series: str  # label
    method: str  # sidecar | geometry
    result: str  # match | mismatch | unchecked
    grid: str = ""  # which expected grid matched (output, resampled, positions)
    detail: str = ""


def _world_axes(linear: np.ndarray) -> list[int]:
    """For each world axis (R, A, S), the voxel axis closest to it (largest cosine first)."""
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


def canonical(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """(affine, shape) of the same grid, its axes reordered and flipped to the closest RAS+.

    Each voxel axis goes to the world axis its direction is closest to (largest cosine
    first), pointing the positive way; the returned affine maps indices of the
    reoriented array to the same RAS positions. Pure numpy (a few microseconds, the
    same result as nibabel's io_orientation for orthogonal affines): this runs for
    every volume and every candidate grid.
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


def axis_codes(affine: np.ndarray) -> str:
    """Closest canonical axis codes of a RAS affine, e.g. 'LPS' (as geometry.axis_codes).

    Orthogonal affines (every DICOM output grid) are coded here, where nibabel's
    io_orientation gives the same letters, so that a DICOM-only audit need not import
    nibabel (~0.3 s); sheared ones go to geometry.axis_codes (nibabel's SVD).
    """
    linear = np.asarray(affine, float)[:3, :3]
    norms = np.linalg.norm(linear, axis=0)
    if np.any(norms == 0):
        from convkit.geometry import axis_codes as nibabel_codes

        return nibabel_codes(affine)
    unit = linear / norms
    if np.max(np.abs(unit.T @ unit - np.eye(3))) > 1e-6:
        from convkit.geometry import axis_codes as nibabel_codes

        return nibabel_codes(affine)
    letters = [""] * 3
    for world, voxel in enumerate(_world_axes(linear)):
        letters[voxel] = ("RAS" if linear[world, voxel] > 0 else "LPI")[world]
    return "".join(letters)


def corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(8, 3) world positions of the grid's corner voxel centres."""
    extent = [max(int(n) - 1, 0) for n in shape[:3]]
    points = np.array([[i, j, k, 1.0] for i in (0, extent[0]) for j in (0, extent[1])
                       for k in (0, extent[2])])
    return (affine @ points.T).T[:, :3]


@dataclass
class Placed:
    """A grid brought to the closest canonical axes, with what comparisons need (RAS mm)."""

    affine: np.ndarray
    shape: tuple[int, ...]
    corners: np.ndarray
    centre: np.ndarray
    diagonal: float


def place(affine: np.ndarray, shape: tuple[int, ...]) -> Placed:
    canonical_affine, canonical_shape = canonical(affine, shape)
    points = corners(canonical_affine, canonical_shape)
    return Placed(canonical_affine, canonical_shape, points, points.mean(axis=0),
                  float(np.linalg.norm(points[-1] - points[0])))


def _placed(grid: Grid) -> Placed:
    """The grid's Placed, computed once per grid (grids are compared with many volumes)."""
    cached = getattr(grid, "_placed", None)
    if cached is None:
        cached = place(grid.affine, grid.shape)
        object.__setattr__(grid, "_placed", cached)
    return cached


def same_grid(volume: Placed, n_times: int, grid: Grid) -> bool:
    target = _placed(grid)
    if volume.shape != target.shape or n_times != grid.n_times:
        return False
    distance = np.max(np.linalg.norm(volume.corners - target.corners, axis=1))
    return bool(distance <= PAIR_TOLERANCE_MM)


def describe_difference(volume: Placed, n_times: int, grid: Grid) -> str:
    """What differs between a volume's grid and a series grid, in world space."""
    target = _placed(grid)
    parts = []
    if volume.shape != target.shape:
        parts.append(f"grid {_x(volume.shape)} vs {_x(target.shape)}")
    a_spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)
    b_spacing = np.linalg.norm(target.affine[:3, :3], axis=0)
    if not np.allclose(a_spacing, b_spacing, rtol=1e-3, atol=1e-4):
        parts.append(f"voxel size {_x(a_spacing, '.4g')} vs {_x(b_spacing, '.4g')} mm")
    angle = _axes_angle(volume.affine, target.affine)
    if angle > 0.05:
        parts.append(f"axes rotated by {angle:.2f} degrees")
    origin = float(np.linalg.norm(volume.affine[:3, 3] - target.affine[:3, 3]))
    if origin > PAIR_TOLERANCE_MM:
        parts.append(f"first voxel {origin:.3g} mm away")
    elif volume.shape == target.shape:
        distance = float(np.max(np.linalg.norm(volume.corners - target.corners, axis=1)))
        if distance > PAIR_TOLERANCE_MM:
            parts.append(f"corners up to {distance:.3g} mm apart")
    if n_times != grid.n_times:
        parts.append(f"{n_times} volume(s) vs {grid.n_times}")
    return "; ".join(parts) or "a different grid"


def _axes_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Largest angle (degrees) between corresponding voxel axes of two affines."""
    ua = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)
    ub = b[:3, :3] / np.linalg.norm(b[:3, :3], axis=0)
    cosines = np.clip(np.sum(ua * ub, axis=0), -1.0, 1.0)
    return float(np.degrees(np.max(np.arccos(cosines))))


def _x(values, spec: str = "d") -> str:
    return "x".join(format(float(v) if spec != "d" else int(v), spec) for v in values)


def _loose(volume: Placed, grid: Grid) -> float | None:
    """Distance between centres when the volume plausibly shows the same scan, else None."""
    target = _placed(grid)
    if sorted(volume.shape) != sorted(target.shape):
        return None
    distance = float(np.linalg.norm(volume.centre - target.centre))
    return distance if distance <= LOOSE_CENTRE_FRACTION * max(target.diagonal, 1.0) else None


def pair_volume(affine: np.ndarray, shape: tuple[int, ...], n_times: int,
                by_uid: list[SeriesAudit], nearby: list[SeriesAudit]) -> Pairing | None:
    """Pair one volume: with the series its sidecar names, else with a series nearby."""
    volume = place(affine, shape)
    if by_uid:
        candidates = [(s, g) for s in by_uid for g in s.grids]
        if not candidates:
            return Pairing(by_uid[0].label, "sidecar", "unchecked",
                           detail="the series has no geometry to compare with")
        for series, grid in candidates:
            if same_grid(volume, n_times, grid):
                return Pairing(series.label, "sidecar", "match", grid.name)
        series, grid = min(candidates, key=lambda item: (
            sorted(volume.shape) != sorted(_placed(item[1]).shape),
            float(np.linalg.norm(volume.centre - _placed(item[1]).centre))))
        return Pairing(series.label, "sidecar", "mismatch", grid.name,
                       describe_difference(volume, n_times, grid))
    candidates = [(s, g) for s in nearby for g in s.grids]
    for series, grid in candidates:
        if same_grid(volume, n_times, grid):
            return Pairing(series.label, "geometry", "match", grid.name)
    loose = [(d, s, g) for s, g in candidates if (d := _loose(volume, g)) is not None]
    if not loose:
        return None
    _, series, grid = min(loose, key=lambda item: item[0])
    return Pairing(series.label, "geometry", "mismatch", grid.name,
                   describe_difference(volume, n_times, grid))


def nearby_series(volume_path: Path, root: Path, folders: dict[str, list[SeriesAudit]],
                  ) -> list[SeriesAudit]:
    """Series with files in the volume's folder or below it, else in the nearest parent that has."""
    folder = volume_path.parent
    keys = sorted(folders)
    while True:
        prefix = str(folder)
        found: dict[int, SeriesAudit] = {}
        for key in keys:
            if key == prefix or key.startswith(prefix.rstrip("/") + "/"):
                for audit in folders[key]:
                    found[id(audit)] = audit
        if found or folder == root or folder.parent == folder:
            return list(found.values())
        if not folder.is_relative_to(root):
            return []
        folder = folder.parent


def pair_finding(path: Path, pairing: Pairing) -> list[Finding]:
    if pairing.result != "mismatch":
        return []
    how = ("its sidecar names this series" if pairing.method == "sidecar"
           else "same matrix, overlapping the series in space")
    target = {"output": "what dicom2nii writes", "resampled": "the --resample grid",
              "positions": "the sheared grid of the slice positions"}.get(pairing.grid, "")
    return [finding("pair.geometry-mismatch",
                    f"differs from series {pairing.series} ({how}) in world space: "
                    f"{pairing.detail} (compared with {target})",
                    f"regenerate it from the DICOM (convkit dicom2nii --series {pairing.series}),"
                    " or remove it if it is stale", path=path, series=pairing.series)]
