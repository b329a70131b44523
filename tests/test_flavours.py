"""Every DICOM flavour through the real CLI: Siemens mosaics, enhanced multi-frame files.

References: dcm2niix's own conversions stored beside the mosaics (dcm_qa), and
dcm2niix run here on the multi-frame files. Compared in world space.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import run_cli
from helpers import assert_same_world, run_dcm2niix

MOSAICS = ["axasc36", "cordesc35", "sagint36"]
MULTIFRAME_SAME = ["eCT_Supplemental.dcm", "MR2_J2KR.dcm", "MR2_UNCI.dcm"]
NO_GEOMETRY = ["emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm",
               "emri_small_jpeg_2k_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm",
               "JPEG-LL.dcm"]


def slice_positions(image, normal: np.ndarray) -> np.ndarray:
    """Each slice's position along a world direction (mm), in the file's k order."""
    return np.array([(image.affine @ [0, 0, k, 1])[:3] @ normal for k in range(image.shape[2])])


def single_output(folder: Path) -> Path:
    outputs = sorted(folder.glob("*.nii.gz"))
    assert len(outputs) == 1, outputs
    return outputs[0]


@pytest.mark.parametrize("case", MOSAICS)
def test_mosaic_equals_reference_with_slice_timing(case, corpus, tmp_path):
    folder = corpus / "dicom" / "dcm_qa" / case
    run_cli("dicom2nii", folder / "series", tmp_path, check_code=0)
    ours = single_output(tmp_path)
    reference = folder / "dcm2niix_ref.nii.gz"
    assert_same_world(ours, reference)
    assert nib.load(ours).shape[3] == 2
    # SliceTiming follows each converter's own slice order: pair the slices by position.
    sidecar = json.loads(ours.with_name(ours.name.replace(".nii.gz", ".json")).read_text())
    expected = json.loads((folder / "dcm2niix_ref.json").read_text())["SliceTiming"]
    normal = nib.load(ours).affine[:3, 2]
    ours_by_position = np.array(sidecar["SliceTiming"])[np.argsort(slice_positions(
        nib.load(ours), normal))]
    ref_by_position = np.array(expected)[np.argsort(slice_positions(nib.load(reference),
                                                                    normal))]
    np.testing.assert_allclose(ours_by_position, ref_by_position, atol=1e-3, rtol=0)
    assert len(set(sidecar["SliceTiming"])) > 1  # real timing, not a constant
    reference_sidecar = json.loads((folder / "dcm2niix_ref.json").read_text())
    for key in ("EffectiveEchoSpacing", "TotalReadoutTime"):
        assert sidecar[key] == pytest.approx(reference_sidecar[key], abs=1e-6)
    # Phase encoding: the same world direction, whatever each converter's voxel axes are.
    np.testing.assert_allclose(
        phase_direction_world(sidecar["PhaseEncodingDirection"], nib.load(ours).affine),
        phase_direction_world(reference_sidecar["PhaseEncodingDirection"],
                              nib.load(reference).affine), atol=1e-6)


def phase_direction_world(code: str, affine: np.ndarray) -> np.ndarray:
    """Unit RAS vector of a BIDS PhaseEncodingDirection ('i', 'j-', ...) for a NIfTI affine."""
    column = affine[:3, "ijk".index(code[0])]
    return (-1 if code.endswith("-") else 1) * column / np.linalg.norm(column)


def isolate(path: Path, tmp_path: Path) -> Path:
    """A folder holding only this file (dcm2niix converts a file's whole folder)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / path.name).symlink_to(path)
    return folder


@pytest.mark.parametrize("name", MULTIFRAME_SAME)
def test_multiframe_files_equal_dcm2niix(name, corpus, dcm2niix, tmp_path):
    source = isolate(corpus / "dicom" / "multiframe" / name, tmp_path)
    run_cli("dicom2nii", source, tmp_path / "ours", check_code=0)
    (theirs,) = run_dcm2niix(dcm2niix, source, tmp_path / "theirs")
    assert_same_world(single_output(tmp_path / "ours"), theirs)


@pytest.mark.parametrize("name", NO_GEOMETRY)
def test_multiframe_without_geometry_is_refused(name, corpus, tmp_path):
    source = corpus / "dicom" / "multiframe" / name
    done = run_cli("dicom2nii", source, tmp_path / "out", check_code=4)
    assert "no patient geometry" in done.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_multiframe_transfer_syntaxes_decode_identically(corpus):
    """The same enhanced MR in five transfer syntaxes: every frame decodes to the same pixels."""
    from convkit.dicom.header import read_header
    from convkit.dicom.pixels import decode_images

    decoded = {}
    for name in NO_GEOMETRY[:5]:
        headers = read_header(corpus / "dicom" / "multiframe" / name)
        assert len(headers) == 10 and [h.frame for h in headers] == list(range(10))
        decoded[name] = np.stack(decode_images(headers[0], list(range(10))))
    reference = decoded["emri_small.dcm"]
    assert reference.shape == (10, 64, 64) and np.unique(reference).size > 100
    for name, frames in decoded.items():
        np.testing.assert_array_equal(frames, reference, err_msg=name)


def test_philips_display_and_precise_values(corpus, dcm2niix, tmp_path):
    """Default: display values (RescaleSlope); --philips-precise: dcm2niix's default values."""
    series = corpus / "dicom" / "d2n" / "philips_enhanced_anatomical_001" / "series"
    run_cli("dicom2nii", series, tmp_path / "display", check_code=0)
    run_cli("dicom2nii", series, tmp_path / "precise", "--philips-precise", check_code=0)
    (precise_ref,) = run_dcm2niix(dcm2niix, series, tmp_path / "ref_precise")
    assert_same_world(single_output(tmp_path / "precise"), precise_ref, atol_values=1e-2)
    display = nib.load(single_output(tmp_path / "display"))
    precise = nib.load(single_output(tmp_path / "precise"))
    np.testing.assert_array_equal(np.asarray(display.dataobj.get_unscaled()),
                                  np.asarray(precise.dataobj.get_unscaled()))
    assert display.dataobj.slope == pytest.approx(4.25885225885225)
    assert precise.dataobj.slope == pytest.approx(1 / 0.0002765719254966825, rel=1e-6)
    sidecars = [json.loads(p.read_text()) for p in
                (next((tmp_path / k).glob("*.json")) for k in ("display", "precise"))]
    assert [s["PhilipsScaling"] for s in sidecars] == ["display", "precise"]
