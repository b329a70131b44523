"""dicom2nii, the audit and the other commands agree: what one reports, the others report too."""

from __future__ import annotations

import json

import numpy as np

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
