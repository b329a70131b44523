"""Philips scaling per image kind: precise values for phase (radians) and field maps (Hz),
display values (RescaleSlope/Intercept, what the scanner shows) for the others.

Oracles: hand-computed values from the stored pixels and the three scale factors
(display DV = PV * RS + RI; precise FP = DV / (RS * SS)), and dcm2niix, whose -p y (its
default) writes precise values and -p n display values.
"""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest

from convkit.testing.synthetic import regular_positions, write_series

#: RescaleSlope, RescaleIntercept, private scale slope of a Philips phase image (values as a
#: scanner writes them: display values in milliradians, precise values in radians).
PHASE = (1.53455, -3142.0, 651.898)
MAGNITUDE = (2.5, 0.0, 0.0123)
FIELD_MAP = (0.2442, -500.0, 4.095)
IMAGE_TYPES = {"phase": ["ORIGINAL", "PRIMARY", "P", "FFE"],
               "magnitude": ["ORIGINAL", "PRIMARY", "M", "FFE"],
               "field map": ["ORIGINAL", "PRIMARY", "B0", "B0"]}


def philips_series(folder, kind, scales, n=3, seed=0):
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 4096, (n, 6, 5)).astype(np.uint16)
    slope, intercept, scale_slope = scales
    paths = write_series(folder, stored, regular_positions(n, spacing=3.0), modality="MR",
                         rescale_slope=slope, rescale_intercept=intercept, seed=seed,
                         series_number=7, series_description="",
                         extra={"Manufacturer": "Philips Medical Systems",
                                "ImageType": IMAGE_TYPES[kind]})
    for path in paths:
        ds = pydicom.dcmread(path)
        block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        block.add_new(0x0E, "FL", scale_slope)
        ds.save_as(path)
    return stored.astype(np.float64)


def real_values(out):
    (path,) = out.glob("*.nii.gz")
    # (i, j, k) -> stored (k, row, col): i along a row, j down a column.
    return np.asarray(nib.load(path).get_fdata()).transpose(2, 1, 0), json.loads(
        path.with_name(path.name.replace(".nii.gz", ".json")).read_text())


def display(stored, scales):
    return stored * scales[0] + scales[1]


def precise(stored, scales):
    # SS is stored as FL (float32): the hand computation uses the value the file holds.
    return display(stored, scales) / (scales[0] * float(np.float32(scales[2])))


@pytest.mark.parametrize(("kind", "scales", "default"), [
    ("phase", PHASE, "precise"), ("field map", FIELD_MAP, "precise"),
    ("magnitude", MAGNITUDE, "display")])
def test_default_per_image_kind(kind, scales, default, cli, tmp_path):
    stored = philips_series(tmp_path / "in", kind, scales)
    cli("dicom2nii", tmp_path / "in", tmp_path / "auto", check_code=0)
    values, sidecar = real_values(tmp_path / "auto")
    expected = precise(stored, scales) if default == "precise" else display(stored, scales)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
    assert sidecar["PhilipsScaling"] == default
    assert sidecar["PhilipsScaleSlope"] == pytest.approx(scales[2], rel=1e-6)
    if kind == "phase":  # radians, not milliradians
        assert np.abs(values).max() <= np.pi + 0.01 and np.abs(values).max() > 2
    for forced in ("display", "precise"):
        cli("dicom2nii", tmp_path / "in", tmp_path / forced, "--philips-scaling", forced,
            check_code=0)
        values, sidecar = real_values(tmp_path / forced)
        expected = precise(stored, scales) if forced == "precise" else display(stored, scales)
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-5)
        assert sidecar["PhilipsScaling"] == forced and sidecar["PhilipsScalingReason"] == \
            "asked for"


def test_philips_precise_flag_is_precise_for_every_kind(cli, tmp_path):
    stored = philips_series(tmp_path / "in", "magnitude", MAGNITUDE)
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--philips-precise", check_code=0)
    values, sidecar = real_values(tmp_path / "out")
    np.testing.assert_allclose(values, precise(stored, MAGNITUDE), rtol=1e-5)
    assert sidecar["PhilipsScaling"] == "precise"
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "bad", "--philips-precise",
               "--philips-scaling", "display", check_code=2)
    assert "contradicts --philips-precise" in done.stderr


@pytest.mark.parametrize(("kind", "scales"), [("phase", PHASE), ("magnitude", MAGNITUDE)])
def test_same_values_as_dcm2niix_with_the_same_choice(kind, scales, cli, dcm2niix, tmp_path):
    """dcm2niix -p y (precise) matches convkit's phase default; -p n (display) its magnitude
    default."""
    philips_series(tmp_path / "in", kind, scales)
    cli("dicom2nii", tmp_path / "in", tmp_path / "convkit", check_code=0)
    ours, sidecar = real_values(tmp_path / "convkit")
    flag = "y" if sidecar["PhilipsScaling"] == "precise" else "n"
    (tmp_path / "d2x").mkdir()
    subprocess.run([dcm2niix, "-z", "n", "-p", flag, "-f", "%s", "-o", tmp_path / "d2x",
                    tmp_path / "in"], check=True, capture_output=True, timeout=120)
    (written,) = (tmp_path / "d2x").glob("7*.nii")  # 7_ph.nii for phase
    theirs = np.asarray(nib.load(written).get_fdata())
    # dcm2niix flips the rows (j): compare in its voxel order.
    theirs = theirs[:, ::-1, :].transpose(2, 1, 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)
    assert (flag == "y") == (kind == "phase")
