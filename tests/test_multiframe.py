"""Synthetic enhanced multi-frame files with known geometry, through the real CLI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from helpers import assert_same_world, rotation, run_dcm2niix

from convkit.testing.synthetic import write_enhanced

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def iop_of(matrix: np.ndarray) -> np.ndarray:
    """ImageOrientationPatient whose row and column directions are the matrix's first columns."""
    return np.concatenate([matrix[:, 0], matrix[:, 1]])


def expected_affine(iop, pixel_spacing, first_position, spacing) -> np.ndarray:
    """RAS affine from first principles: i along the row, j down the column, k along the normal."""
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    affine = np.eye(4)
    affine[:3, 0] = row * pixel_spacing[1]
    affine[:3, 1] = col * pixel_spacing[0]
    affine[:3, 2] = np.cross(row, col) * spacing
    affine[:3, 3] = first_position
    return LPS_TO_RAS @ affine


def stack(iop, origin, n, spacing) -> np.ndarray:
    normal = np.cross(iop[:3], iop[3:])
    return np.asarray(origin, float) + np.outer(np.arange(n), normal * spacing)


def frames(n, rows=5, cols=7, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, size=(n, rows, cols)).astype(np.uint16)


def convert(cli, path, out):
    cli("dicom2nii", path.parent, out, check_code=0)
    return {p.name: nib.load(p) for p in sorted(out.glob("*.nii.gz"))}


def test_oblique_stack_with_shuffled_frames(cli, tmp_path):
    iop = iop_of(rotation(25.0, -10.0, 40.0))
    positions = stack(iop, (12.0, -30.0, 5.0), 6, 2.5)
    order = np.array([3, 0, 5, 1, 4, 2])  # frame f holds slice order[f]
    data = frames(6)
    path = write_enhanced(tmp_path / "in" / "mf.dcm", data[order], positions[order],
                          np.tile(iop, (6, 1)), pixel_spacing=(0.8, 1.1), rescale_slope=2.0,
                          rescale_intercept=-50.0)
    (image,) = convert(cli, path, tmp_path / "out").values()
    np.testing.assert_allclose(image.affine, expected_affine(iop, (0.8, 1.1), positions[0], 2.5),
                               atol=1e-4)
    assert image.header["qform_code"] == image.header["sform_code"] == 1
    np.testing.assert_array_equal(image.get_fdata(), data.transpose(2, 1, 0) * 2.0 - 50.0)


def test_a_single_frame_enhanced_file_takes_its_geometry_from_the_functional_groups(
        cli, tmp_path, dcm2niix):
    """NumberOfFrames = 1: no top-level position or orientation, only the functional groups
    (was refused as "no patient geometry"). Compared with first principles and dcm2niix."""
    iop = iop_of(rotation(10.0, 20.0, -30.0))
    position = np.array([[4.0, -8.0, 15.0]])
    data = frames(1, rows=6, cols=9, seed=3)
    path = write_enhanced(tmp_path / "in" / "one.dcm", data, position, iop[None],
                          pixel_spacing=(0.6, 0.9), rescale_slope=1.5)
    (image,) = convert(cli, path, tmp_path / "out").values()
    assert image.shape == (9, 6, 1)
    np.testing.assert_allclose(image.affine[:3, :2],
                               expected_affine(iop, (0.6, 0.9), position[0], 1.0)[:3, :2],
                               atol=1e-4)
    np.testing.assert_allclose(image.affine[:3, 3], (LPS_TO_RAS[:3, :3] @ position[0]),
                               atol=1e-4)
    np.testing.assert_array_equal(image.get_fdata()[..., 0], data[0].T * 1.5)
    (reference,) = run_dcm2niix(dcm2niix, path.parent, tmp_path / "ref")
    assert_same_world(next((tmp_path / "out").glob("*.nii.gz")), reference)


def test_two_stacks_in_one_file_become_two_volumes(cli, tmp_path):
    axial = np.array([1.0, 0, 0, 0, 1, 0])
    sagittal = np.array([0.0, 1, 0, 0, 0, -1])
    pos_axial = stack(axial, (-10.0, -20.0, 0.0), 4, 3.0)
    pos_sagittal = stack(sagittal, (30.0, -40.0, 50.0), 3, 4.0)
    data = frames(7, seed=3)
    path = write_enhanced(tmp_path / "in" / "mf.dcm", data,
                          np.vstack([pos_axial, pos_sagittal]),
                          np.vstack([np.tile(axial, (4, 1)), np.tile(sagittal, (3, 1))]),
                          stack_ids=["1"] * 4 + ["2"] * 3)
    images = convert(cli, path, tmp_path / "out")
    assert sorted(images) == ["1_enhanced.nii.gz", "1_enhanced_ori2_stack2.nii.gz"]
    first, second = images["1_enhanced.nii.gz"], images["1_enhanced_ori2_stack2.nii.gz"]
    np.testing.assert_allclose(first.affine, expected_affine(axial, (1, 1), pos_axial[0], 3.0),
                               atol=1e-4)
    np.testing.assert_array_equal(first.get_fdata(), data[:4].transpose(2, 1, 0))
    # Sagittal normal = row x column = -x: slices ascend along it, so the last written is first.
    np.testing.assert_allclose(second.affine,
                               expected_affine(sagittal, (1, 1), pos_sagittal[0], 4.0), atol=1e-4)
    np.testing.assert_array_equal(second.get_fdata(), data[4:].transpose(2, 1, 0))


def test_temporal_frames_form_4d_in_time_order(cli, tmp_path):
    iop = np.array([1.0, 0, 0, 0, 0, -1])  # coronal
    positions = stack(iop, (0.0, 10.0, 0.0), 3, 2.0)
    data = frames(6, seed=5)  # frame f: slice f % 3, time point given below
    times = [2, 2, 2, 1, 1, 1]
    path = write_enhanced(tmp_path / "in" / "mf.dcm", data, np.vstack([positions, positions]),
                          np.tile(iop, (6, 1)), temporal_indices=times)
    (image,) = convert(cli, path, tmp_path / "out").values()
    assert image.shape == (7, 5, 3, 2)
    np.testing.assert_array_equal(image.get_fdata()[..., 0], data[3:].transpose(2, 1, 0))
    np.testing.assert_array_equal(image.get_fdata()[..., 1], data[:3].transpose(2, 1, 0))


def test_echoes_in_one_file_are_separate_outputs(cli, tmp_path):
    iop = np.array([1.0, 0, 0, 0, 1, 0])
    positions = stack(iop, (0.0, 0.0, 0.0), 3, 1.5)
    data = frames(6, seed=7)
    path = write_enhanced(tmp_path / "in" / "mf.dcm", data, np.vstack([positions, positions]),
                          np.tile(iop, (6, 1)), echo_times=[5.0] * 3 + [12.5] * 3)
    images = convert(cli, path, tmp_path / "out")
    assert sorted(images) == ["1_enhanced.nii.gz", "1_enhanced_e2.nii.gz"]
    np.testing.assert_array_equal(images["1_enhanced.nii.gz"].get_fdata(),
                                  data[:3].transpose(2, 1, 0))
    np.testing.assert_array_equal(images["1_enhanced_e2.nii.gz"].get_fdata(),
                                  data[3:].transpose(2, 1, 0))


def test_slice_timing_from_frame_acquisition_times(cli, tmp_path):
    """A time series: SliceTiming is each slice's acquisition time in the first volume."""
    import json

    from pydicom import dcmread

    iop = np.array([1.0, 0, 0, 0, 1, 0])
    positions = stack(iop, (0.0, 0.0, 0.0), 3, 3.0)
    path = write_enhanced(tmp_path / "in" / "mf.dcm", frames(6, seed=9),
                          np.vstack([positions, positions]), np.tile(iop, (6, 1)),
                          temporal_indices=[1, 1, 1, 2, 2, 2])
    ds = dcmread(path)
    offsets = [0.0, 1.0, 0.5, 2.0, 3.0, 2.5]  # interleaved: slice 0, 2, 1 in each volume
    for item, offset in zip(ds.PerFrameFunctionalGroupsSequence, offsets, strict=True):
        seconds = 36000 + offset
        item.FrameContentSequence[0].FrameAcquisitionDateTime = (
            f"20260101{int(seconds // 3600):02d}{int(seconds % 3600 // 60):02d}"
            f"{seconds % 60:09.6f}")
    ds.save_as(path)
    cli("dicom2nii", path.parent, tmp_path / "out", check_code=0)
    sidecar = json.loads((tmp_path / "out" / "1_enhanced.json").read_text())
    assert sidecar["SliceTiming"] == [0.0, 1.0, 0.5]
