"""sample_data/ is what its script makes, and converts to the chest CT the phantom describes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from convkit.preview.overlay import GGO_HU_RANGE
from convkit.testing.phantoms import chest_ct_masks

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def converted(tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("sample") / "out"
    cli("dicom2nii", SAMPLE / "dicom", out, check_code=0)
    return out


@pytest.mark.subprocess
def test_committed_sample_data_is_what_the_script_writes(tmp_path):
    subprocess.run([sys.executable, str(SAMPLE / "make_sample_data.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    assert digests(tmp_path / "dicom") == digests(SAMPLE / "dicom")


def test_chest_ct_converts_to_the_phantom_in_hounsfield_units(converted):
    image = nib.load(converted / "2_Chest_CT_synthetic.nii.gz")
    assert image.shape == (128, 128, 70)
    assert (image.dataobj.slope, image.dataobj.inter) == (1.0, -1024.0)
    hu = image.get_fdata()  # (i, j, k): columns, rows, slices
    masks = {name: mask.transpose(2, 1, 0) for name, mask in
             chest_ct_masks((70, 128, 128), (2.734375, 2.734375), 5.0, seed=0).items()}
    assert np.all(hu[~masks["body"]] == -1000)
    ggo = hu[masks["ggo"]]
    assert ggo.size > 100 and GGO_HU_RANGE[0] <= ggo.min() and ggo.max() <= GGO_HU_RANGE[1]
    assert np.all(masks["lungs"][masks["ggo"]])
    assert -900 < np.median(hu[masks["lungs"] & ~masks["ggo"] & ~masks["vessels"]]) < -800
    # Patient (LPS) coordinates: the volume centre sits at the origin of the scanner.
    centre = image.affine @ [63.5, 63.5, 34.5, 1]
    np.testing.assert_allclose(centre[:3], 0, atol=1e-4)


def test_sagittal_mr_is_stored_left_to_right(converted):
    image = nib.load(converted / "5_T1_sagittal_synthetic.nii.gz")
    assert nib.aff2axcodes(image.affine) == ("P", "I", "R")
    assert image.shape == (64, 80, 20)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3], axis=0), [3, 3, 8])
