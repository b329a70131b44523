"""nii2dicom: every written series is valid DICOM and reads back as its source in world space.

Oracles: dicom3tools (`dciodvfy` per file, `dcentvfy` across files: zero "Error" lines),
dcm2niix (exactly one volume, same world geometry and values), SimpleITK's series reader
(origin, direction, spacing in LPS), pydicom (raw attributes) and convkit dicom2nii itself
(DICOM -> NIfTI -> DICOM -> NIfTI on the real corpus).

Values: integers must come back exactly; floats within the error that nii2dicom states
(WrittenSeries.max_error, "max_error" in --json) plus float32 rounding of the reader.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import rotation, run_dcm2niix
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement

from convkit.dicom.write import SeriesIdentity
from convkit.dicom2nii import convert_folder
from convkit.errors import ConvkitError, RefusedError
from convkit.nii2dicom import volume_to_dicom

#: Affines must agree to 0.01 mm (issue 4).
AFFINE_ATOL_MM = 0.01
#: Unit directions (SimpleITK) agree to this; DS strings carry ~13 significant digits.
DIRECTION_ATOL = 1e-6
FLOAT32_EPS = float(np.finfo(np.float32).eps)
#: A DS value: at most 16 bytes of digits, sign, point and exponent (PS3.5 6.2).
DS_VALUE = re.compile(rb"^ *[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)? *$")
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
SOP_CLASSES = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
               "OT": "1.2.840.10008.5.1.4.1.1.7"}

#: Real series (../shared/data/dicom/d2n) -> modality nii2dicom writes them as.
CORPUS_CASES = {
    "failing_gantrytilting_001": "CT",  # uint16 + intercept -1024, tilt-corrected 512x521x4
    "hitachi_anatomical_001": "MR",  # strongly oblique
    "generic_anatomical_002_non_isotropic": "MR",  # per-slice rescale -> float32 volume
    "ge_fmri_001": "MR",  # 4D: one series per time point
    "siemens_multiframe_anatomical_001": "OT",  # enhanced multi-frame, as Secondary Capture
}
HITACHI = Path("dicom/d2n/hitachi_anatomical_001/series")


# ---------------------------------------------------------------- oracles and checks


def validate_series(folder: Path, tools: dict[str, str]) -> list[str]:
    """dciodvfy on each file and dcentvfy across them: no "Error" line; returns the warnings."""
    files = sorted(str(p) for p in Path(folder).glob("*.dcm"))
    assert files, f"no .dcm files in {folder}"
    lines = []
    for path in files:
        done = subprocess.run([tools["dciodvfy"], path], capture_output=True, text=True,
                              timeout=60)
        lines += [f"dciodvfy: {line}" for line in (done.stdout + done.stderr).splitlines()]
    done = subprocess.run([tools["dcentvfy"], *files], capture_output=True, text=True, timeout=60)
    lines += [f"dcentvfy: {line}" for line in (done.stdout + done.stderr).splitlines()]
    errors = [line for line in lines if line.split(": ", 1)[1].startswith("Error")]
    assert not errors, "\n".join(errors)
    return sorted({line for line in lines if "Warning" in line})


def world_grid_match(src_affine: np.ndarray, out_affine: np.ndarray, src_shape, out_shape):
    """How out's voxel axes map onto src's: [(out axis, sign)] per src axis, or an error.

    The out grid must be the src grid (same voxel centres) up to a permutation and flips
    of its axes: out_affine @ M == src_affine (to AFFINE_ATOL_MM) for a signed permutation M.
    """
    m = np.linalg.solve(out_affine, src_affine)
    perm = np.rint(m[:3, :3])
    assert sorted(np.abs(perm).sum(axis=0)) == [1, 1, 1] and \
        sorted(np.abs(perm).sum(axis=1)) == [1, 1, 1], f"not the same grid axes:\n{m}"
    mapping = []
    shift = np.zeros(3)
    for axis in range(3):
        out_axis = int(np.flatnonzero(perm[:, axis])[0])
        sign = int(perm[out_axis, axis])
        assert out_shape[out_axis] == src_shape[axis], f"shape {out_shape} vs {src_shape}"
        shift[out_axis] = 0 if sign > 0 else src_shape[axis] - 1
        mapping.append((out_axis, sign))
    matrix = np.eye(4)
    matrix[:3, :3] = perm
    matrix[:3, 3] = shift
    np.testing.assert_allclose(out_affine @ matrix, src_affine, atol=AFFINE_ATOL_MM, rtol=0,
                               err_msg="world geometry differs")
    return mapping


def assert_same_world(src_data, src_affine, out_data, out_affine, atol_values: float) -> None:
    """Same voxel centres in world space (to 0.01 mm) holding the same values (to atol)."""
    src_data, out_data = np.asarray(src_data), np.asarray(out_data)
    assert out_data.ndim == 3 == src_data.ndim, f"{out_data.shape} vs {src_data.shape}"
    mapping = world_grid_match(src_affine, out_affine, src_data.shape, out_data.shape)
    moved = np.transpose(out_data, [out_axis for out_axis, _ in mapping])
    for axis, (_, sign) in enumerate(mapping):
        if sign < 0:
            moved = np.flip(moved, axis)
    diff = np.abs(moved.astype(np.float64) - src_data.astype(np.float64))
    assert diff.max() <= atol_values, f"values differ by up to {diff.max()} (allowed {atol_values})"


def float_tolerance(max_error: float, data: np.ndarray) -> float:
    """The stated encoding error plus float32 rounding of slope/intercept in the reader."""
    return max_error + 4 * FLOAT32_EPS * float(np.max(np.abs(data))) if data.size else max_error


def dcm2niix_one(binary: str, folder: Path, out: Path) -> nib.Nifti1Image:
    """dcm2niix must turn the folder into exactly one 3D volume."""
    written = run_dcm2niix(binary, folder, out)
    assert len(written) == 1, f"dcm2niix wrote {[p.name for p in written]} from {folder}"
    image = nib.load(str(written[0]))
    assert image.ndim == 3, f"dcm2niix volume shape {image.shape}"
    return image


def sitk_series(folder: Path):
    """(values (i, j, k), RAS affine, SimpleITK image) of the series read by ImageSeriesReader."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    assert len(names) == len(list(folder.glob("*.dcm")))
    reader.SetFileNames(names)
    image = reader.Execute()
    lps = np.eye(4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return sitk.GetArrayFromImage(image).T, LPS @ lps, image


def assert_sitk_geometry_is_source(image, source_affine_ras: np.ndarray) -> None:
    """Origin, direction and spacing (LPS) equal the source's (right-handed sources)."""
    lps = LPS @ source_affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=AFFINE_ATOL_MM, rtol=0)
    np.testing.assert_allclose(image.GetOrigin(), lps[:3, 3], atol=AFFINE_ATOL_MM, rtol=0)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), lps[:3, :3] / spacing,
                               atol=DIRECTION_ATOL, rtol=0)


def raw_ds_values(path: Path) -> dict[str, list[bytes]]:
    """Every DS attribute of the file as the raw bytes on disk, split at backslashes."""
    ds = pydicom.dcmread(str(path))
    found = {}
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.VR == "DS" and raw.value:
            found[pydicom.datadict.keyword_for_tag(tag)] = raw.value.rstrip(b" ").split(b"\\")
    return found


def check_headers(folder: Path, source_data: np.ndarray, source_affine: np.ndarray,
                  modality: str, atol_values: float) -> list[pydicom.Dataset]:
    """pydicom: one study/series/frame of reference, unique SOPs, InstanceNumber 1..n,
    DS <= 16 bytes, positions affine @ (0, 0, k) in LPS, pixels equal to the source slice."""
    files = sorted(folder.glob("*.dcm"))
    n = source_data.shape[2]
    assert len(files) == n
    datasets = [pydicom.dcmread(str(p)) for p in files]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
                    "StudyDate", "StudyTime", "SOPClassUID", "Modality", "PatientName",
                    "PatientID", "SeriesNumber"):
        values = {str(ds.get(keyword)) for ds in datasets}
        assert len(values) == 1, f"{keyword} differs between slices: {values}"
        assert "None" not in values, f"{keyword} missing"
    uids = [ds.SOPInstanceUID for ds in datasets]
    assert len(set(uids)) == n
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in datasets)
    assert datasets[0].SOPClassUID == SOP_CLASSES.get(modality, SOP_CLASSES["OT"])
    assert datasets[0].Modality == modality
    by_number = sorted(datasets, key=lambda ds: int(ds.InstanceNumber))
    assert [int(ds.InstanceNumber) for ds in by_number] == list(range(1, n + 1))
    lps = LPS @ source_affine
    for k, ds in enumerate(by_number):
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float),
                                   lps[:3, :3] @ [0, 0, k] + lps[:3, 3], atol=AFFINE_ATOL_MM,
                                   rtol=0)
        real = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + \
            float(ds.get("RescaleIntercept", 0))
        diff = np.abs(real.T - source_data[:, :, k])
        assert diff.max() <= atol_values, f"slice {k}: values differ by {diff.max()}"
    for path in files:
        for keyword, values in raw_ds_values(path).items():
            for value in values:
                assert len(value) <= 16 and DS_VALUE.match(value), f"{keyword} = {value!r}"
    return datasets


def frames(image: nib.Nifti1Image) -> list[tuple[np.ndarray, np.ndarray]]:
    """(real values, affine) of each 3D volume of a 3D or 4D NIfTI."""
    data = image.get_fdata(dtype=np.float64)
    if data.ndim == 3:
        return [(data, image.affine)]
    return [(data[..., t], image.affine) for t in range(data.shape[3])]


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.Nifti1Image(data, affine).to_filename(str(path))
    return path


def oblique_affine(angles, spacing, origin, flip_axis: int | None = None) -> np.ndarray:
    """RAS affine with the given rotation, spacing and origin; flip_axis makes it left-handed."""
    columns = rotation(*angles) * np.asarray(spacing, float)
    if flip_axis is not None:
        columns[:, flip_axis] *= -1
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = origin
    return affine


def leftovers(folder: Path) -> list[str]:
    """Hidden staging files or folders left behind in folder."""
    if not folder.exists():
        return []
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- real corpus round trip


@pytest.fixture(scope="module")
def corpus_niftis(corpus, tmp_path_factory) -> dict[str, Path]:
    """convkit dicom2nii (the API behind the command) of each corpus case."""
    out = tmp_path_factory.mktemp("dicom2nii")
    found = {}
    for case in CORPUS_CASES:
        report = convert_folder(corpus / "dicom" / "d2n" / case / "series", out / case)
        assert report.exit_code == 0, report.to_json()
        outputs = [Path(p) for s in report.series for p in s.outputs if p.endswith(".nii.gz")]
        assert len(outputs) == 1, outputs
        found[case] = outputs[0]
    return found


@pytest.mark.parametrize("case", list(CORPUS_CASES))
def test_corpus_dicom_nifti_dicom_nifti(case, corpus_niftis, cli, dcm2niix, dicom3tools,
                                        tmp_path):
    source = corpus_niftis[case]
    modality = CORPUS_CASES[case]
    image = nib.load(str(source))
    integer = np.issubdtype(image.get_data_dtype(), np.integer)
    done = cli("nii2dicom", source, tmp_path / "dicom", "--modality", modality, "--json",
               check_code=0)
    series = json.loads(done.stdout)["series"]
    sources = frames(image)
    assert len(series) == len(sources)
    if image.ndim == 4:
        names = [f"t{t + 1:04d}" for t in range(image.shape[3])]
        assert sorted(p.name for p in (tmp_path / "dicom").iterdir()) == names
        assert [Path(s["folder"]).name for s in series] == names
        assert [s["files"] for s in series] == [image.shape[2]] * image.shape[3]
    for t, (data, affine) in enumerate(sources):
        folder = Path(series[t]["folder"])
        if integer:
            assert series[t]["max_error"] == 0
        else:  # per-slice float values: a stated, small error (16 bits over the range)
            span = float(data.max() - data.min())
            assert 0 < series[t]["max_error"] <= span / 65535
        tol = float_tolerance(series[t]["max_error"], data)
        validate_series(folder, dicom3tools)
        check_headers(folder, data, affine, modality, tol)
        back = dcm2niix_one(dcm2niix, folder, tmp_path / f"dcm2niix{t}")
        assert_same_world(data, affine, back.get_fdata(dtype=np.float64), back.affine, tol)
        values, sitk_affine, sitk_image = sitk_series(folder)
        assert_sitk_geometry_is_source(sitk_image, affine)
        assert_same_world(data, affine, values, sitk_affine, tol)
    # ... and back to NIfTI with convkit itself: equal to the first NIfTI in world space.
    report = convert_folder(tmp_path / "dicom", tmp_path / "again")
    assert report.exit_code == 0, report.to_json()
    results = sorted(report.series, key=lambda s: s.series_number)
    assert len(results) == len(sources)
    for (data, affine), result in zip(sources, results, strict=True):
        (output,) = [p for p in result.outputs if p.endswith(".nii.gz")]
        again = nib.load(output)
        tol = float_tolerance(max(s["max_error"] for s in series), data)
        assert_same_world(data, affine, again.get_fdata(dtype=np.float64), again.affine, tol)


def test_time_points_of_one_4d_volume_share_study_and_frame_of_reference(
        corpus_niftis, dicom3tools, tmp_path):
    """The series of one 4D volume are one acquisition: one study, one frame of reference."""
    written = volume_to_dicom(corpus_niftis["ge_fmri_001"], tmp_path / "out",
                              SeriesIdentity(modality="MR"))
    assert len(written) == 2
    first = [pydicom.dcmread(next(Path(w.folder).glob("*.dcm"))) for w in written]
    assert len({ds.SeriesInstanceUID for ds in first}) == 2
    assert [int(ds.SeriesNumber) for ds in first] == [9001, 9002]
    assert first[0].StudyInstanceUID == first[1].StudyInstanceUID
    assert first[0].FrameOfReferenceUID == first[1].FrameOfReferenceUID
    # Study-level attributes then agree across every file of both series.
    all_files = [str(p) for w in written for p in sorted(Path(w.folder).glob("*.dcm"))]
    done = subprocess.run([dicom3tools["dcentvfy"], *all_files], capture_output=True, text=True)
    assert not [line for line in (done.stdout + done.stderr).splitlines()
                if line.startswith("Error")]


# ---------------------------------------------------------------- identity and templates


def test_identity_without_template(cli, dicom3tools, tmp_path):
    rng = np.random.default_rng(4)
    data = rng.integers(-1024, 3000, (7, 5, 6)).astype(np.int16)
    # Values that do not fit 16 characters in plain notation: DS must be shortened.
    affine = oblique_affine((10.123456789, -20.987654321, 33.3333333333),
                            (0.123456789012345, 1.0 / 3.0, 2.718281828459045),
                            (-123.45678901234567, 98.76543210987654, -0.000123456789012345))
    source = write_nifti(tmp_path / "ct.nii", data, affine)
    out = tmp_path / "dicom"
    cli("nii2dicom", source, out, "--modality", "CT", "--patient-name", "Doe^Jane",
        "--patient-id", "P-0042", "--study-description", "Follow-up",
        "--series-description", "Segmentation", "--series-number", "42", check_code=0)
    validate_series(out, dicom3tools)
    image = nib.load(str(source))
    datasets = check_headers(out, data, image.affine, "CT", 0)
    ds = datasets[0]
    assert str(ds.PatientName) == "Doe^Jane" and ds.PatientID == "P-0042"
    assert ds.StudyDescription == "Follow-up" and ds.SeriesDescription == "Segmentation"
    assert int(ds.SeriesNumber) == 42
    assert ds.StudyInstanceUID != ds.SeriesInstanceUID != ds.FrameOfReferenceUID
    assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == 0
    assert int(ds.PixelRepresentation) == 1  # signed: the data are negative
    spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
    np.testing.assert_allclose(np.asarray(ds.PixelSpacing, float), spacing[[1, 0]], atol=1e-6)
    assert (int(ds.Rows), int(ds.Columns)) == (5, 7)


def test_two_runs_give_new_uids(tmp_path):
    """Without a template every run is a new study, series and frame of reference."""
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    source = write_nifti(tmp_path / "v.nii", data, np.diag([2.0, 2.0, 3.0, 1.0]))
    uids = []
    for name in ("a", "b"):
        (written,) = volume_to_dicom(source, tmp_path / name)
        ds = pydicom.dcmread(next(Path(written.folder).glob("*.dcm")))
        uids.append((ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID))
    assert not set(uids[0]) & set(uids[1])


@pytest.fixture
def small_mr(tmp_path) -> Path:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 4000, (6, 6, 3)).astype(np.int16)
    return write_nifti(tmp_path / "mr.nii.gz", data,
                       oblique_affine((5, 10, 15), (1.2, 1.2, 3.0), (10, -20, 30)))


def test_template_copies_patient_and_study(corpus, small_mr, cli, dicom3tools, tmp_path):
    template_dir = corpus / HITACHI
    template = pydicom.dcmread(sorted(template_dir.iterdir())[0], stop_before_pixels=True)
    out = tmp_path / "dicom"
    cli("nii2dicom", small_mr, out, "--modality", "MR", "--template", template_dir,
        "--patient-name", "Other^Name", check_code=0)
    validate_series(out, dicom3tools)
    datasets = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
    for ds in datasets:
        for keyword in ("PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "StudyID"):
            assert str(ds[keyword].value) == str(template[keyword].value), keyword
        assert str(ds.PatientName) == "Other^Name"  # an option beats the template
        # Without --same-study the result is a new study with its own frame of reference.
        assert ds.StudyInstanceUID != template.StudyInstanceUID
        assert ds.SeriesInstanceUID != template.SeriesInstanceUID
    # The template's PatientAge "0Y" breaks its VR (AS is nnnD/W/M/Y): not copied.
    assert template.PatientAge == "0Y"
    assert "PatientAge" not in datasets[0] or datasets[0].PatientAge != "0Y"


def test_same_study_reuses_the_templates_study(corpus, small_mr, cli, dicom3tools, tmp_path):
    template_dir = corpus / HITACHI
    template = pydicom.dcmread(sorted(template_dir.iterdir())[0], stop_before_pixels=True)
    out = tmp_path / "dicom"
    cli("nii2dicom", small_mr, out, "--modality", "MR", "--template", template_dir,
        "--same-study", check_code=0)
    validate_series(out, dicom3tools)
    datasets = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
    assert {ds.StudyInstanceUID for ds in datasets} == {template.StudyInstanceUID}
    assert {ds.StudyDate + ds.StudyTime for ds in datasets} == \
        {template.StudyDate + template.StudyTime}
    assert {ds.SeriesInstanceUID for ds in datasets} != {template.SeriesInstanceUID}
    assert {str(ds.PatientName) for ds in datasets} == {str(template.PatientName)}
    assert {ds.PatientID for ds in datasets} == {template.PatientID}
    # This template has no FrameOfReferenceUID: one new one, shared by every slice.
    assert "FrameOfReferenceUID" not in template
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    # One study now: its patient and study attributes agree across both series' files.
    files = [str(p) for p in sorted(out.glob("*.dcm")) + sorted(template_dir.iterdir())]
    done = subprocess.run([dicom3tools["dcentvfy"], *files], capture_output=True, text=True)
    assert not [line for line in (done.stdout + done.stderr).splitlines()
                if line.startswith("Error")], done.stdout + done.stderr

    # A template with a frame of reference (a series written by convkit): both UIDs reused.
    first = pydicom.dcmread(sorted(out.glob("*.dcm"))[0])
    second = tmp_path / "second"
    cli("nii2dicom", small_mr, second, "--modality", "MR", "--template", out, "--same-study",
        check_code=0)
    validate_series(second, dicom3tools)
    again = [pydicom.dcmread(p) for p in sorted(second.glob("*.dcm"))]
    assert {ds.StudyInstanceUID for ds in again} == {first.StudyInstanceUID}
    assert {ds.FrameOfReferenceUID for ds in again} == {first.FrameOfReferenceUID}
    assert first.SeriesInstanceUID not in {ds.SeriesInstanceUID for ds in again}


def test_same_study_needs_template(small_mr, cli, tmp_path):
    done = cli("nii2dicom", small_mr, tmp_path / "out", "--same-study", check_code=2)
    assert "--same-study needs --template" in done.stderr
    assert not (tmp_path / "out").exists()


def test_nrrd_and_metaimage_sources(dcm2niix, tmp_path):
    """nii2dicom reads any volume format: a RAS-space NRRD and an MHA of the same image."""
    import nrrd
    import SimpleITK as sitk

    rng = np.random.default_rng(9)
    data = rng.integers(0, 2000, (6, 5, 4)).astype(np.int16)
    ras = oblique_affine((25, 40, -60), (0.6, 1.1, 2.4), (30.5, -12.0, 88.0))
    nrrd.write(str(tmp_path / "ras.nrrd"), data, {
        "space": "right-anterior-superior", "space directions": ras[:3, :3].T,
        "space origin": ras[:3, 3], "kinds": ["domain"] * 3}, index_order="F")
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.T))
    lps = LPS @ ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(image, str(tmp_path / "lps.mha"))
    for name in ("ras.nrrd", "lps.mha"):
        (written,) = volume_to_dicom(tmp_path / name, tmp_path / f"{name}.dicom")
        assert written.max_error == 0
        back = dcm2niix_one(dcm2niix, tmp_path / f"{name}.dicom", tmp_path / f"{name}.n")
        assert_same_world(data, ras, np.asarray(back.dataobj), back.affine, 0)


def test_ambiguous_nifti_geometry_is_reported(cli, tmp_path):
    """qform != sform: the sform is used and, as `convert` does, the user is told."""
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    sform = np.diag([-1.5, 1.5, 2.0, 1.0])
    sform[:3, 3] = [10, -20, 30]
    qform = sform.copy()
    qform[:3, 3] += [5, 0, 0]
    image = nib.Nifti1Image(data, None)
    image.set_sform(sform, code=1)
    image.set_qform(qform, code=1)
    image.to_filename(str(tmp_path / "ambiguous.nii"))
    done = cli("nii2dicom", tmp_path / "ambiguous.nii", tmp_path / "dicom", "--json",
               check_code=0)
    first = pydicom.dcmread(tmp_path / "dicom" / "IM00001.dcm")
    np.testing.assert_allclose(np.asarray(first.ImagePositionPatient, float), [-10, 20, 30])
    notes = [note for series in json.loads(done.stdout)["series"] for note in series["notes"]]
    assert "qform and sform disagree" in done.stderr + " ".join(notes), \
        f"no word of the qform/sform disagreement; notes: {notes}, stderr: {done.stderr!r}"


@pytest.mark.parametrize("option, value", [
    ("--series-description", "x" * 80),  # LO: at most 64 characters
    ("--patient-id", "P" * 65),  # LO
    ("--study-description", "before\\after"),  # a backslash splits LO into two values
    ("--series-number", "99999999999"),  # IS: a signed 32-bit integer
], ids=["long-description", "long-id", "backslash", "huge-number"])
def test_identity_options_give_valid_dicom_or_a_usage_error(option, value, small_mr, cli,
                                                            dicom3tools, tmp_path):
    out = tmp_path / "dicom"
    done = cli("nii2dicom", small_mr, out, option, value)
    if done.returncode == 2:  # refused as a bad option, with nothing written
        assert option in done.stderr and not out.exists()
        return
    assert done.returncode == 0, done.stderr
    validate_series(out, dicom3tools)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("dtype, labels", [
    ("uint8", [0, 1, 2, 7, 255]),
    ("int16", [-5, 0, 3, 1000, 32767]),
])
def test_label_map_keeps_labels_exactly(dtype, labels, cli, dcm2niix, dicom3tools, tmp_path):
    rng = np.random.default_rng(11)
    data = np.asarray(labels, dtype=dtype)[rng.integers(0, len(labels), (9, 8, 5))]
    affine = oblique_affine((0, 0, 30), (0.8, 0.8, 2.5), (-40, 12, 7), flip_axis=2)
    source = write_nifti(tmp_path / "labels.nii.gz", data, affine)
    done = cli("nii2dicom", source, tmp_path / "dicom", "--json", check_code=0)
    (series,) = json.loads(done.stdout)["series"]
    assert series["max_error"] == 0 and series["slope"] == 1 and series["intercept"] == 0
    validate_series(tmp_path / "dicom", dicom3tools)
    back = dcm2niix_one(dcm2niix, tmp_path / "dicom", tmp_path / "n")
    values = np.asarray(back.dataobj)
    assert np.issubdtype(values.dtype, np.integer)
    assert sorted(np.unique(values).tolist()) == sorted(np.unique(data).tolist())
    assert_same_world(data, nib.load(str(source)).affine, values, back.affine, 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_refused(bad, cli, tmp_path):
    data = np.linspace(-1, 1, 60, dtype=np.float32).reshape(3, 4, 5)
    data[1, 2, 3] = bad
    source = write_nifti(tmp_path / "f.nii", data, np.eye(4))
    out = tmp_path / "out" / "dicom"
    done = cli("nii2dicom", source, out, check_code=4)
    assert "1 NaN or infinite values" in done.stderr
    assert "Hint:" in done.stderr and "replace them" in done.stderr
    assert not out.exists()
    assert leftovers(tmp_path / "out") == []


def test_non_finite_in_last_time_point_leaves_nothing(cli, tmp_path):
    data = np.ones((3, 3, 2, 3), dtype=np.float32) * 0.5
    data[0, 0, 0, 2] = np.nan
    source = write_nifti(tmp_path / "f4d.nii.gz", data, np.eye(4))
    out = tmp_path / "dicom"
    cli("nii2dicom", source, out, check_code=4)
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_sheared_affine_refused(cli, tmp_path):
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[1, 2] = 0.7  # slices stepping sideways (gantry tilt kept in the sform)
    source = write_nifti(tmp_path / "sheared.nii.gz", np.zeros((4, 4, 3), np.int16), affine)
    done = cli("nii2dicom", source, tmp_path / "dicom", check_code=4)
    assert "sheared" in done.stderr and "--resample" in done.stderr
    assert not (tmp_path / "dicom").exists()


def test_rgb_is_refused_clearly(tmp_path):
    rgb = np.zeros((4, 4, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    source = write_nifti(tmp_path / "rgb.nii", rgb, np.eye(4))
    with pytest.raises(RefusedError, match="colour") as caught:
        volume_to_dicom(source, tmp_path / "dicom")
    assert caught.value.exit_code == 4 and caught.value.hint
    assert not (tmp_path / "dicom").exists()


@pytest.mark.parametrize("shape", [(6, 5), (4, 5, 3, 2, 2)], ids=["2D", "5D"])
def test_volume_that_is_not_3d_or_4d_is_written_faithfully_or_refused(shape, tmp_path):
    """A 2D image may become a one-slice series; anything else a refusal (exit 3/4)."""
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    source = write_nifti(tmp_path / "in.nii", data, np.diag([0.5, 0.7, 2.0, 1.0]))
    try:
        (written,) = volume_to_dicom(source, tmp_path / "dicom")
    except ConvkitError as error:
        assert error.exit_code in (3, 4), f"exit {error.exit_code}: {error.message}"
        assert not (tmp_path / "dicom").exists()
        return
    assert len(shape) == 2 and written.files == 1
    (ds,) = [pydicom.dcmread(p) for p in (tmp_path / "dicom").glob("*.dcm")]
    np.testing.assert_array_equal(ds.pixel_array.T, data)


# ---------------------------------------------------------------- output safety


def test_existing_output_needs_force(small_mr, cli, tmp_path):
    out = tmp_path / "dicom"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    (out / "IM99999.dcm").write_bytes(b"old")
    done = cli("nii2dicom", small_mr, out, check_code=5)
    assert "output exists" in done.stderr and "--force" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["IM99999.dcm", "stale.txt"]
    assert leftovers(tmp_path) == []

    cli("nii2dicom", small_mr, out, "--force", check_code=0)
    assert sorted(p.name for p in out.iterdir()) == [f"IM{k:05d}.dcm" for k in (1, 2, 3)]
    assert leftovers(tmp_path) == []

    # An existing but empty folder is fine without --force.
    empty = tmp_path / "empty"
    empty.mkdir()
    volume_to_dicom(small_mr, empty)
    assert len(list(empty.glob("IM*.dcm"))) == 3


def test_force_never_deletes_the_input(small_mr, cli, tmp_path):
    """OUT_DIR holding the source: --force must not destroy the source with the old content."""
    folder = tmp_path / "work"
    folder.mkdir()
    source = folder / small_mr.name
    source.write_bytes(small_mr.read_bytes())
    done = cli("nii2dicom", source, folder, "--force")
    assert source.is_file() and source.read_bytes() == small_mr.read_bytes(), \
        f"exit {done.returncode}: the input was deleted by --force"


def test_output_folder_has_ordinary_permissions(small_mr, tmp_path):
    """The series folder is created like any folder (umask), not private like a temp dir."""
    umask = os.umask(0)
    os.umask(umask)
    reference = tmp_path / "reference"
    reference.mkdir()
    volume_to_dicom(small_mr, tmp_path / "dicom")
    assert stat.S_IMODE((tmp_path / "dicom").stat().st_mode) == \
        stat.S_IMODE(reference.stat().st_mode)


# ---------------------------------------------------------------- property test

finite = {"allow_nan": False, "allow_infinity": False}


@st.composite
def volumes(draw):
    angle = st.one_of(st.sampled_from([0.0, 90.0, -90.0, 180.0]),
                      st.floats(-180.0, 180.0, **finite))
    return {
        "angles": draw(st.tuples(angle, angle, angle)),
        "spacing": draw(st.tuples(*[st.floats(0.25, 4.0, **finite)] * 3)),
        "origin": draw(st.tuples(*[st.floats(-250.0, 250.0, **finite)] * 3)),
        "flip_axis": draw(st.sampled_from([None, 0, 1, 2])),  # 3 of 4 left-handed
        "shape": (draw(st.integers(2, 9)), draw(st.integers(2, 9)), draw(st.integers(2, 5))),
        # float32 with whole numbers (e.g. a resampled label map) must still be exact.
        "dtype": draw(st.sampled_from(["int16", "uint16", "float32", "float32 whole"])),
        "modality": draw(st.sampled_from(["CT", "MR", "OT"])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def make_data(case) -> np.ndarray:
    rng = np.random.default_rng(case["seed"])
    shape = case["shape"]
    if case["dtype"] == "float32 whole":
        return rng.integers(-3000, 3000, shape).astype(np.float32)
    if case["dtype"] == "float32":
        scale = 10.0 ** rng.uniform(-3, 5)
        return (rng.standard_normal(shape) * scale + rng.uniform(-10, 10) * scale).astype(
            np.float32)
    info = np.iinfo(case["dtype"])
    data = rng.integers(info.min, int(info.max) + 1, shape).astype(case["dtype"])
    data.flat[0], data.flat[-1] = info.min, info.max  # the extremes must survive
    return data


@pytest.mark.slow  # 25 examples, each through dciodvfy and dcm2niix: about 4 s
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=volumes())
def test_any_affine_and_dtype_round_trips_through_dcm2niix(case, dcm2niix, dicom3tools):
    data = make_data(case)
    affine = oblique_affine(case["angles"], case["spacing"], case["origin"], case["flip_axis"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = write_nifti(tmp / "src.nii", data, affine)
        image = nib.load(str(source))  # the affine as stored (float32)
        assert image.get_data_dtype() == np.dtype(case["dtype"].split()[0])
        (written,) = volume_to_dicom(source, tmp / "dicom",
                                     SeriesIdentity(modality=case["modality"]))
        real = np.asarray(image.dataobj).astype(np.float64)
        if case["dtype"] != "float32":
            assert written.max_error == 0 and written.slope == 1
        else:
            half_step = (real.max() - real.min()) / 65535 / 2
            assert written.max_error <= half_step * (1 + 1e-6)
        tol = float_tolerance(written.max_error, real)
        validate_series(tmp / "dicom", dicom3tools)
        back = dcm2niix_one(dcm2niix, tmp / "dicom", tmp / "n")
        assert_same_world(real, image.affine, back.get_fdata(dtype=np.float64), back.affine, tol)
        values, sitk_affine, _ = sitk_series(tmp / "dicom")
        assert_same_world(real, image.affine, values, sitk_affine, tol)


def test_cli_left_handed_oblique_float(cli, dcm2niix, dicom3tools, tmp_path):
    """The CLI path of the property above, with the stated error taken from --json."""
    rng = np.random.default_rng(3)
    data = (rng.standard_normal((11, 7, 4)) * 250 + 40).astype(np.float32)
    affine = oblique_affine((17, -33, 71), (0.7, 1.9, 3.3), (12.5, -80.25, 140), flip_axis=1)
    source = write_nifti(tmp_path / "f.nii.gz", data, affine)
    assert np.linalg.det(nib.load(str(source)).affine) < 0
    done = cli("nii2dicom", source, tmp_path / "dicom", "--modality", "MR", "--json",
               check_code=0)
    (series,) = json.loads(done.stdout)["series"]
    span = float(data.max()) - float(data.min())
    assert 0 < series["max_error"] <= span / 65535
    assert abs(series["slope"] - span / 65535) <= 1e-9 * span
    tol = float_tolerance(series["max_error"], data)
    validate_series(tmp_path / "dicom", dicom3tools)
    image = nib.load(str(source))
    check_headers(tmp_path / "dicom", data.astype(np.float64), image.affine, "MR", tol)
    back = dcm2niix_one(dcm2niix, tmp_path / "dicom", tmp_path / "n")
    assert_same_world(data, image.affine, back.get_fdata(dtype=np.float64), back.affine, tol)
