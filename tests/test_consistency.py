"""dicom2nii, the audit and the other commands agree: what one reports, the others report too."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convkit.testing.synthetic import regular_positions, write_series


def make_series(folder, n=2, modality="CT", spacing=2.5, pixel_spacing=(0.5, 0.8), rows=6,
                cols=7, seed=0, series_number=4, extra=None):
    stored = (np.arange(n * rows * cols, dtype=np.int16).reshape(n, rows, cols) * 3) + 100
    return write_series(folder, stored, regular_positions(n, spacing=spacing), modality=modality,
                        seed=seed, series_number=series_number, series_description="",
                        pixel_spacing=pixel_spacing, extra=extra)


def test_two_slice_series_is_noted_where_the_audit_calls_it_an_error(cli, tmp_path):
    make_series(tmp_path / "in", n=2, spacing=2.5)
    audit = json.loads(cli("audit", tmp_path / "in", "--json").stdout)
    codes = {(f["code"], f["severity"]) for f in audit["findings"]}
    assert ("series.two-slices", "error") in codes
    message = next(f["message"] for f in audit["findings"] if f["code"] == "series.two-slices")
    assert "2.5 mm apart" in message

    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=0)
    notes = json.loads(done.stdout)["series"][0]["notes"]
    assert message in notes  # the same words as the audit's finding, from one owner
    sidecar = json.loads((tmp_path / "out" / "4.json").read_text())
    assert message in sidecar["ConvkitNotes"]
    table = cli("dicom2nii", tmp_path / "in", tmp_path / "table", check_code=0).stdout
    assert "two slices (2.5 mm apart)" in table


def test_three_slices_and_two_slice_time_series_get_no_two_slice_note(cli, tmp_path):
    make_series(tmp_path / "in", n=3)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=0)
    assert not any("two slices" in n for n in json.loads(done.stdout)["series"][0]["notes"])


def _codes(report):
    return [(f["code"], f["path"]) for f in report["findings"]]


def test_a_series_name_taken_by_another_format_is_refused_and_the_audit_flags_a_stale_sidecar(
        cli, tmp_path):
    make_series(tmp_path / "ct", n=4, pixel_spacing=(0.5, 0.8), seed=1)
    make_series(tmp_path / "mr", n=5, modality="MR", spacing=3.0, pixel_spacing=(1.1, 1.1), seed=2,
                extra={"ImageOrientationPatient": [1, 0, 0, 0, 0.8, -0.6]})  # oblique
    out = tmp_path / "out"
    cli("dicom2nii", tmp_path / "ct", out, check_code=0)
    ct_sidecar = (out / "4.json").read_text()
    clean = json.loads(cli("audit", out, "--json").stdout)
    assert not [c for c in _codes(clean) if c[0] == "volume.sidecar-mismatch"]

    # Another series with the same label, in another format: its 4.json would describe the
    # CT's 4.nii.gz too. Refused with and without --force; nothing is written.
    done = cli("dicom2nii", tmp_path / "mr", out, "--format", "nrrd", check_code=5)
    assert "output exists" in done.stderr and "4.json" in done.stderr
    done = cli("dicom2nii", tmp_path / "mr", out, "--format", "nrrd", "--force", check_code=5)
    assert "4.nii.gz" in done.stderr and "would describe it too" in done.stderr
    (out / "4.json").rename(tmp_path / "ct.json")  # without the sidecar: still refused
    done = cli("dicom2nii", tmp_path / "mr", out, "--format", "nrrd", check_code=5)
    assert "4.nii.gz" in done.stderr and "would describe it too" in done.stderr
    (tmp_path / "ct.json").rename(out / "4.json")
    assert sorted(p.name for p in out.iterdir() if p.name != ".convkit") == ["4.json", "4.nii.gz"]
    assert (out / "4.json").read_text() == ct_sidecar

    # The same series in another format, with --force: allowed (its sidecar is the same series).
    cli("dicom2nii", tmp_path / "ct", out, "--format", "nrrd", "--force", check_code=0)
    assert sorted(p.name for p in out.iterdir() if p.name != ".convkit") == [
        "4.json", "4.nii.gz", "4.nrrd"]
    clean = json.loads(cli("audit", out, "--json").stdout)
    assert not [c for c in _codes(clean) if c[0] == "volume.sidecar-mismatch"]

    # What an older convkit (or another tool) left: the MR's sidecar beside the CT's volume.
    cli("dicom2nii", tmp_path / "mr", tmp_path / "mr_out", "--format", "nrrd", check_code=0)
    (out / "4.json").write_text((tmp_path / "mr_out" / "4.json").read_text())
    (out / "4.nrrd").unlink()
    report = json.loads(cli("audit", out, "--json").stdout)
    found = [f for f in report["findings"] if f["code"] == "volume.sidecar-mismatch"]
    assert [(f["path"], f["severity"]) for f in found] == [(str(out / "4.nii.gz"), "error")]
    assert "no voxel axis of the volume does" in found[0]["message"]  # oblique vs axial


def test_a_sidecar_with_another_pixel_spacing_is_flagged(cli, tmp_path):
    make_series(tmp_path / "a", n=4, pixel_spacing=(0.5, 0.8), seed=1)
    make_series(tmp_path / "b", n=4, pixel_spacing=(0.5, 0.9), seed=2)
    cli("dicom2nii", tmp_path / "a", tmp_path / "out_a", check_code=0)
    cli("dicom2nii", tmp_path / "b", tmp_path / "out_b", check_code=0)
    (tmp_path / "out_a" / "4.json").write_text((tmp_path / "out_b" / "4.json").read_text())
    report = json.loads(cli("audit", tmp_path / "out_a", "--json").stdout)
    found = [f["message"] for f in report["findings"] if f["code"] == "volume.sidecar-mismatch"]
    assert len(found) == 1 and "PixelSpacing[1] 0.9 mm" in found[0] and "0.8 mm" in found[0]


def test_dcm2niix_output_and_its_sidecar_are_not_flagged(cli, dcm2niix, tmp_path):
    from helpers import run_dcm2niix

    make_series(tmp_path / "ct", n=4, pixel_spacing=(0.5, 0.8), seed=1,
                extra={"ImageOrientationPatient": [0.96, 0.28, 0, -0.28, 0.96, 0]})
    written = run_dcm2niix(dcm2niix, tmp_path / "ct", tmp_path / "out")
    assert written and written[0].with_suffix(".json").exists()  # dcm2niix flips the rows
    report = json.loads(cli("audit", tmp_path / "out", "--json").stdout)
    assert not [c for c in _codes(report) if c[0] == "volume.sidecar-mismatch"]


def _tilted_ct(folder, tilt_deg=14.0, table_step=5.0, n=6):
    tilt = np.radians(tilt_deg)
    stored = (np.arange(n * 16 * 16).reshape(n, 16, 16) % 500).astype(np.int16)
    positions = np.array([[0.0, 0.0, table_step * k] for k in range(n)])  # along the table
    write_series(folder, stored, positions, orientation=(1, 0, 0, 0, np.cos(tilt), -np.sin(tilt)),
                 pixel_spacing=(0.8, 0.8), series_number=4, series_description="",
                 extra={"GantryDetectorTilt": str(tilt_deg)})


def test_dcm2niix_uncorrected_tilt_file_gets_a_note_on_its_slice_step(cli, dcm2niix, tmp_path):
    import subprocess

    import nibabel as nib

    _tilted_ct(tmp_path / "in")
    (tmp_path / "d2x").mkdir()
    subprocess.run([dcm2niix, "-z", "n", "-f", "%s", "-o", tmp_path / "d2x", tmp_path / "in"],
                   check=True, capture_output=True, timeout=120)
    uncorrected = tmp_path / "d2x" / "4.nii"
    sform = nib.load(uncorrected).get_sform()
    cos = np.cos(np.radians(14.0))
    # dcm2niix writes the spacing between slices (5 cos 14 = 4.851) as the step along the table.
    assert np.linalg.norm(sform[:3, 2]) == pytest.approx(5 * cos, abs=1e-3)
    done = cli("convert", uncorrected, tmp_path / "c.nii.gz", "--resample", "--json",
               check_code=0)
    report = json.loads(done.stdout)
    assert report["spacing"][2] == pytest.approx(5 * cos * cos, abs=1e-3)  # 4.707, not 4.851
    notes = " ".join(report["notes"])
    assert f"{5 * cos * cos:.4g} mm apart along their normal, the qform {5 * cos:.4g} mm" in notes
    assert "cannot check that step against the DICOM positions" in notes
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=0)
    assert json.loads(done.stdout)["series"][0]["spacing"][2] == pytest.approx(5 * cos, abs=1e-3)


def test_a_sheared_sform_consistent_with_its_qform_gets_no_step_note(cli, tmp_path):
    import nibabel as nib

    cos, sin = np.cos(np.radians(14.0)), np.sin(np.radians(14.0))
    sform = np.array([[0.8, 0, 0, 0], [0, 0.8 * cos, 0, 0], [0, 0.8 * sin, 5.0, 0], [0, 0, 0, 1]])
    qform = sform.copy()
    qform[:3, 2] = np.cross(sform[:3, 0], sform[:3, 1]) / 0.64 * 5.0 * cos  # straight, same step
    image = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), None)
    image.set_sform(sform, 1)
    image.set_qform(qform, 1)
    nib.save(image, tmp_path / "tilt.nii")
    report = json.loads(cli("convert", tmp_path / "tilt.nii", tmp_path / "c.nii.gz",
                            "--resample", "--json", check_code=0).stdout)
    assert not any("along their normal, the qform" in n for n in report["notes"])
    assert report["spacing"][2] == pytest.approx(5.0 * cos, abs=1e-4)
