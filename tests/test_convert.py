"""convert: one image between NIfTI, NRRD and MetaImage with world geometry and values kept.

Checked in world space (the same physical voxel holds the same value) against the
NRRD corpus (../shared/data/nrrd), convkit dicom2nii outputs of real series, NRRDs
written here in RAS and LPS space, and a sheared NIfTI built from the positions of a
gantry-tilted CT. Independent readers (nibabel, pynrrd, SimpleITK) check what convkit wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import canonical, rotation

from convkit.convert import convert_file
from convkit.dicom2nii import convert_folder
from convkit.errors import ConvkitError, RefusedError
from convkit.formats import read_volume

AFFINE_ATOL_MM = 0.01
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
BALL = "BallBinary30x30x30.nii.gz"
#: NRRDs of the ball that must read as the ball (every encoding, byte and line skip).
BALL_NRRDS = [
    "BallBinary30x30x30.nrrd",
    "BallBinary30x30x30.nhdr",
    "BallBinary30x30x30_bz2.nrrd",
    "BallBinary30x30x30_gz.nrrd",
    "BallBinary30x30x30_gz_lineskip.nrrd",
    "BallBinary30x30x30_gz_byteskip_minus_one.nrrd",
    "BallBinary30x30x30_byteskip_minus_one.nhdr",
    # gzip data file that is a NIfTI; byte skip -1 takes the last 27000 bytes (the voxels).
    "BallBinary30x30x30_byteskip_minus_one_nifti.nhdr",
]
#: NRRDs that must not become a volume: (file, exit code, words in the message).
ODD_NRRDS = [
    ("test1d_ascii.nrrd", 4, "NRRD without a 3D patient space"),  # 1D, no space
    ("test2d_ascii.nrrd", 4, "NRRD without a 3D patient space"),  # 2D, no space
    ("test_customFields.nrrd", 4, "NRRD without a 3D patient space"),  # 1D, custom fields
    # Same NIfTI data file but the byte skip is commented out: the 352-byte NIfTI header
    # would be read as voxels (27176 bytes for 27000): unreadable, not a shifted ball.
    ("BallBinary30x30x30_nifti.nhdr", 3, "Size of the data does not equal"),
    ("BallBinary30x30x30_byteskip_minus_five.nhdr", 3, "Invalid byteskip"),  # only -1 or >= 0
]
FORMAT_CHAIN = [".nrrd", ".mha", ".nhdr", ".mhd", ".nii", ".nii.gz"]


def world(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(real values, RAS affine) of any volume file as convkit reads it."""
    volume = read_volume(path)
    return volume.real_array(np.float64), volume.affine


def assert_same_volume(a: Path | str, b: Path | str, atol_values: float = 0.0) -> None:
    """Same grid (affine to 0.01 mm, same axes) and same real values: no reorientation."""
    data_a, affine_a = world(a)
    data_b, affine_b = world(b)
    assert data_a.shape == data_b.shape, f"{a}: {data_a.shape} vs {b}: {data_b.shape}"
    np.testing.assert_allclose(affine_b, affine_a, atol=AFFINE_ATOL_MM, rtol=0)
    diff = np.abs(data_a - data_b)
    assert diff.max() <= atol_values, f"values differ by {diff.max()}"


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def sitk_lps(path: Path):
    """SimpleITK's own reading: (origin, direction 3x3, spacing, array (i, j, k[, c]))."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    array = np.moveaxis(array, (0, 1, 2), (2, 1, 0)) if image.GetNumberOfComponentsPerPixel() \
        > 1 else array.T
    return (np.asarray(image.GetOrigin()), np.reshape(image.GetDirection(), (3, 3)),
            np.asarray(image.GetSpacing()), array)


def assert_sitk_reads_as(path: Path, affine_ras: np.ndarray, data: np.ndarray) -> None:
    origin, direction, spacing, array = sitk_lps(path)
    lps = LPS @ affine_ras
    expected_spacing = np.linalg.norm(lps[:3, :3], axis=0)
    np.testing.assert_allclose(spacing, expected_spacing, atol=1e-6)
    np.testing.assert_allclose(origin, lps[:3, 3], atol=1e-4)
    np.testing.assert_allclose(direction, lps[:3, :3] / expected_spacing, atol=1e-6)
    assert array.shape == data.shape
    np.testing.assert_array_equal(array, data)


# ---------------------------------------------------------------- the NRRD corpus


@pytest.fixture(scope="module")
def nrrd_dir(corpus) -> Path:
    return corpus / "nrrd"


@pytest.mark.parametrize("name", BALL_NRRDS)
def test_ball_nrrds_read_as_the_ball_nifti(name, nrrd_dir, tmp_path):
    report = convert_file(nrrd_dir / name, tmp_path / "ball.nii.gz")
    assert report["shape"] == [30, 30, 30] and report["dtype"] == "int16"
    ball = nib.load(str(nrrd_dir / BALL))
    out = nib.load(str(tmp_path / "ball.nii.gz"))
    np.testing.assert_array_equal(out.affine, ball.affine)  # LPS identity = diag(-1, -1, 1)
    np.testing.assert_array_equal(np.asarray(out.dataobj), np.asarray(ball.dataobj))
    assert set(np.unique(np.asarray(out.dataobj)).tolist()) == {0, 257}


def test_ball_round_trips_nifti_nrrd_mha(nrrd_dir, cli_subprocess, tmp_path):
    """NIfTI -> NRRD -> MHA -> NHDR -> MHD -> NIfTI; every step equal to the source (one step
    through the real `python -m convkit convert` process: the command's smoke test)."""
    source = nrrd_dir / BALL
    previous = source
    for step, suffix in enumerate(FORMAT_CHAIN):
        target = tmp_path / f"step{step}{suffix}"
        if suffix == ".mha":  # one step through the CLI
            done = cli_subprocess("convert", previous, target, "--json", check_code=0)
            assert json.loads(done.stdout)["output"] == str(target)
        else:
            convert_file(previous, target)
        assert_same_volume(source, target)
        previous = target
    data = np.asarray(nib.load(str(source)).dataobj)
    assert_sitk_reads_as(tmp_path / "step0.nrrd", nib.load(str(source)).affine, data)
    assert_sitk_reads_as(tmp_path / "step1.mha", nib.load(str(source)).affine, data)
    # pynrrd on convkit's NRRD: stated LPS space, directions and origin.
    values, header = nrrd.read(str(tmp_path / "step0.nrrd"), index_order="F")
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(header["space directions"], np.eye(3))
    np.testing.assert_array_equal(values, data)
    final = nib.load(str(tmp_path / "step5.nii.gz"))
    assert final.get_data_dtype() == np.int16
    assert int(final.header["qform_code"]) == 1 and int(final.header["sform_code"]) == 1


@pytest.mark.parametrize("name, code, words", ODD_NRRDS)
def test_odd_nrrds_are_refused_with_a_message(name, code, words, nrrd_dir, cli, tmp_path):
    target = tmp_path / "out.nii.gz"
    done = cli("convert", nrrd_dir / name, target, check_code=code)
    assert done.stderr.startswith("Error: ") and words in done.stderr
    assert name in done.stderr
    assert "Hint:" in done.stderr
    assert not target.exists()
    assert not tmp_path.exists() or leftovers(tmp_path) == []


def test_4d_nrrd_with_trailing_axis(nrrd_dir, tmp_path):
    """test_simple4d_raw: RAS space, 1x1x1x1 double, a trailing non-spatial axis."""
    convert_file(nrrd_dir / "test_simple4d_raw.nrrd", tmp_path / "t.nii")
    values, header = nrrd.read(str(nrrd_dir / "test_simple4d_raw.nrrd"), index_order="F")
    out = nib.load(str(tmp_path / "t.nii"))
    assert out.shape == (1, 1, 1, 1)
    np.testing.assert_allclose(out.affine, np.diag([1.5, 1.5, 1.0, 1.0]))  # RAS: no flip
    np.testing.assert_array_equal(np.asarray(out.dataobj), values)


# ---------------------------------------------------------------- RAS and LPS NRRD


def test_ras_and_lps_nrrd_are_the_same_image(cli, tmp_path):
    rng = np.random.default_rng(5)
    data = rng.integers(-500, 1500, (7, 6, 5)).astype(np.int16)
    lps = np.eye(4)
    lps[:3, :3] = rotation(20, -35, 50) * [0.9, 1.3, 2.7]
    lps[:3, 3] = [-80.5, 42.25, 17.0]
    ras = LPS @ lps
    for space, affine in (("left-posterior-superior", lps), ("right-anterior-superior", ras)):
        header = {"space": space, "space directions": affine[:3, :3].T,
                  "space origin": affine[:3, 3], "kinds": ["domain"] * 3, "encoding": "raw"}
        nrrd.write(str(tmp_path / f"{space[:5]}.nrrd"), data, header, index_order="F")
    for name in ("left-.nrrd", "right.nrrd"):
        volume = read_volume(tmp_path / name)
        np.testing.assert_allclose(volume.affine, ras, atol=1e-9)
        np.testing.assert_array_equal(volume.array, data)
    cli("convert", tmp_path / "left-.nrrd", tmp_path / "from_lps.nii.gz", check_code=0)
    convert_file(tmp_path / "right.nrrd", tmp_path / "from_ras.nii.gz")
    a, b = nib.load(str(tmp_path / "from_lps.nii.gz")), nib.load(str(tmp_path / "from_ras.nii.gz"))
    np.testing.assert_array_equal(a.affine, b.affine)
    np.testing.assert_array_equal(a.header.get_qform(), b.header.get_qform())
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
    np.testing.assert_allclose(a.affine, ras, atol=1e-5)  # float32 sform
    np.testing.assert_array_equal(np.asarray(a.dataobj), data)
    # And convkit's own NRRD of either says LPS and is read so by SimpleITK.
    convert_file(tmp_path / "right.nrrd", tmp_path / "again.nrrd")
    assert nrrd.read_header(str(tmp_path / "again.nrrd"))["space"] == "left-posterior-superior"
    assert_sitk_reads_as(tmp_path / "again.nrrd", ras, data)


# ---------------------------------------------------------------- dicom2nii outputs


@pytest.fixture(scope="module")
def dicom2nii(corpus, tmp_path_factory):
    """convkit dicom2nii of a few real series; returns case -> .nii.gz."""
    out = tmp_path_factory.mktemp("d2n")
    found = {}
    for case in ("failing_gantrytilting_001", "generic_anatomical_002_non_isotropic",
                 "hitachi_anatomical_001", "ge_fmri_001"):
        report = convert_folder(corpus / "dicom" / "d2n" / case / "series", out / case)
        assert report.exit_code == 0
        (found[case],) = [Path(p) for s in report.series for p in s.outputs
                          if p.endswith(".nii.gz")]
    return found


@pytest.mark.parametrize("case", ["failing_gantrytilting_001",
                                  "generic_anatomical_002_non_isotropic",
                                  "hitachi_anatomical_001"])
def test_dicom2nii_outputs_round_trip_between_formats(case, dicom2nii, tmp_path):
    source = dicom2nii[case]
    real, affine = world(source)
    previous = source
    for step, suffix in enumerate(FORMAT_CHAIN):
        target = tmp_path / f"step{step}{suffix}"
        convert_file(previous, target)
        assert_same_volume(source, target)  # values exact: real values in the smallest type
        previous = target
    # Independent readers of what convkit wrote.
    sitk_data = sitk_lps(tmp_path / "step1.mha")[3]
    assert_sitk_reads_as(tmp_path / "step0.nrrd", affine, sitk_data)
    np.testing.assert_array_equal(sitk_data, real)
    final = nib.load(str(tmp_path / "step5.nii.gz"))
    np.testing.assert_array_equal(final.get_fdata(dtype=np.float64), real)
    np.testing.assert_allclose(final.affine, nib.load(str(source)).affine, atol=1e-6)


def test_scaled_ct_becomes_real_values_in_nrrd(dicom2nii, tmp_path):
    """uint16 + intercept -1024 (NIfTI) -> NRRD has no slope: int16 Hounsfield units."""
    report = convert_file(dicom2nii["failing_gantrytilting_001"], tmp_path / "ct.nrrd")
    assert report["scaling"] == [1.0, -1024.0]
    assert any("slope/intercept" in lost for lost in report["not_carried"])
    values, header = nrrd.read(str(tmp_path / "ct.nrrd"), index_order="F")
    assert values.dtype == np.int16
    source = nib.load(str(dicom2nii["failing_gantrytilting_001"]))
    np.testing.assert_array_equal(values, source.get_fdata())
    assert values.min() < 0


@pytest.fixture(scope="module", params=[".nrrd", ".mha"])
def fmri_round_trip(request, dicom2nii, cli, tmp_path_factory):
    """ge_fmri_001 (64x64x4, 2 time points, TR 2.5 s) -> NRRD or MHA (CLI) -> NIfTI."""
    source = dicom2nii["ge_fmri_001"]
    tmp = tmp_path_factory.mktemp("fmri")
    middle = tmp / f"fmri{request.param}"
    done = cli("convert", source, middle, "--json", check_code=0)
    convert_file(middle, tmp / "back.nii.gz")
    return source, middle, json.loads(done.stdout), tmp / "back.nii.gz"


def test_4d_nifti_round_trip_keeps_the_time_axis(fmri_round_trip):
    source, middle, report, back_path = fmri_round_trip
    image = nib.load(str(source))
    assert image.shape == (64, 64, 4, 2)
    assert report["shape"] == [64, 64, 4, 2]
    if middle.suffix == ".nrrd":  # pynrrd: time points as the first (non-spatial) axis
        values, header = nrrd.read(str(middle), index_order="F")
        assert values.shape == (2, 64, 64, 4)
        assert header["kinds"][1:] == ["domain"] * 3
        for t in range(2):
            np.testing.assert_array_equal(values[t], np.asarray(image.dataobj)[..., t])
    back = nib.load(str(back_path))
    assert back.shape == image.shape
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(image.dataobj))
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-6)


def test_4d_time_step_is_kept_or_reported(fmri_round_trip):
    """The time step (2.5 s) survives NIfTI -> NRRD/MHA -> NIfTI, or the report says it can't."""
    source, _, report, back_path = fmri_round_trip
    repetition = float(nib.load(str(source)).header.get_zooms()[3])
    assert repetition == pytest.approx(2.5)
    back = float(nib.load(str(back_path)).header.get_zooms()[3])
    reported = any("time" in lost.lower() or "repetition" in lost.lower()
                   for lost in report["not_carried"])
    assert back == pytest.approx(repetition) or reported, \
        f"time step {repetition} s became {back} s; not_carried = {report['not_carried']}"


@pytest.fixture(scope="module")
def rgb_nifti(corpus, tmp_path_factory) -> str:
    """convkit dicom2nii of the RGB series (R, G, B structured voxels)."""
    report = convert_folder(corpus / "dicom" / "d2n" / "generic_rgb_001" / "series",
                            tmp_path_factory.mktemp("rgb"))
    (source,) = [p for s in report.series for p in s.outputs if p.endswith(".nii.gz")]
    return source


def test_rgb_round_trips_through_nrrd(rgb_nifti, tmp_path):
    convert_file(rgb_nifti, tmp_path / "rgb.nrrd")
    values, header = nrrd.read(str(tmp_path / "rgb.nrrd"), index_order="F")
    assert header["kinds"][0].lower() == "rgb-color" and values.shape[0] == 3
    convert_file(tmp_path / "rgb.nrrd", tmp_path / "back.nii.gz")
    a, b = nib.load(rgb_nifti), nib.load(str(tmp_path / "back.nii.gz"))
    assert np.asarray(b.dataobj).dtype.names == ("R", "G", "B")
    np.testing.assert_array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))
    np.testing.assert_array_equal(values[0], np.asarray(a.dataobj)["R"])
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)


def test_rgb_to_metaimage_is_faithful_or_refused(rgb_nifti, tmp_path):
    """MetaImage holds 3-component pixels: write them (ITK reads them back) or refuse clearly."""
    target = tmp_path / "rgb.mha"
    try:
        convert_file(rgb_nifti, target)
    except ConvkitError as error:
        assert error.exit_code in (3, 4) and error.hint
        assert not target.exists()
        return
    rgb = np.asarray(nib.load(rgb_nifti).dataobj)
    array = sitk_lps(target)[3]
    for channel, name in enumerate("RGB"):
        np.testing.assert_array_equal(array[..., channel], rgb[name])


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3, 2, 2)], ids=["2D", "5D"])
@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_nifti_that_is_not_3d_or_4d_is_converted_faithfully_or_refused(shape, suffix, tmp_path):
    """Either the output holds the same voxels at the same places, or a clear refusal (3/4)."""
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = [3, -4, 5]
    source = tmp_path / "in.nii"
    nib.Nifti1Image(data, affine).to_filename(str(source))
    target = tmp_path / f"out{suffix}"
    try:
        convert_file(source, target)
    except ConvkitError as error:
        assert error.exit_code in (3, 4), f"exit {error.exit_code}: {error.message}"
        assert not target.exists()
        return
    try:
        back = read_volume(target)
    except ConvkitError as error:
        pytest.fail(f"convert wrote {target.name}, which convkit cannot read: {error.message}")
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert back.array.squeeze().shape == data.squeeze().shape  # 2D may gain a k axis of 1
    np.testing.assert_array_equal(back.array.squeeze(), data.squeeze())
    if suffix != ".nii.gz":  # and the file is valid for other software (ITK's reader)
        try:
            sitk.ReadImage(str(target))
        except RuntimeError as error:
            pytest.fail(f"SimpleITK cannot read the {suffix} convkit wrote: "
                        f"{str(error).splitlines()[-1][:200]}")


# ---------------------------------------------------------------- shear, qform vs sform


def sheared_gantry_nifti(corpus: Path, path: Path) -> Path:
    """The tilted CT as another converter keeps it: k column = the step between positions."""
    folder = corpus / "dicom" / "d2n" / "failing_gantrytilting_001" / "series"
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    iop = np.asarray(datasets[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    datasets.sort(key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    positions = np.array([ds.ImagePositionPatient for ds in datasets], float)
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    assert abs(np.dot(step, normal) / np.linalg.norm(step)) < 0.99  # tilted: not the normal
    pixel_spacing = np.asarray(datasets[0].PixelSpacing, float)
    lps = np.eye(4)
    lps[:3, 0] = row * pixel_spacing[1]
    lps[:3, 1] = col * pixel_spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    data = np.stack([ds.pixel_array.T for ds in datasets], axis=2)
    image = nib.Nifti1Image(data, LPS @ lps)
    image.header.set_slope_inter(float(datasets[0].RescaleSlope),
                                 float(datasets[0].RescaleIntercept))
    image.to_filename(str(path))
    return path


def test_sheared_nifti_refused_then_resampled_like_dicom2nii(corpus, dicom2nii, cli, tmp_path):
    sheared = sheared_gantry_nifti(corpus, tmp_path / "sheared.nii.gz")
    target = tmp_path / "out" / "unsheared.nii.gz"
    done = cli("convert", sheared, target, check_code=4)
    assert "sheared" in done.stderr and "--resample" in done.stderr
    assert not target.exists()
    assert not target.parent.exists() or leftovers(target.parent) == []

    done = cli("convert", sheared, target, "--resample", "--json", check_code=0)
    assert "Note:" in done.stderr and "resampled" in done.stderr
    report = json.loads(done.stdout)
    assert report["shape"] == [512, 521, 4]
    reference = dicom2nii["failing_gantrytilting_001"]  # dicom2nii's tilt-corrected volume
    ours, theirs = nib.load(str(target)), nib.load(str(reference))
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=AFFINE_ATOL_MM, rtol=0)
    data_a, _ = canonical(target)
    data_b, _ = canonical(reference)
    assert data_a.shape == data_b.shape
    assert np.max(np.abs(data_a - data_b)) <= 1  # within 1 stored unit (slope 1)
    # The slice axis is the normal now: a plain (unsheared) affine.
    columns = ours.affine[:3, :3] / np.linalg.norm(ours.affine[:3, :3], axis=0)
    np.testing.assert_allclose(columns.T @ columns, np.eye(3), atol=1e-5)


#: A slice axis that leans one pixel along i per slice (LPS mm): in-plane axes orthogonal.
SHEARED_LPS = np.array([[1.0, 0.0, 1.0, -5.0],
                        [0.0, 1.5, 0.0, 7.0],
                        [0.0, 0.0, 2.0, 30.0],
                        [0.0, 0.0, 0.0, 1.0]])


def write_sheared(path: Path, data: np.ndarray) -> Path:
    """data (i, j, k) int16 on SHEARED_LPS as a NRRD (pynrrd) or a MetaImage (text header)."""
    if path.suffix == ".nrrd":
        header = {"space": "left-posterior-superior", "space directions": SHEARED_LPS[:3, :3].T,
                  "space origin": SHEARED_LPS[:3, 3], "kinds": ["domain"] * 3}
        nrrd.write(str(path), data, header, index_order="F")
        return path
    matrix = " ".join(f"{v:.17g}" for v in (SHEARED_LPS[:3, :3] / np.linalg.norm(
        SHEARED_LPS[:3, :3], axis=0)).T.ravel())  # row n: direction of axis n
    spacing = " ".join(f"{v:.17g}" for v in np.linalg.norm(SHEARED_LPS[:3, :3], axis=0))
    text = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"CompressedData = False\nTransformMatrix = {matrix}\n"
            f"Offset = {' '.join(f'{v:g}' for v in SHEARED_LPS[:3, 3])}\n"
            f"ElementSpacing = {spacing}\nDimSize = {' '.join(map(str, data.shape))}\n"
            "ElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    path.write_bytes(text.encode() + data.astype("<i2").tobytes(order="F"))
    return path


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_sheared_nrrd_and_metaimage_refused_then_resampled(cli, tmp_path, suffix):
    """A sheared NRRD or MetaImage used to convert to NIfTI silently with qform != sform.
    It is refused (exit 4, nothing written); with --resample each slice is shifted onto a
    grid along the normal, and every source voxel keeps its value at its world position."""
    data = np.random.default_rng(7).integers(-1000, 1000, (6, 5, 4)).astype(np.int16)
    source = write_sheared(tmp_path / f"sheared{suffix}", data)
    np.testing.assert_allclose(read_volume(source).affine, LPS @ SHEARED_LPS, atol=1e-6)
    target = tmp_path / "out" / "straight.nii.gz"
    done = cli("convert", source, target, check_code=4)
    assert "sheared" in done.stderr and "--resample" in done.stderr
    assert not target.exists()

    cli("convert", source, target, "--resample", check_code=0)
    image = nib.load(str(target))
    qform, sform = image.header.get_qform(), image.header.get_sform()
    np.testing.assert_allclose(qform, sform, atol=1e-4)  # a straight grid: both agree
    out = np.asanyarray(image.dataobj)
    assert out.shape == (6 + 3, 5, 4)  # one pixel of drift per slice, three steps
    index = np.indices(data.shape).reshape(3, -1)
    world_ras = (LPS @ SHEARED_LPS @ np.vstack([index, np.ones(index.shape[1])]))
    target_index = np.linalg.inv(image.affine) @ world_ras
    rounded = np.rint(target_index[:3]).astype(int)
    np.testing.assert_allclose(target_index[:3], rounded, atol=1e-4)  # on the new grid
    assert np.array_equal(out[tuple(rounded)], data.reshape(-1, order="C"))


def test_unshear_refuses_sheared_in_plane_axes(tmp_path):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    affine[0, 1] = 0.5  # j leans on i: not gantry tilt
    nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), affine).to_filename(str(tmp_path / "s.nii"))
    with pytest.raises(RefusedError, match="in-plane axes are not orthogonal"):
        convert_file(tmp_path / "s.nii", tmp_path / "o.nii", resample_shear=True)
    assert not (tmp_path / "o.nii").exists()


def test_qform_sform_disagreement_uses_the_sform_and_says_so(cli, tmp_path):
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    sform = np.diag([-1.5, 1.5, 2.0, 1.0])
    sform[:3, 3] = [10, -20, 30]
    qform = sform.copy()
    qform[:3, 3] += [5, 0, 0]  # 5 mm away
    image = nib.Nifti1Image(data, None)
    image.set_sform(sform, code=1)
    image.set_qform(qform, code=1)
    image.to_filename(str(tmp_path / "ambiguous.nii"))
    done = cli("convert", tmp_path / "ambiguous.nii", tmp_path / "out.nrrd", "--json",
               check_code=0)
    assert "Note: qform and sform disagree: the sform is used" in done.stderr
    assert "qform and sform disagree: the sform is used" in json.loads(done.stdout)["notes"]
    volume = read_volume(tmp_path / "out.nrrd")
    np.testing.assert_allclose(volume.affine, sform, atol=1e-6)
    np.testing.assert_array_equal(volume.array, data)
    # Back to NIfTI: one geometry, qform = sform, no more note.
    assert convert_file(tmp_path / "out.nrrd", tmp_path / "back.nii")["notes"] == []
    back = nib.load(str(tmp_path / "back.nii"))
    np.testing.assert_allclose(back.header.get_qform(), sform, atol=1e-5)
    np.testing.assert_allclose(back.header.get_sform(), sform, atol=1e-5)


# ---------------------------------------------------------------- output safety


def test_existing_output_needs_force(nrrd_dir, cli, tmp_path):
    target = tmp_path / "ball.mha"
    target.write_bytes(b"not a volume")
    done = cli("convert", nrrd_dir / BALL, target, check_code=5)
    assert "output exists" in done.stderr and "--force" in done.stderr
    assert target.read_bytes() == b"not a volume"
    assert leftovers(tmp_path) == []
    convert_file(nrrd_dir / BALL, target, force=True)
    assert_same_volume(nrrd_dir / BALL, target)
    assert leftovers(tmp_path) == []


def test_detached_data_file_counts_as_an_existing_output(nrrd_dir, cli, tmp_path):
    (tmp_path / "ball.raw.gz").write_bytes(b"someone else's data")
    cli("convert", nrrd_dir / BALL, tmp_path / "ball.nhdr", check_code=5)
    assert (tmp_path / "ball.raw.gz").read_bytes() == b"someone else's data"
    assert not (tmp_path / "ball.nhdr").exists()
    convert_file(nrrd_dir / BALL, tmp_path / "ball.nhdr", force=True)
    assert_same_volume(nrrd_dir / BALL, tmp_path / "ball.nhdr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ball.nhdr", "ball.raw.gz"]


def test_unknown_output_format_is_a_usage_error(nrrd_dir, cli, tmp_path):
    done = cli("convert", nrrd_dir / BALL, tmp_path / "ball.png", check_code=2)
    assert "unknown output format" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_rgba_nifti_reads_as_rgb_with_a_note(tmp_path):
    """NIfTI RGBA (datatype 2304) is read as RGB: every voxel's R, G, B kept, and a note
    says the alpha channel (with its values) is not kept (was exit 70, a TypeError)."""
    import nibabel as nib

    from convkit.formats import read_volume

    rgba = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    data = np.zeros((4, 3, 2), dtype=rgba)
    rng = np.random.default_rng(7)
    for name in ("R", "G", "B"):
        data[name] = rng.integers(0, 256, data.shape)
    data["A"] = 200
    image = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    assert image.header.get_data_dtype() == rgba and int(image.header["datatype"]) == 2304
    nib.save(image, tmp_path / "rgba.nii.gz")
    volume = read_volume(tmp_path / "rgba.nii.gz")
    assert volume.is_rgb
    for name in ("R", "G", "B"):
        np.testing.assert_array_equal(volume.array[name], data[name])
    assert any("alpha channel (always 200) is not kept" in note for note in volume.notes)
