"""Deterministic synthetic anatomy for sample data, tests and benchmarks (numpy only, no I/O).

The chest CT phantom is laid out in physical millimetres around the volume centre, so
changing the matrix or the spacing changes the sampling, not the anatomy. Its axes are
those of an axial DICOM stack in LPS: array index (k, r, c) sits at

    x = (c - (cols - 1) / 2) * column_spacing   (+x: patient left)
    y = (r - (rows - 1) / 2) * row_spacing      (+y: posterior)
    z = (k - (n - 1) / 2) * slice_spacing       (+z: superior; slice 0 is the most inferior)

The body is an adult torso (330 x 240 mm) and the lungs span about z = -110..+150 mm, so a
field of view of about 350 mm and 300 mm of slices show all of it; smaller volumes are crops.
Structures are extruded along the slice axis (a 2D field compared against a per-slice
limit), which keeps a 512 x 512 x 300 volume to a few seconds and a few bytes per voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Layout in mm (x, y, z as in the module docstring). Semi-axes are (x, y[, z]).
_BODY_SEMI_AXES = (165.0, 120.0)
_FAT_THICKNESS = 12.0
_LUNG_CENTRES_X = (-85.0, 85.0)  # right lung, left lung
_LUNG_CENTRE_YZ = (5.0, 20.0)
_LUNG_SEMI_AXES = (65.0, 85.0, 130.0)
_HEART_CENTRE = (20.0, -40.0, -35.0)
_HEART_SEMI_AXES = (55.0, 45.0, 50.0)
_HEART_WALL = 8.0
_ASCENDING_AORTA = (-5.0, -25.0, 15.0)  # x, y, radius
_DESCENDING_AORTA = (28.0, 35.0, 12.0)
_ARCH_Z = 80.0
_VERTEBRA = (0.0, 60.0, 18.0)  # x, y, radius
_SPINAL_CANAL = (0.0, 88.0, 8.0)
_NEURAL_ARCH = (0.0, 88.0, 14.0)  # bone ring around the canal
_MEDIASTINUM_MARGIN = 4.0  # lung tissue keeps this far from heart, aorta and spine
# Nominal ground-glass centres (x, y, z), chosen well inside the lungs and clear of the
# mediastinum; each is jittered by up to _GGO_JITTER mm per axis.
_GGO_CENTRES = ((-95.0, 30.0, 40.0), (-75.0, -35.0, -10.0), (110.0, 25.0, 20.0),
                (75.0, -20.0, 90.0))
_GGO_JITTER = 5.0
_GGO_SEMI_AXIS_RANGE = (9.0, 15.0)
_VESSELS_PER_LUNG = 14
_VESSEL_RADIUS_RANGE = (1.5, 3.5)
_VESSEL_CLEARANCE = 3.0  # gap between a vessel and a ground-glass patch

# Tissue labels: (mean HU, noise half-width HU). The noise is triangular (the sum of two
# uniform draws, which is cheaper than a normal draw and bounded by construction), so every
# tissue stays strictly within mean +- half-width; air is exactly -1000.
# Ground-glass labels follow these, one per patch, each with its own mean.
_TISSUES = {
    "air": (-1000.0, 0.0),
    "soft": (40.0, 10.0),
    "fat": (-100.0, 12.0),
    "canal": (15.0, 10.0),
    "bone": (700.0, 50.0),
    "myocardium": (60.0, 15.0),
    "blood": (180.0, 20.0),
    "aorta": (200.0, 20.0),
    "lung": (-850.0, 25.0),
    "vessel": (40.0, 10.0),
}
_LABEL = {name: index for index, name in enumerate(_TISSUES)}
_GGO_MEAN_RANGE = (-630.0, -570.0)
_GGO_HALF_WIDTH = 100.0

Shape3 = tuple[int, int, int]
GgoShape = tuple[np.ndarray, np.ndarray]  # centre (x, y, z) and semi-axes, mm


class _Grid:
    """Voxel-centre coordinates in mm along each axis, centred on the volume."""

    def __init__(self, shape: Shape3, pixel_spacing_mm: Sequence[float],
                 slice_spacing_mm: float) -> None:
        n, rows, cols = shape
        self.shape = (n, rows, cols)
        self.z = _centred_axis(n, slice_spacing_mm)
        self.y = _centred_axis(rows, pixel_spacing_mm[0])[:, None]
        self.x = _centred_axis(cols, pixel_spacing_mm[1])[None, :]

    def ellipse(self, cx: float, cy: float, a: float, b: float) -> np.ndarray:
        """(rows, cols) quadratic form: <= 1 inside the ellipse."""
        return ((self.x - cx) / a) ** 2 + ((self.y - cy) / b) ** 2

    def extrude(self, field: np.ndarray, limit: np.ndarray) -> np.ndarray:
        """(n, rows, cols) mask of field <= limit, with a 2D field and one limit per slice."""
        return field[None, :, :] <= limit[:, None, None]

    def ellipsoid(self, centre: Sequence[float] | np.ndarray,
                  semi_axes: Sequence[float] | np.ndarray) -> np.ndarray:
        """(n, rows, cols) mask of a solid axis-aligned ellipsoid."""
        (cx, cy, cz), (a, b, c) = centre, semi_axes
        return self.extrude(self.ellipse(cx, cy, a, b), 1 - ((self.z - cz) / c) ** 2)

    def z_tube(self, cx: float, cy: float, radius: float, z_min: float,
               z_max: float) -> np.ndarray:
        """(n, rows, cols) mask of a cylinder along the slice axis between z_min and z_max."""
        inside = (self.z >= z_min) & (self.z <= z_max)
        return self.extrude(self.ellipse(cx, cy, radius, radius), np.where(inside, 1.0, -1.0))

    def flat_tube(self, start: Sequence[float], end: Sequence[float], z: float,
                  radius: float) -> np.ndarray:
        """(n, rows, cols) mask of a tube in the plane at z, between two (x, y) points."""
        (x0, y0), (x1, y1) = start, end
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((self.x - x0) * dx + (self.y - y0) * dy) / (dx * dx + dy * dy), 0, 1)
        distance2 = (self.x - x0 - t * dx) ** 2 + (self.y - y0 - t * dy) ** 2
        return self.extrude(distance2, radius**2 - (self.z - z) ** 2)


def _centred_axis(count: int, spacing: float) -> np.ndarray:
    return ((np.arange(count) - (count - 1) / 2) * spacing).astype(np.float32)


def chest_ct_hu(
    shape: Shape3 = (70, 128, 128),
    pixel_spacing_mm: Sequence[float] = (2.734375, 2.734375),
    slice_spacing_mm: float = 5.0,
    seed: int = 0,
) -> np.ndarray:
    """Synthetic chest CT in Hounsfield units: float32, (n_slices, rows, cols), slice 0 inferior.

    pixel_spacing_mm is (between rows, between columns), as DICOM PixelSpacing.
    """
    return _chest(shape, pixel_spacing_mm, slice_spacing_mm, seed)[0]


def chest_ct_masks(
    shape: Shape3 = (70, 128, 128),
    pixel_spacing_mm: Sequence[float] = (2.734375, 2.734375),
    slice_spacing_mm: float = 5.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Boolean masks of the phantom chest_ct_hu builds from the same arguments.

    Keys: "body" (everything not air), "lungs" (lung fields, including the vessels and
    ground-glass patches inside them), "vessels" (pulmonary vessels), "ggo" (ground-glass
    patches: inside the lungs, clear of vessels, HU within GGO_HU_RANGE) and "bone" (spine).
    """
    return _chest(shape, pixel_spacing_mm, slice_spacing_mm, seed)[1]


def _chest(shape: Shape3, pixel_spacing_mm: Sequence[float], slice_spacing_mm: float,
           seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Build the label volume once, then both the HU image and the public masks from it."""
    rng = np.random.default_rng(seed)
    grid = _Grid(shape, pixel_spacing_mm, slice_spacing_mm)
    ggo_shapes = _ggo_shapes(rng)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    body = np.broadcast_to(grid.ellipse(0, 0, *_BODY_SEMI_AXES) <= 1, grid.shape)
    np.putmask(labels, body, _LABEL["soft"])
    np.putmask(labels, body & ~_body_core(grid), _LABEL["fat"])
    bone = _paint_mediastinum(grid, labels)
    lungs = _lungs(grid)
    np.putmask(labels, lungs, _LABEL["lung"])
    vessels = lungs & _vessels_2d(grid, rng, ggo_shapes)[None, :, :]
    np.putmask(labels, vessels, _LABEL["vessel"])
    ggo = np.zeros(grid.shape, dtype=bool)
    for index, (centre, semi_axes) in enumerate(ggo_shapes):
        # The layout keeps every patch inside the lungs; "& lungs" makes that a guarantee.
        patch = grid.ellipsoid(centre, semi_axes) & lungs
        np.putmask(labels, patch, len(_TISSUES) + index)
        ggo |= patch
    hu = _hounsfield(labels, rng, len(ggo_shapes))
    masks = {"body": np.array(body), "lungs": lungs, "vessels": vessels, "ggo": ggo,
             "bone": bone}
    return hu, masks


def _body_core(grid: _Grid) -> np.ndarray:
    """2D mask of the body inside its subcutaneous fat layer."""
    a, b = _BODY_SEMI_AXES
    return grid.ellipse(0, 0, a - _FAT_THICKNESS, b - _FAT_THICKNESS) <= 1


def _paint_mediastinum(grid: _Grid, labels: np.ndarray) -> np.ndarray:
    """Paint spine, heart and aorta into labels; return the bone mask."""
    canal = _disk(grid, _SPINAL_CANAL)
    neural_arch = _disk(grid, _NEURAL_ARCH) & ~canal
    bone = np.broadcast_to(_disk(grid, _VERTEBRA) | neural_arch, grid.shape)
    np.putmask(labels, bone, _LABEL["bone"])
    np.putmask(labels, np.broadcast_to(canal, grid.shape), _LABEL["canal"])
    np.putmask(labels, _heart(grid, 0.0), _LABEL["myocardium"])
    inner = [axis - _HEART_WALL for axis in _HEART_SEMI_AXES]
    np.putmask(labels, grid.ellipsoid(_HEART_CENTRE, inner), _LABEL["blood"])
    np.putmask(labels, _aorta(grid, 0.0), _LABEL["aorta"])
    return np.array(bone)


def _disk(grid: _Grid, circle: Sequence[float], margin: float = 0.0) -> np.ndarray:
    """2D mask of a disk given as (x, y, radius), grown by margin mm."""
    x, y, radius = circle
    return grid.ellipse(x, y, radius + margin, radius + margin) <= 1


def _heart(grid: _Grid, margin: float) -> np.ndarray:
    return grid.ellipsoid(_HEART_CENTRE, [axis + margin for axis in _HEART_SEMI_AXES])


def _aorta(grid: _Grid, margin: float) -> np.ndarray:
    """Ascending aorta rising from the heart, an arch, and the descending aorta to the bottom."""
    up_x, up_y, up_r = _ASCENDING_AORTA
    down_x, down_y, down_r = _DESCENDING_AORTA
    ascending = grid.z_tube(up_x, up_y, up_r + margin, _HEART_CENTRE[2], _ARCH_Z)
    descending = grid.z_tube(down_x, down_y, down_r + margin, -np.inf, _ARCH_Z)
    arch = grid.flat_tube((up_x, up_y), (down_x, down_y), _ARCH_Z, down_r + margin)
    return ascending | descending | arch


def _lungs(grid: _Grid) -> np.ndarray:
    """Both lungs: ellipsoids with a flattened base, kept clear of heart, aorta and spine.

    The cross-section scales with sqrt(1 - |u|^p), u the normalised height from the lung
    centre: p = 2 (rounded apex) above it, p = 4 (flatter diaphragm) below it.
    """
    centre_y, centre_z = _LUNG_CENTRE_YZ
    a, b, c = _LUNG_SEMI_AXES
    u = (grid.z - centre_z) / c
    limit = 1 - np.abs(u) ** np.where(u > 0, 2, 4)
    lungs = grid.extrude(np.minimum(*(grid.ellipse(x, centre_y, a, b) for x in _LUNG_CENTRES_X)),
                         limit)
    spine = _disk(grid, _VERTEBRA, _MEDIASTINUM_MARGIN)
    spine |= _disk(grid, _NEURAL_ARCH, _MEDIASTINUM_MARGIN)
    lungs &= ~spine[None, :, :]
    lungs &= ~_heart(grid, _MEDIASTINUM_MARGIN)
    lungs &= ~_aorta(grid, _MEDIASTINUM_MARGIN)
    return lungs


def _ggo_shapes(rng: np.random.Generator) -> list[GgoShape]:
    """(centre, semi-axes) in mm of each ground-glass patch: nominal layout plus seeded jitter."""
    shapes = []
    for centre in _GGO_CENTRES:
        jitter = rng.uniform(-_GGO_JITTER, _GGO_JITTER, 3)
        shapes.append((np.asarray(centre) + jitter, rng.uniform(*_GGO_SEMI_AXIS_RANGE, 3)))
    return shapes


def _vessels_2d(grid: _Grid, rng: np.random.Generator,
                ggo_shapes: Sequence[GgoShape]) -> np.ndarray:
    """2D mask of vessel cross-sections; vessels run along z through the lungs.

    Centres are drawn uniformly in each lung's central cross-section; any vessel that would
    come within _VESSEL_CLEARANCE mm of a ground-glass patch (in-plane, which is exact for
    vessels parallel to z) is dropped before the first _VESSELS_PER_LUNG are kept.
    """
    centre_y = _LUNG_CENTRE_YZ[0]
    a, b, _ = _LUNG_SEMI_AXES
    mask = np.zeros(grid.shape[1:], dtype=bool)
    for centre_x in _LUNG_CENTRES_X:
        count = 8 * _VESSELS_PER_LUNG
        angle = rng.uniform(0, 2 * np.pi, count)
        radial = 0.9 * np.sqrt(rng.uniform(0, 1, count))
        xs = centre_x + a * radial * np.cos(angle)
        ys = centre_y + b * radial * np.sin(angle)
        radii = rng.uniform(*_VESSEL_RADIUS_RANGE, count)
        keep = np.ones(count, dtype=bool)
        for ggo_centre, ggo_axes in ggo_shapes:
            gap = np.hypot(xs - ggo_centre[0], ys - ggo_centre[1]) - max(ggo_axes[:2]) - radii
            keep &= gap >= _VESSEL_CLEARANCE
        for index in np.flatnonzero(keep)[:_VESSELS_PER_LUNG]:
            mask |= _disk(grid, (xs[index], ys[index], radii[index]))
    return mask


def _hounsfield(labels: np.ndarray, rng: np.random.Generator, n_ggo: int) -> np.ndarray:
    """HU image: each label's mean plus triangular noise within its half-width."""
    ggo_means = rng.uniform(*_GGO_MEAN_RANGE, n_ggo)
    means = np.array([m for m, _ in _TISSUES.values()] + list(ggo_means), dtype=np.float32)
    half_widths = np.array([w for _, w in _TISSUES.values()] + [_GGO_HALF_WIDTH] * n_ggo,
                           dtype=np.float32)
    hu = rng.random(labels.shape, dtype=np.float32)
    hu += rng.random(labels.shape, dtype=np.float32)
    hu -= 1
    hu *= half_widths[labels]
    hu += means[labels]
    return hu


def head_mr(shape: Shape3 = (20, 80, 64), seed: int = 0) -> np.ndarray:
    """Synthetic T1-weighted head MR: uint16 signal, (n_slices, rows, cols).

    Coordinates are normalised to each array axis (-1..1), so the head fills about 85% of
    every axis whatever the spacing; choose spacing for realistic proportions. Layers from
    outside in: scalp (bright, fatty), skull (dark rim), CSF (dark), cortex (~650) and white
    matter (~850) around two dark lateral ventricles.

    Two features break the symmetry so that flips show: a nose (anterior, below the centre)
    and a bright skin marker on the patient's left, assuming the axes of a sagittal stack
    written with ImageOrientationPatient [0, 1, 0, 0, 0, -1]: slices from patient left to
    right, rows from superior to inferior, columns from anterior to posterior.
    """
    rng = np.random.default_rng(seed)
    k, r, c = (np.linspace(-1, 1, size, dtype=np.float32) for size in shape)
    point = (k[:, None, None], r[None, :, None], c[None, None, :])
    rho = np.sqrt(sum(axis**2 for axis in point)) / 0.85
    signal = np.select(
        [rho <= 0.72, rho <= 0.80, rho <= 0.84, rho <= 0.92, rho <= 1.0],
        [850.0, 650.0, 150.0, 60.0, 700.0],
        default=0.0,
    ).astype(np.float32)
    for side in (-0.15, 0.15):
        signal[_blob(point, (side, -0.1, 0.05), (0.1, 0.18, 0.4))] = 150.0
    signal[_blob(point, (0.0, 0.3, -0.85), (0.12, 0.2, 0.15)) & (rho > 1)] = 400.0
    signal[_blob(point, (-0.92, -0.3, 0.0), (0.07, 0.08, 0.08))] = 1000.0
    noise = rng.normal(0.0, 15.0, shape).astype(np.float32)
    return np.clip(np.abs(signal + noise), 0, 4095).astype(np.uint16)


def _blob(point: Sequence[np.ndarray], centre: Sequence[float],
          semi_axes: Sequence[float]) -> np.ndarray:
    """Mask of a solid axis-aligned ellipsoid, broadcast over the three coordinate arrays."""
    (x, y, z), (x0, y0, z0), (a, b, c) = point, centre, semi_axes
    return ((x - x0) / a) ** 2 + ((y - y0) / b) ** 2 + ((z - z0) / c) ** 2 <= 1
