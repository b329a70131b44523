"""Unit tests for convkit.geometry: every expectation is worked out here by hand.

Conventions under test (DESIGN.md, "Geometry: facts that converters get wrong"):
ImageOrientationPatient = [row direction (increasing column index), column
direction (increasing row index)], PixelSpacing = [between rows, between
columns], normal = row x column, DICOM space is LPS and NIfTI space RAS.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from helpers import rotation

from convkit import geometry
from convkit.dicom.plan import output_grid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def oblique_iop() -> tuple[float, ...]:
    r = rotation(20.0, -35.0, 50.0)
    return tuple(r[:, 0]) + tuple(r[:, 1])


# --------------------------------------------------------------------------- plane_axes


@pytest.mark.parametrize(
    ("iop", "normal"),
    [
        (AXIAL, (0, 0, 1)),
        (CORONAL, (0, 1, 0)),  # (1,0,0) x (0,0,-1) = (0,1,0)
        (SAGITTAL, (-1, 0, 0)),  # (0,1,0) x (0,0,-1) = (-1,0,0)
        ((1, 0, 0, 0, -1, 0), (0, 0, -1)),
        ((-1, 0, 0, 0, 1, 0), (0, 0, -1)),
        ((0, 0, 1, 1, 0, 0), (0, 1, 0)),  # z x x = y
    ],
)
def test_plane_axes_canonical(iop, normal):
    row, col, n = geometry.plane_axes(np.array(iop, float))
    np.testing.assert_allclose(row, iop[:3], atol=1e-12)
    np.testing.assert_allclose(col, iop[3:], atol=1e-12)
    np.testing.assert_allclose(n, normal, atol=1e-12)


def test_plane_axes_normalises_and_is_right_handed():
    r = rotation(20.0, -35.0, 50.0)
    # Scaled cosines (as some writers store with rounding) must come back unit length.
    iop = np.concatenate([r[:, 0] * 1.0004, r[:, 1] * 0.9997])
    row, col, normal = geometry.plane_axes(iop)
    np.testing.assert_allclose(row, r[:, 0], atol=1e-12)
    np.testing.assert_allclose(col, r[:, 1], atol=1e-12)
    np.testing.assert_allclose(normal, r[:, 2], atol=1e-12)  # r is a rotation: c0 x c1 = c2
    assert np.linalg.norm(normal) == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.det(np.stack([row, col, normal], axis=1)) == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------- affines


def test_affine_lps_uses_pixel_spacing_in_dicom_order():
    # PixelSpacing = [between rows (along the column direction), between columns (along a row)].
    affine = geometry.affine_lps(np.array(CORONAL), (0.7, 0.4), np.array([-10.0, 20.0, 30.0]),
                                 np.array([0.0, 2.5, 0.0]))
    expected = np.array([
        [0.4, 0.0, 0.0, -10.0],   # i: row direction (1,0,0) * 0.4 (between columns)
        [0.0, 0.0, 2.5, 20.0],    # k: the given slice step
        [0.0, -0.7, 0.0, 30.0],   # j: column direction (0,0,-1) * 0.7 (between rows)
        [0.0, 0.0, 0.0, 1.0],
    ])
    np.testing.assert_allclose(affine, expected, atol=1e-12)
    # Pixel (row 3, column 5) of that slice: origin + 5 * 0.4 * row + 3 * 0.7 * col.
    world = affine @ [5, 3, 0, 1]
    np.testing.assert_allclose(world[:3], [-10 + 2.0, 20.0, 30 - 2.1], atol=1e-12)


def test_lps_to_ras_negates_x_and_y_and_is_an_involution():
    rng = np.random.default_rng(1)
    affine = np.eye(4)
    affine[:3, :] = rng.normal(size=(3, 4))
    ras = geometry.lps_to_ras(affine)
    np.testing.assert_array_equal(ras[0], -affine[0])
    np.testing.assert_array_equal(ras[1], -affine[1])
    np.testing.assert_array_equal(ras[2:], affine[2:])
    np.testing.assert_array_equal(geometry.lps_to_ras(ras), affine)


def test_project_positions():
    iop = oblique_iop()
    normal = rotation(20.0, -35.0, 50.0)[:, 2]
    positions = np.array([[1.0, 2.0, 3.0], [-4.0, 0.5, 9.0]])
    np.testing.assert_allclose(geometry.project_positions(positions, iop), positions @ normal,
                               atol=1e-12)


def test_output_grid_is_along_the_normal():
    """The grid dicom2nii writes (and the audit predicts) for a straight oblique stack: i along
    IOP[:3] at the column spacing, j along IOP[3:] at the row spacing, k along the normal."""
    iop = oblique_iop()
    r = rotation(20.0, -35.0, 50.0)
    origin = np.array([12.0, -30.0, 45.5])
    positions = origin + np.outer(np.arange(5), r[:, 2] * 1.25)
    stack = geometry.analyse_stack(positions, iop, (0.9, 0.6))
    grid = output_grid(stack, (0.9, 0.6), (64, 48), n_times=3)
    expected = np.eye(4)
    expected[:3, 0] = r[:, 0] * 0.6
    expected[:3, 1] = r[:, 1] * 0.9
    expected[:3, 2] = r[:, 2] * 1.25
    expected[:3, 3] = origin
    np.testing.assert_allclose(grid.affine, geometry.lps_to_ras(expected), atol=1e-9)
    assert (grid.name, grid.shape, grid.n_times) == ("output", (64, 48, 5), 3)


# --------------------------------------------------------------------------- analyse_stack


def axial_positions(distances, origin=(10.0, -20.0, 0.0)):
    """Axial positions at the given distances along +z (the normal of AXIAL)."""
    return np.array([[origin[0], origin[1], origin[2] + d] for d in distances], float)


def test_regular_stack():
    stack = geometry.analyse_stack(axial_positions([0, 2, 4, 6, 8]), AXIAL, (0.5, 0.5))
    assert stack.regular and stack.gaps == ()
    assert not stack.sheared
    assert stack.spacing == pytest.approx(2.0)
    np.testing.assert_allclose(stack.distances, [0, 2, 4, 6, 8])
    np.testing.assert_allclose(stack.offsets, 0, atol=1e-12)
    np.testing.assert_allclose(stack.origin, [10.0, -20.0, 0.0])
    assert stack.tilt_degrees == 0.0


def test_single_slice_uses_fallback_spacing():
    stack = geometry.analyse_stack(axial_positions([5.0]), AXIAL, (1.0, 1.0),
                                   fallback_spacing=3.3)
    assert stack.spacing == pytest.approx(3.3)
    assert stack.gaps == () and not stack.sheared and stack.tilt_degrees == 0.0


def test_two_slices_spacing_from_positions_not_fallback():
    stack = geometry.analyse_stack(axial_positions([0.0, 4.5]), AXIAL, (1.0, 1.0),
                                   fallback_spacing=1.0)
    assert stack.spacing == pytest.approx(4.5)


def test_missing_slice_is_a_gap_with_index_and_step():
    # 0, 2, 4, (6 missing), 8, 10: the step after sorted slice 2 is 4 mm where the series steps 2.
    stack = geometry.analyse_stack(axial_positions([0, 2, 4, 8, 10]), AXIAL, (0.5, 0.5))
    assert not stack.regular
    assert len(stack.gaps) == 1
    gap = stack.gaps[0]
    assert gap.after_index == 2
    assert gap.position_mm == pytest.approx(4.0)
    assert gap.step_mm == pytest.approx(4.0)
    assert gap.expected_mm == pytest.approx(2.0)


def test_several_gaps_all_reported():
    stack = geometry.analyse_stack(axial_positions([0, 1, 2, 4, 5, 7, 8]), AXIAL, (1.0, 1.0))
    assert [g.after_index for g in stack.gaps] == [2, 4]
    assert [g.step_mm for g in stack.gaps] == pytest.approx([2.0, 2.0])
    assert all(g.expected_mm == pytest.approx(1.0) for g in stack.gaps)


def test_extra_slice_is_uneven():
    stack = geometry.analyse_stack(axial_positions([0, 2, 4, 5, 6, 8, 10]), AXIAL, (1.0, 1.0))
    assert [g.after_index for g in stack.gaps] == [2, 3]
    assert [g.step_mm for g in stack.gaps] == pytest.approx([1.0, 1.0])


def test_gap_along_oblique_normal():
    iop = oblique_iop()
    r = rotation(20.0, -35.0, 50.0)
    origin = np.array([3.0, -7.0, 11.0])
    ks = [0, 1, 2, 3, 5, 6]  # index 4 missing
    positions = origin + np.outer(np.array(ks, float) * 1.5, r[:, 2])
    stack = geometry.analyse_stack(positions, iop, (0.8, 0.8))
    assert [g.after_index for g in stack.gaps] == [3]
    assert stack.gaps[0].step_mm == pytest.approx(3.0)
    assert stack.gaps[0].expected_mm == pytest.approx(1.5)
    assert not stack.sheared


def test_jitter_below_tolerance_is_not_a_gap_nor_shear():
    rng = np.random.default_rng(7)
    distances = np.arange(12) * 1.25 + rng.uniform(-0.005, 0.005, 12)
    positions = axial_positions(distances)
    positions[:, :2] += rng.uniform(-0.005, 0.005, (12, 2))  # in-plane jitter too
    stack = geometry.analyse_stack(positions, AXIAL, (0.5, 0.5))
    assert stack.gaps == ()
    assert not stack.sheared
    assert stack.spacing == pytest.approx((distances[-1] - distances[0]) / 11)


def test_misplaced_slice_above_tolerance_is_uneven():
    distances = np.arange(8) * 1.0
    distances[4] += 0.1  # 0.1 mm off the grid: well above 0.02 mm
    stack = geometry.analyse_stack(axial_positions(distances), AXIAL, (0.5, 0.5))
    assert [g.after_index for g in stack.gaps] == [3, 4]
    assert [g.step_mm for g in stack.gaps] == pytest.approx([1.1, 0.9])


def test_typical_step_is_the_step_most_others_agree_with():
    # 1.0 is within 0.02 mm of five steps (itself, 1.01 and the three 1.0s), 2.0 of two
    assert geometry.typical_step([1.0, 1.01, 2.0, 1.0, 2.0, 1.0, 5.0]) == 1.0
    # a tie between 1.0 and 3.0 (two each): the smaller step
    assert geometry.typical_step([3.0, 1.0, 3.0, 1.0]) == 1.0
    # the tolerance grows with the step (1 %): 10.0, 10.05 and 10.09 agree (three each, the
    # smallest wins), 10.3 agrees with none of them, 0.5 with the other 0.5 only
    assert geometry.typical_step([10.3, 10.0, 10.05, 10.09, 0.5, 0.5]) == 10.0


def test_typical_step_over_many_steps_counts_across_blocks():
    # more steps than one block of geometry._STEP_BLOCK: every block counts every step
    steps = np.r_[np.full(1500, 2.5), np.full(1600, 0.7), np.full(900, 2.505)]
    assert len(steps) > 2 * geometry._STEP_BLOCK
    assert geometry.typical_step(steps) == 2.5  # 2.5 and 2.505 agree: 2,400 against 1,600
    rng = np.random.default_rng(3)
    mixed = rng.permutation(np.r_[np.full(1100, 1.25), np.full(1200, 3.0)])
    assert geometry.typical_step(mixed) == 3.0


@pytest.mark.parametrize("tilt", [15.0, 5.0, -20.0])
def test_gantry_tilt_is_shear_with_the_right_angle(tilt):
    spacing = 2.5
    shift = spacing * math.tan(math.radians(tilt))  # per slice, along the column direction (y)
    positions = np.array([[-100.0, 50.0 + k * shift, 30.0 + k * spacing] for k in range(10)])
    stack = geometry.analyse_stack(positions, AXIAL, (0.5, 0.5))
    assert stack.sheared
    assert stack.tilt_degrees == pytest.approx(abs(tilt), abs=1e-9)
    assert stack.spacing == pytest.approx(spacing)  # along the normal, not along the step
    assert stack.gaps == ()
    np.testing.assert_allclose(stack.distances, np.arange(10) * spacing, atol=1e-9)
    np.testing.assert_allclose(stack.offsets[:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(stack.offsets[:, 1], np.arange(10) * shift, atol=1e-9)


def test_oblique_tilt_in_both_in_plane_directions():
    iop = oblique_iop()
    r = rotation(20.0, -35.0, 50.0)
    spacing = 3.0
    drift = spacing * math.tan(math.radians(15.0))
    in_plane = 0.6 * r[:, 0] + 0.8 * r[:, 1]
    step = r[:, 2] * spacing + in_plane * drift
    positions = np.array([1.0, 2.0, 3.0]) + np.outer(np.arange(6), step)
    stack = geometry.analyse_stack(positions, iop, (0.7, 0.9))
    assert stack.sheared
    assert stack.tilt_degrees == pytest.approx(15.0, abs=1e-9)
    assert stack.spacing == pytest.approx(spacing)
    np.testing.assert_allclose(stack.offsets[-1], [0.6 * 5 * drift, 0.8 * 5 * drift], atol=1e-9)


def test_small_in_plane_drift_above_tolerance_is_shear():
    positions = axial_positions([0, 1, 2, 3])
    positions[3, 0] += 0.05  # 0.05 mm > max(0.02 mm, 1% of a 1 mm pixel)
    assert geometry.analyse_stack(positions, AXIAL, (1.0, 1.0)).sheared


def test_same_orientation_tolerance():
    a = np.array(AXIAL)
    assert geometry.same_orientation(a, a + 5e-4)
    assert not geometry.same_orientation(a, a + np.array([0, 0, 0, 0, 0, 2e-3]))
    assert not geometry.same_orientation(a, np.array(CORONAL))


# --------------------------------------------------------------------------- axis codes


def ras_affine(iop, pixel_spacing=(1.0, 1.0), slice_spacing=1.0):
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    lps = np.eye(4)
    lps[:3, 0] = row * pixel_spacing[1]
    lps[:3, 1] = col * pixel_spacing[0]
    lps[:3, 2] = np.cross(row, col) * slice_spacing
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize(
    ("affine", "codes"),
    [
        (np.eye(4), "RAS"),
        (np.diag([-1.0, -1.0, 1.0, 1.0]), "LPS"),
        (np.diag([-0.5, 2.0, -3.0, 1.0]), "LAI"),
        (ras_affine(AXIAL), "LPS"),
        (ras_affine(CORONAL), "LIP"),
        (ras_affine(SAGITTAL), "PIR"),
        (np.array([[0, 0, 2.0, 0], [1.5, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]]), "AIR"),
    ],
)
def test_axis_codes_known(affine, codes):
    assert geometry.axis_codes(affine) == codes
    assert "".join(nib.aff2axcodes(affine)) == codes


def random_rotation(rng) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _random_affines(seed: int, count: int, anisotropic: bool):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        linear = random_rotation(rng)
        if rng.random() < 0.5:
            linear[:, 2] *= -1  # left-handed too
        if anisotropic:
            linear = linear @ np.diag(rng.uniform(0.3, 4.0, 3))
        affine = np.eye(4)
        affine[:3, :3] = linear
        affine[:3, 3] = rng.uniform(-100, 100, 3)
        yield affine


def test_axis_codes_match_nibabel_on_random_rotations():
    mismatches = [(np.round(a[:3, :3], 3), geometry.axis_codes(a), "".join(nib.aff2axcodes(a)))
                  for a in _random_affines(2026, 2000, anisotropic=False)
                  if geometry.axis_codes(a) != "".join(nib.aff2axcodes(a))]
    assert not mismatches, f"{len(mismatches)} of 2000 differ, first: {mismatches[:3]}"


def test_axis_codes_match_nibabel_with_anisotropic_voxels():
    # Axis codes are about directions: voxel size (column length) must not change them.
    mismatches = [(np.round(a[:3, :3], 3), geometry.axis_codes(a), "".join(nib.aff2axcodes(a)))
                  for a in _random_affines(2027, 2000, anisotropic=True)
                  if geometry.axis_codes(a) != "".join(nib.aff2axcodes(a))]
    assert not mismatches, f"{len(mismatches)} of 2000 differ, first: {mismatches[:3]}"


def test_axis_codes_do_not_depend_on_voxel_size():
    direction = np.array([[0.06, 0.692, -0.719], [-0.551, 0.624, 0.554], [0.832, 0.363, 0.419]])
    # Greedy by largest |cosine|: column 0 -> S (0.832); then -0.719 (x, column 2) -> L;
    # column 1 takes y -> A.  nibabel agrees: 'SAL'.
    for sizes in [(1.0, 1.0, 1.0), (1.0, 1.0, 0.5), (1.0, 2.0, 1.0), (0.5, 0.5, 3.0)]:
        affine = np.eye(4)
        affine[:3, :3] = direction @ np.diag(sizes)
        assert "".join(nib.aff2axcodes(affine)) == "SAL"
        assert geometry.axis_codes(affine) == "SAL", f"voxel sizes {sizes}"


def test_obliquity_degrees():
    assert geometry.obliquity_degrees(np.diag([2.0, 3.0, 4.0, 1.0])) == pytest.approx(0.0)
    affine = np.eye(4)
    affine[:3, :3] = rotation(0.0, 0.0, 30.0) @ np.diag([0.5, 0.5, 2.0])
    assert geometry.obliquity_degrees(affine) == pytest.approx(30.0, abs=1e-9)
