"""The Python API gives what the CLI gives: a Volume that converts to nibabel and SimpleITK."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

import convkit
from convkit.testing.synthetic import regular_positions, write_series

ORIENTATION = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal: rows run posterior, columns inferior


@pytest.fixture
def sagittal(tmp_path):
    stored = np.random.default_rng(4).integers(-500, 1500, size=(4, 5, 6), dtype=np.int16)
    origin = (10.0, -20.0, 30.0)
    write_series(tmp_path / "in", stored, regular_positions(4, ORIENTATION, origin, spacing=1.5),
                 orientation=ORIENTATION, pixel_spacing=(0.7, 0.9), rescale_slope=2.0,
                 rescale_intercept=-100.0, modality="MR")
    return tmp_path / "in", stored, origin


def test_volume_matches_nibabel_and_sitk(sagittal, tmp_path):
    folder, stored, origin = sagittal
    volume = convkit.read_series(folder)
    real = stored.transpose(2, 1, 0) * 2.0 - 100.0  # (i, j, k) from (k, row j, col i)
    np.testing.assert_array_equal(volume.real_array(np.float64), real)
    lps_point = np.array(origin) + 3 * 0.9 * np.array([0, 1, 0]) + 2 * 0.7 * np.array([0, 0, -1]) \
        + 1 * 1.5 * np.array([-1.0, 0, 0])  # normal = row x column = -x (LPS)
    ras_point = lps_point * [-1, -1, 1]
    np.testing.assert_allclose(volume.affine @ [3, 2, 1, 1], [*ras_point, 1], atol=1e-9)

    image = convkit.to_nibabel(volume)
    assert isinstance(image, nib.Nifti1Image)
    np.testing.assert_allclose(image.get_fdata(), real)

    itk = convkit.to_sitk(volume)
    np.testing.assert_allclose(itk.TransformIndexToPhysicalPoint((3, 2, 1)), lps_point, atol=1e-9)
    assert itk.GetPixel(3, 2, 1) == pytest.approx(real[3, 2, 1])

    convkit.write_volume(volume, tmp_path / "x.nii.gz")
    back = nib.load(tmp_path / "x.nii.gz")
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    np.testing.assert_allclose(back.get_fdata(), real)
    assert (back.dataobj.slope, back.dataobj.inter) == (2.0, -100.0)
    assert np.asarray(back.dataobj.get_unscaled()).dtype == np.int16


def test_read_series_refuses_a_folder_with_two_series(sagittal, tmp_path):
    folder, stored, _ = sagittal
    write_series(folder / "other", stored, regular_positions(4), seed=9, series_number=8)
    with pytest.raises(convkit.InputError, match="holds 2 series"):
        convkit.read_series(folder)


def test_convert_folder_report(sagittal, tmp_path):
    folder, _, _ = sagittal
    report = convkit.convert_folder(folder, tmp_path / "out")
    assert report.exit_code == 0
    assert [s.status for s in report.series] == ["written"]
    assert report.series[0].shape == [6, 5, 4] and report.series[0].orientation == "PIR"
