"""Provenance: what a converted file says about where it came from survives the round trip.

- nii2dicom of a convkit NIfTI writes the sidecar's fields that have a DICOM home (window,
  body part, kernel, MR timing ...), checked against the original DICOM and dciodvfy.
- convert from DICOM writes the same sidecar dicom2nii writes.
- dicom2nii --provenance names, per slice and volume, the SOPInstanceUID and file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from convkit.testing.synthetic import regular_positions, write_series

CT_ATTRIBUTES = {"WindowCenter": "-600", "WindowWidth": "1500", "BodyPartExamined": "CHEST",
                 "ConvolutionKernel": "B70f", "KVP": "120", "ProtocolName": "Thorax",
                 "PatientPosition": "HFS", "ReconstructionDiameter": "350"}
MR_ATTRIBUTES = {"EchoTime": "4.6", "RepetitionTime": "2300", "FlipAngle": "9",
                 "InversionTime": "900", "MagneticFieldStrength": "3",
                 "ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"],
                 "MRAcquisitionType": "3D", "SequenceName": "tfl3d1", "ImagingFrequency":
                 "123.25", "WindowCenter": ["300", "500"], "WindowWidth": ["600", "1000"],
                 "BodyPartExamined": "HEAD", "PatientPosition": "HFS", "EchoTrainLength": "1"}


def validate(folder: Path) -> None:
    """dciodvfy on every file: no "Error" line (skipped when dicom3tools is absent)."""
    import shutil

    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dicom3tools (dciodvfy) is not installed")
    for path in sorted(folder.glob("*.dcm")):
        done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (done.stdout + done.stderr).splitlines()
                  if line.startswith("Error")]
        assert not errors, "\n".join(errors)


def _value(element_value):
    """Numbers as numbers (DS '-600' and '-600.0' are one value), text as text."""
    if isinstance(element_value, pydicom.multival.MultiValue):
        return [_value(v) for v in element_value]
    try:
        return float(element_value)
    except (TypeError, ValueError):
        return str(element_value)


@pytest.mark.oracle
@pytest.mark.parametrize(("modality", "attributes"), [("CT", CT_ATTRIBUTES),
                                                      ("MR", MR_ATTRIBUTES)])
def test_nii2dicom_carries_the_sidecar_fields_back(modality, attributes, cli, tmp_path):
    stored = (np.arange(4 * 6 * 7, dtype=np.int16).reshape(4, 6, 7) * 9) - 300
    write_series(tmp_path / "in", stored, regular_positions(4, spacing=2.0), modality=modality,
                 extra=attributes, series_number=4, series_description="")
    cli("dicom2nii", tmp_path / "in", tmp_path / "nii", "--name", "{SeriesNumber}", check_code=0)
    done = cli("nii2dicom", tmp_path / "nii" / "4.nii.gz", tmp_path / "back", "--modality",
               modality, "--json", check_code=0)
    validate(tmp_path / "back")
    original = pydicom.dcmread(next((tmp_path / "in").iterdir()))
    for path in sorted((tmp_path / "back").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for keyword in attributes:
            assert _value(ds[keyword].value) == _value(original[keyword].value), keyword
    notes = " ".join(json.loads(done.stdout)["series"][0]["notes"])
    assert "from the sidecar:" in notes and "WindowCenter" in notes


def test_nii2dicom_without_a_sidecar_keeps_its_own_window(cli, tmp_path):
    stored = (np.arange(3 * 6 * 7, dtype=np.int16).reshape(3, 6, 7) * 9) - 300
    write_series(tmp_path / "in", stored, regular_positions(3, spacing=2.0),
                 extra=CT_ATTRIBUTES, series_number=4, series_description="")
    cli("dicom2nii", tmp_path / "in", tmp_path / "nii", "--name", "{SeriesNumber}", check_code=0)
    (tmp_path / "nii" / "4.json").unlink()
    cli("nii2dicom", tmp_path / "nii" / "4.nii.gz", tmp_path / "back", "--modality", "CT",
        check_code=0)
    ds = pydicom.dcmread(sorted((tmp_path / "back").glob("*.dcm"))[0])
    # The percentile window of the values (1st to 99th), not the original -600/1500.
    real = stored.astype(float)
    low, high = np.percentile(real, [1, 99])
    assert float(ds.WindowCenter) == pytest.approx((low + high) / 2, abs=1e-3)
    assert float(ds.WindowWidth) == pytest.approx(high - low, abs=1e-3)
    assert ds.BodyPartExamined == "" and "ConvolutionKernel" not in ds


def test_invalid_sidecar_values_are_left_out_and_said(cli, tmp_path):
    stored = (np.arange(3 * 6 * 7, dtype=np.int16).reshape(3, 6, 7) * 9) - 300
    write_series(tmp_path / "in", stored, regular_positions(3, spacing=2.0),
                 extra=CT_ATTRIBUTES, series_number=4, series_description="")
    cli("dicom2nii", tmp_path / "in", tmp_path / "nii", "--name", "{SeriesNumber}", check_code=0)
    sidecar = tmp_path / "nii" / "4.json"
    data = json.loads(sidecar.read_text())
    data.update({"WindowWidth": "wide", "BodyPartExamined": "x" * 40, "KVP": [120, 140]})
    sidecar.write_text(json.dumps(data))
    done = cli("nii2dicom", tmp_path / "nii" / "4.nii.gz", tmp_path / "back", "--modality", "CT",
               "--json", check_code=0)
    ds = pydicom.dcmread(sorted((tmp_path / "back").glob("*.dcm"))[0])
    assert float(ds.WindowCenter) != -600  # never half a window: the computed one
    assert ds.BodyPartExamined == "" and not ds.KVP and ds.ConvolutionKernel == "B70f"
    notes = " ".join(json.loads(done.stdout)["series"][0]["notes"])
    assert "not written: " in notes and "BodyPartExamined" in notes and "KVP" in notes


def test_convert_from_dicom_writes_the_sidecar_dicom2nii_writes(cli, tmp_path):
    stored = (np.arange(4 * 6 * 7, dtype=np.int16).reshape(4, 6, 7) * 9) - 300
    write_series(tmp_path / "in", stored, regular_positions(4, spacing=2.0),
                 extra=CT_ATTRIBUTES, series_number=4, series_description="")
    cli("dicom2nii", tmp_path / "in", tmp_path / "d2n", "--name", "{SeriesNumber}",
        "--format", "nrrd", check_code=0)
    done = cli("convert", tmp_path / "in", tmp_path / "c" / "ct.nrrd", "--json", check_code=0)
    report = json.loads(done.stdout)
    assert report["sidecar"] == str(tmp_path / "c" / "ct.json")
    converted = json.loads((tmp_path / "c" / "ct.json").read_text())
    expected = json.loads((tmp_path / "d2n" / "4.json").read_text())
    assert expected.pop("SourceFiles") == 4  # dicom2nii alone counts the files of the batch
    assert converted == expected
    assert converted["WindowCenter"] == -600 and converted["ConvolutionKernel"] == "B70f"
    # An existing sidecar is an existing output: nothing is written without --force.
    (tmp_path / "c" / "other.json").write_text("{}")
    cli("convert", tmp_path / "in", tmp_path / "c" / "other.nii.gz", check_code=5)
    assert not (tmp_path / "c" / "other.nii.gz").exists()
    assert (tmp_path / "c" / "other.json").read_text() == "{}"


def test_convert_from_a_volume_lists_its_sidecar_as_not_carried(cli, tmp_path):
    stored = (np.arange(4 * 6 * 7, dtype=np.int16).reshape(4, 6, 7) * 9) - 300
    write_series(tmp_path / "in", stored, regular_positions(4, spacing=2.0),
                 series_number=4, series_description="")
    cli("dicom2nii", tmp_path / "in", tmp_path / "d2n", "--name", "{SeriesNumber}",
        check_code=0)
    done = cli("convert", tmp_path / "d2n" / "4.nii.gz", tmp_path / "c" / "x.nrrd", "--json",
               check_code=0)
    report = json.loads(done.stdout)
    assert "the sidecar 4.json (not copied)" in report["not_carried"]
    assert report["sidecar"] is None and not (tmp_path / "c" / "x.json").exists()


def _check_sources(out, root, label="4"):
    """Every SourceImages entry names the file (and frame) whose pixels are at that slice."""
    import nibabel as nib

    sidecar = json.loads((out / f"{label}.json").read_text())
    sources = sidecar["SourceImages"]
    data = np.asarray(nib.load(out / f"{label}.nii.gz").dataobj)
    data = data if data.ndim == 4 else data[..., np.newaxis]
    assert len(sources) == data.shape[3] and all(len(v) == data.shape[2] for v in sources)
    checked = set()
    for t, volume in enumerate(sources):
        for k, (uid, path, image) in enumerate(volume):
            ds = pydicom.dcmread(root / path)
            assert ds.SOPInstanceUID == uid
            pixels = ds.pixel_array if image is None else ds.pixel_array[image - 1]
            # the slice's voxels are the file's pixels (i along a row, j down a column)
            np.testing.assert_array_equal(data[:, :, k, t], pixels.T)
            checked.add((uid, image))
    return sidecar, checked


def test_provenance_names_the_file_of_every_slice(cli, tmp_path):
    n, rows, cols = 5, 4, 3
    rng = np.random.default_rng(7)
    stored = rng.integers(0, 4000, (n, rows, cols)).astype(np.int16)
    order = [3, 0, 4, 1, 2]  # written out of position order, names shuffled too
    positions = regular_positions(n, spacing=2.0)[order]
    write_series(tmp_path / "in" / "sub", stored, positions, series_number=4,
                 series_description="")
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--provenance", check_code=0)
    sidecar, checked = _check_sources(tmp_path / "out", tmp_path / "in")
    assert len(checked) == n and sidecar["SourceImagesAreOutputSlices"] is True
    assert all(p.startswith("sub/") for _, p, _ in sidecar["SourceImages"][0])
    # Without the option: no SourceImages.
    cli("dicom2nii", tmp_path / "in", tmp_path / "plain", check_code=0)
    assert "SourceImages" not in json.loads((tmp_path / "plain" / "4.json").read_text())


def test_provenance_of_a_time_series(cli, tmp_path):
    n, times = 3, 4
    rng = np.random.default_rng(8)
    stored = rng.integers(0, 4000, (n * times, 4, 3)).astype(np.int16)
    positions = np.tile(regular_positions(n, spacing=2.0), (times, 1))
    seconds = np.repeat(np.arange(times) * 2.0, n)[::-1]  # files in reverse time order
    write_series(tmp_path / "in", stored, positions, times=seconds, series_number=4,
                 series_description="", modality="MR")
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--provenance", check_code=0)
    _, checked = _check_sources(tmp_path / "out", tmp_path / "in")
    assert len(checked) == n * times


def test_provenance_names_frames_of_an_enhanced_file(cli, tmp_path):
    from convkit.testing.synthetic import write_enhanced

    n = 4
    stored = np.random.default_rng(9).integers(0, 4000, (n, 5, 6)).astype(np.int16)
    positions = regular_positions(n, spacing=1.5)[[2, 0, 3, 1]]
    (tmp_path / "in").mkdir()
    write_enhanced(tmp_path / "in" / "enhanced.dcm", stored, positions,
                   np.tile([1.0, 0, 0, 0, 1, 0], (n, 1)), series_number=4)
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--provenance", "--name",
        "{SeriesNumber}", check_code=0)
    sidecar, checked = _check_sources(tmp_path / "out", tmp_path / "in")
    assert [item[2] for item in sidecar["SourceImages"][0]] == [2, 4, 1, 3]
