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
from convkit.audit.series import SeriesAudit
from convkit.dicom.plan import Grid
from convkit.geometry import PlacedGrid, lps_to_ras, place_grid

#: Grid corners (voxel centres) may be this far apart and still be the same grid (mm).
PAIR_TOLERANCE_MM = 0.02
#: A sidecar's ImageOrientationPatientDICOM and a volume axis may differ this much (degrees).
SIDECAR_ANGLE_TOLERANCE_DEG = 0.5
#: ... and its PixelSpacing / SliceSpacingFromPositions from a voxel size this much (relative).
SIDECAR_SPACING_TOLERANCE = 1e-3
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


def same_grid(volume: PlacedGrid, n_times: int, grid: Grid) -> bool:
    target = grid.placed
    if volume.shape != target.shape or n_times != grid.n_times:
        return False
    distance = np.max(np.linalg.norm(volume.corners - target.corners, axis=1))
    return bool(distance <= PAIR_TOLERANCE_MM)


def describe_difference(volume: PlacedGrid, n_times: int, grid: Grid) -> str:
    """What differs between a volume's grid and a series grid, in world space."""
    target = grid.placed
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


def _loose(volume: PlacedGrid, grid: Grid) -> float | None:
    """Distance between centres when the volume plausibly shows the same scan, else None."""
    target = grid.placed
    if sorted(volume.shape) != sorted(target.shape):
        return None
    distance = float(np.linalg.norm(volume.centre - target.centre))
    return distance if distance <= LOOSE_CENTRE_FRACTION * max(target.diagonal, 1.0) else None


def pair_volume(affine: np.ndarray, shape: tuple[int, ...], n_times: int,
                by_uid: list[SeriesAudit], nearby: list[SeriesAudit]) -> Pairing | None:
    """Pair one volume: with the series its sidecar names, else with a series nearby."""
    volume = place_grid(affine, shape)
    if by_uid:
        candidates = [(s, g) for s in by_uid for g in s.grids]
        if not candidates:
            return Pairing(by_uid[0].label, "sidecar", "unchecked",
                           detail="the series has no geometry to compare with")
        for series, grid in candidates:
            if same_grid(volume, n_times, grid):
                return Pairing(series.label, "sidecar", "match", grid.name)
        series, grid = min(candidates, key=lambda item: (
            sorted(volume.shape) != sorted(item[1].placed.shape),
            float(np.linalg.norm(volume.centre - item[1].placed.centre))))
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


def sidecar_mismatch(affine: np.ndarray, sidecar: dict) -> list[str]:
    """How a JSON sidecar's image description contradicts a volume's affine (RAS), or [].

    A sidecar made for this image has its rows and columns (ImageOrientationPatientDICOM)
    along two voxel axes of the volume, up to sign (converters flip axes), with
    PixelSpacing's voxel sizes along them, and (convkit) SliceSpacingFromPositions along the
    third. Fields that are missing or malformed are not compared.
    """
    lps = lps_to_ras(affine)[:3, :3]
    sizes = np.linalg.norm(lps, axis=0)
    if not np.all(np.isfinite(sizes)) or np.any(sizes == 0):
        return []
    units = lps / sizes
    orientation = _numbers(sidecar.get("ImageOrientationPatientDICOM"), 6)
    if orientation is None:
        return []
    found: list[str] = []
    axes: list[int] = []
    for name, direction in (("rows", orientation[:3]), ("columns", orientation[3:])):
        length = float(np.linalg.norm(direction))
        if length == 0:
            return []
        cosines = np.abs(units.T @ (direction / length))
        axis = int(np.argmax(cosines))
        angle = float(np.degrees(np.arccos(min(float(cosines[axis]), 1.0))))
        if angle > SIDECAR_ANGLE_TOLERANCE_DEG or axis in axes:
            found.append(f"its {name} run along {_x(direction, '.4g')} (LPS), no voxel axis of "
                         "the volume does")
            return found
        axes.append(axis)
    # PixelSpacing is [between rows, between columns]: along the columns, then the rows.
    pixel = _numbers(sidecar.get("PixelSpacing"), 2)
    slice_axis = ({0, 1, 2} - set(axes)).pop()
    step = _numbers([sidecar.get("SliceSpacingFromPositions")], 1)
    checks = [] if pixel is None else [(axes[0], pixel[1], "PixelSpacing[1]"),
                                       (axes[1], pixel[0], "PixelSpacing[0]")]
    if step is not None:
        checks.append((slice_axis, step[0], "SliceSpacingFromPositions"))
    for axis, value, name in checks:
        if not np.isclose(sizes[axis], value, rtol=SIDECAR_SPACING_TOLERANCE, atol=1e-4):
            found.append(f"{name} {value:.6g} mm, the volume's voxel size along that axis "
                         f"{sizes[axis]:.6g} mm")
    return found


def _numbers(value, count: int) -> np.ndarray | None:
    """count finite numbers from a JSON list, else None."""
    if not isinstance(value, list) or len(value) != count:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    array = np.asarray(value, float)
    return array if np.all(np.isfinite(array)) else None


def sidecar_finding(path: Path, sidecar: Path, affine: np.ndarray, data: dict) -> list[Finding]:
    """volume.sidecar-mismatch when the JSON sidecar beside a volume describes another image."""
    problems = sidecar_mismatch(affine, data)
    if not problems:
        return []
    uid = data.get("SeriesInstanceUID")
    whose = f" (series {uid})" if isinstance(uid, str) and uid else ""
    return [finding("volume.sidecar-mismatch",
                    f"its sidecar {sidecar.name}{whose} describes another image: "
                    f"{'; '.join(problems)}",
                    "the sidecar was written for another volume of the same name (e.g. another "
                    "format or series written into the same folder): regenerate both, or "
                    "remove the stale one", path=path)]
