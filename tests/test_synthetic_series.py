"""Synthetic DICOM series with known geometry -> convkit -> the known affine and voxel values.

Every expectation is computed here from first principles, never with convkit.geometry:

- RAS affine: column 0 = row direction (IOP[:3]) * PixelSpacing[1], column 1 = column
  direction (IOP[3:]) * PixelSpacing[0], column 2 = normal * slice spacing with
  normal = row x column and slices sorted ascending along the normal, column 3 =
  ImagePositionPatient of the lowest slice along the normal; then rows 0 and 1 negated
  (LPS -> RAS).
- Voxels: expected[i, j, k] = stored slice k (in that sorted order) at DICOM row j, column i.

Besides exact affine/array equality, ``assert_world_values`` checks the convention-free
fact: the world position of every stored DICOM pixel maps (through the output affine)
onto a voxel that holds that pixel's value.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import rotation

from convkit.dicom.plan import ConvertOptions
from convkit.dicom.series import read_series
from convkit.dicom2nii import convert_folder
from convkit.errors import RefusedError
from convkit.testing.synthetic import regular_positions, write_series

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
AFFINE_ATOL = 1e-4  # mm; DS strings carry ~13 significant digits, float32 sform ~1e-5 at 100 mm
LABEL = "1_synthetic"  # {SeriesNumber}_{SeriesDescription} of write_series' defaults


_OBLIQUE = rotation(20.0, -35.0, 50.0)
ORIENTATIONS = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "oblique": tuple(_OBLIQUE[:, 0]) + tuple(_OBLIQUE[:, 1]),
}


# --------------------------------------------------------------------------- expectations


def unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def axes(iop):
    row, col = unit(iop[:3]), unit(iop[3:])
    return row, col, unit(np.cross(row, col))


def expected_geometry(iop, pixel_spacing, positions, slice_spacing=None):
    """(RAS affine, sorted order) of a straight stack, from first principles."""
    positions = np.asarray(positions, float)
    row, col, normal = axes(iop)
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    if slice_spacing is None:
        slice_spacing = (distances[order[-1]] - distances[order[0]]) / (len(positions) - 1)
    lps = np.eye(4)
    lps[:3, 0] = row * pixel_spacing[1]
    lps[:3, 1] = col * pixel_spacing[0]
    lps[:3, 2] = normal * slice_spacing
    lps[:3, 3] = positions[order[0]]
    return RAS_FROM_LPS @ lps, order


def expected_array(stored, order):
    """expected[i, j, k(, c)] = stored[order[k]][j, i(, c)]."""
    stored = np.asarray(stored)[order]
    return np.swapaxes(np.moveaxis(stored, 0, 2), 0, 1)


def pixel_world_lps(iop, pixel_spacing, position, rows, cols):
    """(rows, cols, 3) LPS centre of every pixel of one slice (DICOM definition)."""
    row, col, _ = axes(iop)
    jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return (np.asarray(position, float) + ii[..., None] * pixel_spacing[1] * row
            + jj[..., None] * pixel_spacing[0] * col)


def assert_world_values(affine_ras, data, stored, positions, iop, pixel_spacing, times=None,
                        index_atol=1e-3):
    """Every stored pixel's world position lands on an output voxel holding its value.

    Independent of any slice-order convention. times: for 4D, the output time index of
    each stored slice.
    """
    inverse = np.linalg.inv(affine_ras)
    rows, cols = stored.shape[1:3]
    for s in range(len(stored)):
        world = pixel_world_lps(iop, pixel_spacing, positions[s], rows, cols) * [-1, -1, 1]
        index = world @ inverse[:3, :3].T + inverse[:3, 3]
        rounded = np.rint(index)
        assert np.max(np.abs(index - rounded)) < index_atol, (
            f"slice {s}: pixel centres fall between voxels (max off-grid "
            f"{np.max(np.abs(index - rounded)):.4g} voxel)")
        ijk = rounded.astype(int)
        for axis in range(3):
            assert ijk[..., axis].min() >= 0 and ijk[..., axis].max() < data.shape[axis], (
                f"slice {s}: pixel centres outside the output grid on axis {axis}")
        at = (ijk[..., 0], ijk[..., 1], ijk[..., 2])
        if times is not None:
            at = at + (np.full(ijk.shape[:2], times[s]),)
        np.testing.assert_array_equal(data[at], stored[s], err_msg=f"slice {s}")


def file_order(n: int, order: str, seed: int = 0) -> np.ndarray:
    """Indices into a regular ascending stack, in the order the files are written."""
    if order == "ascending":
        return np.arange(n)
    if order == "descending":
        return np.arange(n)[::-1].copy()
    permutation = np.random.default_rng(seed).permutation(n)
    if np.array_equal(permutation, np.arange(n)) or np.array_equal(permutation, np.arange(n)[::-1]):
        permutation = np.roll(permutation, 1)
    return permutation


def stack_positions(iop, n, spacing, origin) -> np.ndarray:
    _, _, normal = axes(iop)
    return np.asarray(origin, float) + np.outer(np.arange(n), normal * spacing)


def random_stored(n, rows, cols, dtype="int16", low=-1000, high=3000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(low, high, size=(n, rows, cols), endpoint=True).astype(dtype)


# --------------------------------------------------------------------------- CLI helpers


def run_ok(cli, *args) -> None:
    done = cli("dicom2nii", *args)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def load_output(out_dir: Path, suffix: str = ".nii.gz"):
    outputs = sorted(out_dir.glob(f"*{suffix}"))
    assert [p.name for p in outputs] == [f"{LABEL}{suffix}"], outputs
    sidecar = json.loads((out_dir / f"{LABEL}.json").read_text())
    return outputs[0], sidecar


def raw_header(path: Path):
    """The NIfTI header as stored (nibabel's loaded image resets scl_slope/scl_inter to NaN)."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        return nib.Nifti1Header.from_fileobj(handle)


def assert_no_scaling(path: Path):
    assert raw_header(path).get_slope_inter() in ((1.0, 0.0), (None, None))


def check_nifti_header(image, affine, zooms):
    """qform and sform both set (codes 1/1) and equal to the expected affine; pixdim; units."""
    header = image.header
    assert int(header["qform_code"]) == 1
    assert int(header["sform_code"]) == 1
    np.testing.assert_allclose(image.affine, affine, atol=AFFINE_ATOL)
    np.testing.assert_allclose(header.get_sform(), affine, atol=AFFINE_ATOL)
    np.testing.assert_allclose(header.get_qform(), affine, atol=AFFINE_ATOL)
    np.testing.assert_allclose(header["pixdim"][1:1 + len(zooms)], zooms, rtol=1e-6)
    np.testing.assert_allclose(header.get_zooms(), zooms, rtol=1e-6)
    assert header.get_xyzt_units() == ("mm", "sec")


def write_standard(folder, orientation, order, *, n=6, rows=5, cols=7, pixel_spacing=(0.7, 0.45),
                   spacing=2.5, origin=(-31.5, 17.25, 48.0), seed=0, **kwargs):
    """A regular stack written in file order `order`; returns (stored, positions) as written."""
    iop = ORIENTATIONS[orientation] if isinstance(orientation, str) else orientation
    regular = stack_positions(iop, n, spacing, origin)
    written_order = file_order(n, order, seed)
    positions = regular[written_order]
    stored = random_stored(n, rows, cols, seed=seed + 1)
    write_series(folder, stored, positions, orientation=iop, pixel_spacing=pixel_spacing,
                 seed=seed, **kwargs)
    return stored, positions


# --------------------------------------------------------------------------- orientation / order


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_orientation_and_order_api(tmp_path, orientation, order):
    iop = ORIENTATIONS[orientation]
    pixel_spacing = (0.7, 0.45)
    stored, positions = write_standard(tmp_path / "in", orientation, order,
                                       pixel_spacing=pixel_spacing, slice_thickness=9.0)
    volume = read_series(tmp_path / "in")
    affine, sorted_order = expected_geometry(iop, pixel_spacing, positions)
    assert volume.shape == (7, 5, 6)
    np.testing.assert_allclose(volume.affine, affine, atol=AFFINE_ATOL)
    np.testing.assert_array_equal(volume.array, expected_array(stored, sorted_order))
    assert volume.array.dtype == np.int16
    assert (volume.slope, volume.intercept) == (1.0, 0.0)
    # Spacing from positions (2.5), not from SliceThickness (9.0).
    np.testing.assert_allclose(volume.spacing, (0.45, 0.7, 2.5), rtol=1e-9)
    assert_world_values(volume.affine, volume.array, stored, positions, iop, pixel_spacing)


@pytest.mark.parametrize(
    ("orientation", "order"),
    [("axial", "ascending"), ("coronal", "descending"), ("sagittal", "shuffled"),
     ("oblique", "descending"), ("oblique", "shuffled")],
)
def test_orientation_and_order_cli(tmp_path, cli, orientation, order):
    iop = ORIENTATIONS[orientation]
    pixel_spacing = (0.8, 0.55)
    stored, positions = write_standard(tmp_path / "in", orientation, order, n=5, rows=6, cols=9,
                                       pixel_spacing=pixel_spacing, spacing=3.2,
                                       slice_thickness=1.0)
    run_ok(cli, tmp_path / "in", tmp_path / "out")
    path, sidecar = load_output(tmp_path / "out")
    image = nib.load(path)
    affine, sorted_order = expected_geometry(iop, pixel_spacing, positions)
    check_nifti_header(image, affine, (0.55, 0.8, 3.2))
    assert image.shape == (9, 6, 5)
    assert image.get_data_dtype() == np.int16
    expected = expected_array(stored, sorted_order)
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected)
    np.testing.assert_array_equal(image.get_fdata(), expected.astype(float))
    assert_no_scaling(path)
    assert_world_values(image.affine, np.asarray(image.dataobj), stored, positions, iop,
                        pixel_spacing)
    assert sidecar["SliceSpacingFromPositions"] == pytest.approx(3.2)
    assert sidecar["TiltCorrected"] is False and sidecar["Resampled"] is False


@pytest.mark.parametrize(
    "iop",
    [(1.0, 0.0, 0.0, 0.0, -1.0, 0.0),  # row x col = -z
     (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # row x col = -z
     (0.0, 0.0, -1.0, 0.0, 1.0, 0.0)],  # sagittal-like, row x col = +x
    ids=["flip-col", "flip-row", "sagittal-flipped"],
)
def test_left_handed_file_order_cli(tmp_path, cli, iop):
    """Files stacked (InstanceNumber 1..n) against row x col: the output must be world-correct."""
    _, _, normal = axes(iop)
    # Stack in file order along -normal: InstanceNumber increases away from the normal.
    n, rows, cols, pixel_spacing = 5, 4, 6, (0.9, 0.6)
    positions = np.array([10.0, -20.0, 30.0]) - np.outer(np.arange(n), normal * 1.75)
    stored = random_stored(n, rows, cols, seed=11)
    write_series(tmp_path / "in", stored, positions, orientation=iop, pixel_spacing=pixel_spacing,
                 shuffle_names=False)
    run_ok(cli, tmp_path / "in", tmp_path / "out")
    image = nib.load(load_output(tmp_path / "out")[0])
    affine, sorted_order = expected_geometry(iop, pixel_spacing, positions)
    np.testing.assert_array_equal(sorted_order, np.arange(n)[::-1])
    check_nifti_header(image, affine, (0.6, 0.9, 1.75))
    data = np.asarray(image.dataobj)
    np.testing.assert_array_equal(data, expected_array(stored, sorted_order))
    assert_world_values(image.affine, data, stored, positions, iop, pixel_spacing)


# --------------------------------------------------------------------------- gantry tilt


def tilted_series(folder, *, iop, n, rows, cols, pixel_spacing, spacing, drift_dir, drift,
                  stored, order="ascending", origin=(-40.0, 25.0, 60.0), seed=3):
    """Positions stepping spacing along the normal plus drift (mm) along drift_dir per slice."""
    _, _, normal = axes(iop)
    step = normal * spacing + unit(drift_dir) * drift
    regular = np.asarray(origin, float) + np.outer(np.arange(n), step)
    written = file_order(n, order, seed)
    write_series(folder, stored[written], regular[written], orientation=iop,
                 pixel_spacing=pixel_spacing, seed=seed, extra={"GantryDetectorTilt": "15"})
    return stored[written], regular[written]


def check_tilt_affine(affine, iop, pixel_spacing, spacing, positions):
    """Columns 0-2 along row, col and the *normal* (not the tilted step); origin on the grid."""
    row, col, normal = axes(iop)
    lps = RAS_FROM_LPS @ affine
    np.testing.assert_allclose(lps[:3, 0], row * pixel_spacing[1], atol=AFFINE_ATOL)
    np.testing.assert_allclose(lps[:3, 1], col * pixel_spacing[0], atol=AFFINE_ATOL)
    np.testing.assert_allclose(lps[:3, 2], normal * spacing, atol=AFFINE_ATOL)
    lowest = positions[np.argmin(positions @ normal)]
    assert (lps[:3, 3] - lowest) @ normal == pytest.approx(0.0, abs=AFFINE_ATOL)


def test_gantry_tilt_resampled_cli_integer_shift(tmp_path, cli):
    """15 degree tilt whose in-plane drift is exactly one pixel per slice: values must be exact."""
    iop = ORIENTATIONS["axial"]
    pixel_spacing = (0.5, 0.6)  # rows 0.5 mm apart: the drift along the column direction
    tilt = math.radians(15.0)
    spacing = 0.5 / math.tan(tilt)  # 1.866 mm along the normal for 0.5 mm (one row) of drift
    n, rows, cols = 6, 8, 7
    stored = random_stored(n, rows, cols, seed=5)
    stored_w, positions = tilted_series(tmp_path / "in", iop=iop, n=n, rows=rows, cols=cols,
                                        pixel_spacing=pixel_spacing, spacing=spacing,
                                        drift_dir=(0, 1, 0), drift=0.5, stored=stored,
                                        order="shuffled")
    run_ok(cli, tmp_path / "in", tmp_path / "out")
    path, sidecar = load_output(tmp_path / "out")
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    assert image.header["qform_code"] == 1 and image.header["sform_code"] == 1
    np.testing.assert_allclose(image.header.get_qform(), image.header.get_sform(),
                               atol=AFFINE_ATOL)
    check_tilt_affine(image.affine, iop, pixel_spacing, spacing, positions)
    assert data.shape[2] == n and data.shape[0] >= cols and data.shape[1] >= rows + n - 1
    # Every original voxel centre lands exactly on an output voxel with the same value.
    assert_world_values(image.affine, data, stored_w, positions, iop, pixel_spacing)
    assert sidecar["TiltCorrected"] is True
    assert sidecar["GantryTiltFromPositions"] == pytest.approx(15.0, abs=1e-3)
    assert sidecar["SliceSpacingFromPositions"] == pytest.approx(spacing, abs=1e-5)
    assert any("tilt" in note and "corrected" in note for note in sidecar["ConvkitNotes"])
    assert b"tilt corrected" in image.header["descrip"].tobytes()


def bilinear(plane: np.ndarray, a: float, b: float) -> float:
    a0, b0 = int(math.floor(a)), int(math.floor(b))
    a1, b1 = min(a0 + 1, plane.shape[0] - 1), min(b0 + 1, plane.shape[1] - 1)
    fa, fb = a - a0, b - b0
    return float(plane[a0, b0] * (1 - fa) * (1 - fb) + plane[a1, b0] * fa * (1 - fb)
                 + plane[a0, b1] * (1 - fa) * fb + plane[a1, b1] * fa * fb)


def test_gantry_tilt_15_degrees_oblique_fractional_api(tmp_path):
    """A true 15 degree tilt (fractional drift) on an oblique plane, slices shuffled.

    The image is a linear ramp f(i, j, k), so linear in-plane resampling is exact up to
    rounding to int16: every output voxel inside a slice's field of view must hold f at
    its source position, and every interior original voxel must be recovered.
    """
    iop = ORIENTATIONS["oblique"]
    row, col, normal = axes(iop)
    pixel_spacing = (0.8, 0.6)
    spacing = 3.0
    drift = spacing * math.tan(math.radians(15.0))
    n, rows, cols = 6, 9, 11

    def ramp(i, j, k):
        return 30.0 * i + 50.0 * j + 700.0 * k + 200.0

    kk, jj, ii = np.meshgrid(np.arange(n), np.arange(rows), np.arange(cols), indexing="ij")
    stored = ramp(ii, jj, kk).astype(np.int16)
    drift_dir = 0.6 * row + 0.8 * col
    stored_w, positions = tilted_series(tmp_path / "in", iop=iop, n=n, rows=rows, cols=cols,
                                        pixel_spacing=pixel_spacing, spacing=spacing,
                                        drift_dir=drift_dir, drift=drift, stored=stored,
                                        order="descending")
    volume = read_series(tmp_path / "in")
    check_tilt_affine(volume.affine, iop, pixel_spacing, spacing, positions)
    assert volume.metadata["TiltCorrected"] is True
    assert volume.metadata["GantryTiltFromPositions"] == pytest.approx(15.0, abs=1e-3)
    assert any("gantry tilt 15.00 degrees corrected" in note for note in volume.notes)
    data = volume.array.astype(float)
    assert data.shape[2] == n

    lps = RAS_FROM_LPS @ volume.affine
    sorted_positions = positions[np.argsort(positions @ normal)]
    # 1. Output -> source: every output voxel inside slice k's field of view.
    a, b = np.meshgrid(np.arange(data.shape[0]), np.arange(data.shape[1]), indexing="ij")
    checked = 0
    for k in range(n):
        world = (lps[:3, 0] * a[..., None] + lps[:3, 1] * b[..., None] + lps[:3, 2] * k
                 + lps[:3, 3])
        rel = world - sorted_positions[k]
        np.testing.assert_allclose(rel @ normal, 0.0, atol=1e-3)  # slice k is in its own plane
        u, v = rel @ row / pixel_spacing[1], rel @ col / pixel_spacing[0]
        inside = (u >= -1e-6) & (u <= cols - 1 + 1e-6) & (v >= -1e-6) & (v <= rows - 1 + 1e-6)
        np.testing.assert_allclose(data[..., k][inside], ramp(u, v, k)[inside], atol=0.51,
                                   err_msg=f"output slice {k}")
        checked += int(inside.sum())
    assert checked >= (rows - 1) * (cols - 1) * n
    # 2. Source -> output: interior original voxel centres, interpolated in the output.
    inverse = np.linalg.inv(volume.affine)
    for s in range(n):
        world = pixel_world_lps(iop, pixel_spacing, positions[s], rows, cols) * [-1, -1, 1]
        index = world @ inverse[:3, :3].T + inverse[:3, 3]
        k = int(np.rint(index[0, 0, 2]))
        np.testing.assert_allclose(index[..., 2], k, atol=1e-3)
        for j in range(1, rows - 1):
            for i in range(1, cols - 1):
                got = bilinear(data[..., k], index[j, i, 0], index[j, i, 1])
                assert abs(got - stored_w[s][j, i]) <= 0.51, (s, j, i, got, stored_w[s][j, i])


def test_gantry_tilt_refused_cli(tmp_path, cli):
    iop = ORIENTATIONS["axial"]
    stored = random_stored(5, 4, 4, seed=2)
    tilted_series(tmp_path / "in", iop=iop, n=5, rows=4, cols=4, pixel_spacing=(0.5, 0.5),
                  spacing=2.0, drift_dir=(0, 1, 0), drift=2.0 * math.tan(math.radians(15.0)),
                  stored=stored)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--tilt", "refuse", "--json")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "tilt" in done.stderr.lower()
    assert "15.00 degrees" in done.stderr
    report = json.loads(done.stdout)
    assert report["series"][0]["status"] == "refused"
    out = tmp_path / "out"
    assert not out.exists() or not list(out.glob("*.nii*"))
    with pytest.raises(RefusedError, match="tilt"):
        read_series(tmp_path / "in", ConvertOptions(tilt="refuse"))


# --------------------------------------------------------------------------- gaps and resampling


def gap_series(folder, missing=3, n=7, spacing=2.5, origin=(-12.5, 30.25, -40.0), even=False):
    iop = ORIENTATIONS["axial"]
    regular = stack_positions(iop, n, spacing, origin)
    keep = [k for k in range(n) if k != missing]
    stored = random_stored(n, 5, 6, seed=9)
    if even:
        stored = (stored // 2) * 2  # means of two neighbours stay integers
    written = file_order(len(keep), "shuffled", 4)
    kept = np.array(keep)[written]
    write_series(folder, stored[kept], regular[kept], orientation=iop, pixel_spacing=(0.9, 0.7))
    return stored, regular, kept


def test_missing_slice_refused_cli_names_the_gap(tmp_path, cli):
    gap_series(tmp_path / "in", missing=3)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json")
    assert done.returncode == 4, done.stdout + done.stderr
    # The slice before the gap is regular[2] = (-12.5, 30.25, -35); the step found is 5 mm.
    assert "-12.5\\30.25\\-35" in done.stderr, done.stderr
    assert "5 mm step" in done.stderr and "2.5 mm" in done.stderr
    assert "--resample" in done.stderr
    report = json.loads(done.stdout)
    assert report["series"][0]["status"] == "refused"
    assert report["file_counts"] == {"refused": 6}
    out = tmp_path / "out"
    assert not out.exists() or not list(out.glob("*.nii*"))


def test_missing_slice_refused_api(tmp_path):
    gap_series(tmp_path / "in", missing=4)
    with pytest.raises(RefusedError, match=r"uneven slice spacing.*-12\.5\\30\.25\\-32\.5"):
        read_series(tmp_path / "in")


def test_resample_fills_missing_slice_with_neighbour_mean_cli(tmp_path, cli):
    stored, regular, kept = gap_series(tmp_path / "in", missing=3, even=True)
    run_ok(cli, tmp_path / "in", tmp_path / "out", "--resample")
    path, sidecar = load_output(tmp_path / "out")
    image = nib.load(path)
    iop = ORIENTATIONS["axial"]
    affine, _ = expected_geometry(iop, (0.9, 0.7), regular)  # the full regular grid
    check_nifti_header(image, affine, (0.7, 0.9, 2.5))
    data = np.asarray(image.dataobj)
    assert data.shape == (6, 5, 7)
    expected = expected_array(stored, np.arange(7))
    expected[:, :, 3] = (expected[:, :, 2].astype(int) + expected[:, :, 4]) // 2
    np.testing.assert_array_equal(data, expected)
    assert sidecar["Resampled"] is True
    assert any("resampled" in note for note in sidecar["ConvkitNotes"])
    assert b"resampled" in image.header["descrip"].tobytes()


# --------------------------------------------------------------------------- duplicates


def test_copied_file_is_a_duplicate_and_converts_normally_cli(tmp_path, cli):
    stored, positions = write_standard(tmp_path / "in", "axial", "shuffled", n=4)
    one = sorted((tmp_path / "in").iterdir())[1]
    shutil.copy(one, tmp_path / "in" / "zz_copy_of_a_slice.dcm")
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["file_counts"] == {"used": 4, "duplicate": 1}
    duplicate = [f for f in report["files"] if f["status"] == "duplicate"]
    assert len(duplicate) == 1 and duplicate[0]["path"].endswith("zz_copy_of_a_slice.dcm")
    image = nib.load(load_output(tmp_path / "out")[0])
    affine, order = expected_geometry(ORIENTATIONS["axial"], (0.7, 0.45), positions)
    check_nifti_header(image, affine, (0.45, 0.7, 2.5))
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected_array(stored, order))


def test_an_extra_file_at_one_position_is_refused_cli(tmp_path, cli):
    """A fifth, different image at one position only: duplicate positions, not a 4D series."""
    iop = ORIENTATIONS["axial"]
    regular = stack_positions(iop, 4, 2.0, (0, 0, 0))
    positions = np.vstack([regular, regular[2:3]])
    stored = random_stored(len(positions), 4, 4, seed=8)
    write_series(tmp_path / "in", stored, positions, orientation=iop)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "duplicate positions" in done.stderr
    assert json.loads(done.stdout)["series"][0]["status"] == "refused"
    with pytest.raises(RefusedError, match="duplicate positions"):
        read_series(tmp_path / "in")


def test_repeats_without_time_are_ordered_by_instance_number(tmp_path, cli):
    """Every position twice and no time attribute (anonymised fMRI exports look like this):
    a 4D series ordered by InstanceNumber, as dcm2niix does, and the sidecar says so."""
    iop = ORIENTATIONS["axial"]
    regular = stack_positions(iop, 4, 2.0, (0, 0, 0))
    order = [4, 5, 6, 7, 0, 1, 2, 3]  # second repeat written first: file order is not time
    positions = np.vstack([regular, regular])[order]
    stored = random_stored(8, 4, 4, seed=8)[order]
    write_series(tmp_path / "in", stored, positions, orientation=iop,
                 per_slice=[{"InstanceNumber": 1 + index} for index in order])
    run_ok(cli, tmp_path / "in", tmp_path / "out")
    (nifti,) = (tmp_path / "out").glob("*.nii.gz")
    data = np.asarray(nib.load(nifti).dataobj)
    assert data.shape == (4, 4, 4, 2)
    by_instance = random_stored(8, 4, 4, seed=8)  # instance n holds slice (n-1) % 4, time (n-1)//4
    for t in range(2):
        np.testing.assert_array_equal(data[..., t], by_instance[4 * t:4 * t + 4].transpose(2, 1, 0))
    sidecar = json.loads(nifti.with_name(nifti.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["VolumeOrderedBy"] == "InstanceNumber"


# --------------------------------------------------------------------------- 4D


def test_time_series_4d_ordered_by_time_cli(tmp_path, cli):
    iop = ORIENTATIONS["coronal"]
    pixel_spacing = (1.1, 0.9)
    n_pos, n_t, rows, cols = 3, 4, 4, 5
    regular = stack_positions(iop, n_pos, 4.0, (5.0, -60.0, 12.0))
    time_points = [3600.0 * 10 + 15.5 * t for t in range(n_t)]
    # File order: a fixed shuffle of (position, time) so neither follows file order.
    pairs = [(k, t) for k in range(n_pos) for t in range(n_t)]
    rng = np.random.default_rng(21)
    pairs = [pairs[p] for p in rng.permutation(len(pairs))]
    stored = random_stored(len(pairs), rows, cols, seed=22)
    write_series(tmp_path / "in", stored, regular[[k for k, _ in pairs]], orientation=iop,
                 pixel_spacing=pixel_spacing, modality="MR",
                 times=[time_points[t] for _, t in pairs])
    run_ok(cli, tmp_path / "in", tmp_path / "out")
    path, sidecar = load_output(tmp_path / "out")
    image = nib.load(path)
    affine, order = expected_geometry(iop, pixel_spacing, regular)
    np.testing.assert_array_equal(order, np.arange(n_pos))
    check_nifti_header(image, affine, (0.9, 1.1, 4.0, 1.0))
    data = np.asarray(image.dataobj)
    assert data.shape == (cols, rows, n_pos, n_t)
    expected = np.empty(data.shape, stored.dtype)
    for index, (k, t) in enumerate(pairs):
        expected[:, :, k, t] = stored[index].T
    np.testing.assert_array_equal(data, expected)
    assert_world_values(image.affine, data, stored, regular[[k for k, _ in pairs]], iop,
                        pixel_spacing, times=[t for _, t in pairs])
    assert sidecar["VolumeOrderedBy"] in ("TemporalPositionIdentifier", "AcquisitionTime")


def test_time_series_4d_by_acquisition_time_only_api(tmp_path):
    """No TemporalPositionIdentifier: AcquisitionTime alone orders the volumes."""
    iop = ORIENTATIONS["axial"]
    n_pos, n_t = 2, 3
    regular = stack_positions(iop, n_pos, 3.0, (0.0, 0.0, 0.0))
    time_points = [50000.25, 50010.5, 50003.0]  # not ascending in t-label: order by value
    pairs = [(k, t) for t in (2, 0, 1) for k in (1, 0)]
    stored = random_stored(len(pairs), 3, 4, seed=31)
    paths = write_series(tmp_path / "in", stored, regular[[k for k, _ in pairs]],
                         orientation=iop, modality="MR",
                         times=[time_points[t] for _, t in pairs])
    import pydicom

    for path in paths:
        ds = pydicom.dcmread(path)
        del ds.TemporalPositionIdentifier
        ds.save_as(path)
    volume = read_series(tmp_path / "in")
    assert volume.shape == (4, 3, n_pos, n_t)
    rank = {t: r for r, t in enumerate(np.argsort(time_points))}  # time label -> output index
    for index, (k, t) in enumerate(pairs):
        np.testing.assert_array_equal(volume.array[:, :, k, rank[t]], stored[index].T)
    assert volume.metadata["VolumeOrderedBy"] == "AcquisitionTime"


# --------------------------------------------------------------------------- data types


def test_ct_negative_intercept_keeps_stored_int16_cli(tmp_path, cli):
    iop = ORIENTATIONS["axial"]
    positions = stack_positions(iop, 4, 1.25, (-100.0, -120.0, 33.0))
    stored = random_stored(4, 6, 5, low=0, high=3071, seed=12)
    write_series(tmp_path / "in", stored, positions, rescale_slope=1.0, rescale_intercept=-1024.0)
    run_ok(cli, tmp_path / "in", tmp_path / "out")
    path = load_output(tmp_path / "out")[0]
    image = nib.load(path)
    affine, order = expected_geometry(iop, (1.0, 1.0), positions)
    check_nifti_header(image, affine, (1.0, 1.0, 1.25))
    assert image.get_data_dtype() == np.int16
    header = raw_header(path)
    assert float(header["scl_slope"]) == 1.0
    assert float(header["scl_inter"]) == -1024.0
    assert (image.dataobj.slope, image.dataobj.inter) == (1.0, -1024.0)
    expected = expected_array(stored, order)
    np.testing.assert_array_equal(image.dataobj.get_unscaled(), expected)
    np.testing.assert_array_equal(image.get_fdata(), expected - 1024.0)
    assert image.get_fdata().min() < 0


def test_uniform_slope_and_intercept_kept_in_header_api(tmp_path):
    iop = ORIENTATIONS["sagittal"]
    positions = stack_positions(iop, 3, 2.0, (0.0, 0.0, 0.0))[::-1]
    stored = random_stored(3, 4, 4, dtype="uint16", low=0, high=4000, seed=13)
    write_series(tmp_path / "in", stored, positions, orientation=iop, rescale_slope=0.5,
                 rescale_intercept=-1024.0)
    volume = read_series(tmp_path / "in")
    _, order = expected_geometry(iop, (1.0, 1.0), positions)
    assert volume.array.dtype == np.uint16
    assert (volume.slope, volume.intercept) == (0.5, -1024.0)
    np.testing.assert_array_equal(volume.array, expected_array(stored, order))
    np.testing.assert_allclose(volume.real_array(np.float64),
                               expected_array(stored, order) * 0.5 - 1024.0)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_12_bit_stored_values_cli(tmp_path, cli, signed):
    iop = ORIENTATIONS["axial"]
    positions = stack_positions(iop, 3, 1.5, (0.0, 0.0, 0.0))
    if signed:
        stored = random_stored(3, 5, 6, dtype="int16", low=-2048, high=2047, seed=14)
        stored[0, 0, :2] = (-2048, 2047)
    else:
        stored = random_stored(3, 5, 6, dtype="uint16", low=0, high=4095, seed=14)
        stored[0, 0, :2] = (0, 4095)
    write_series(tmp_path / "in", stored, positions, bits_stored=12)
    run_ok(cli, tmp_path / "in", tmp_path / "out")
    image = nib.load(load_output(tmp_path / "out")[0])
    assert image.get_data_dtype() == (np.int16 if signed else np.uint16)
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected_array(stored, np.arange(3)))


def test_12_bit_signed_without_sign_extension_api(tmp_path):
    """Signed 12-bit values stored with bits 12-15 clear (as many scanners do) are sign-extended."""
    iop = ORIENTATIONS["axial"]
    positions = stack_positions(iop, 2, 1.0, (0.0, 0.0, 0.0))
    values = random_stored(2, 4, 5, dtype="int16", low=-2048, high=2047, seed=15)
    values[0, 0, :3] = (-1, -2048, 2047)
    raw = (values.astype(np.int32) & 0x0FFF).astype(np.uint16)  # two's complement in 12 bits
    write_series(tmp_path / "in", raw, positions, bits_stored=12,
                 extra={"PixelRepresentation": 1})
    volume = read_series(tmp_path / "in")
    assert volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array, expected_array(values, np.arange(2)))


def test_rgb_cli(tmp_path, cli):
    iop = ORIENTATIONS["coronal"]
    pixel_spacing = (0.3, 0.25)
    regular = stack_positions(iop, 4, 1.5, (7.0, 8.0, 9.0))
    written = file_order(4, "shuffled", 2)
    rng = np.random.default_rng(16)
    stored = rng.integers(0, 255, size=(4, 5, 6, 3), endpoint=True).astype(np.uint8)
    write_series(tmp_path / "in", stored, regular[written], orientation=iop,
                 pixel_spacing=pixel_spacing, modality="OT")
    run_ok(cli, tmp_path / "in", tmp_path / "out")
    image = nib.load(load_output(tmp_path / "out")[0])
    affine, order = expected_geometry(iop, pixel_spacing, regular[written])
    check_nifti_header(image, affine, (0.25, 0.3, 1.5))
    data = np.asarray(image.dataobj)
    assert data.shape == (6, 5, 4)
    assert data.dtype.names == ("R", "G", "B")
    expected = expected_array(stored, order)  # (i, j, k, channel)
    for channel, name in enumerate("RGB"):
        np.testing.assert_array_equal(data[name], expected[..., channel], err_msg=name)


def test_per_slice_rescale_gives_float32_real_values_cli(tmp_path, cli):
    iop = ORIENTATIONS["axial"]
    regular = stack_positions(iop, 4, 2.0, (0.0, 0.0, -10.0))
    written = np.array([2, 0, 3, 1])
    slopes = [1.0, 2.0, 0.5, 0.25]  # per regular slice; exact in float32
    intercepts = [-1024.0, -1000.0, 0.0, 8.0]
    stored = random_stored(4, 3, 5, low=0, high=2000, seed=17)
    write_series(tmp_path / "in", stored[written], regular[written],
                 rescale_slope=[slopes[k] for k in written],
                 rescale_intercept=[intercepts[k] for k in written])
    run_ok(cli, tmp_path / "in", tmp_path / "out")
    path = load_output(tmp_path / "out")[0]
    image = nib.load(path)
    assert image.get_data_dtype() == np.float32
    assert_no_scaling(path)
    real = stored * np.array(slopes)[:, None, None] + np.array(intercepts)[:, None, None]
    expected = expected_array(real, np.arange(4))
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected)
    np.testing.assert_array_equal(image.get_fdata(), expected)


def ct_series(folder, low=0, high=3000):
    iop = ORIENTATIONS["axial"]
    positions = stack_positions(iop, 3, 3.0, (0.0, 0.0, 0.0))[[1, 2, 0]]
    stored = random_stored(3, 4, 5, low=low, high=high, seed=18)
    write_series(folder, stored, positions, rescale_slope=1.0, rescale_intercept=-1024.0)
    _, order = expected_geometry(iop, (1.0, 1.0), positions)
    return expected_array(stored, order).astype(np.float64) - 1024.0


@pytest.mark.parametrize(("dtype", "numpy_dtype"), [("float32", np.float32), ("int16", np.int16)])
def test_dtype_option_writes_real_world_values_cli(tmp_path, cli, dtype, numpy_dtype):
    expected = ct_series(tmp_path / "in")
    run_ok(cli, tmp_path / "in", tmp_path / "out", "--dtype", dtype)
    path = load_output(tmp_path / "out")[0]
    image = nib.load(path)
    assert image.get_data_dtype() == numpy_dtype
    assert_no_scaling(path)
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected.astype(numpy_dtype))
    np.testing.assert_array_equal(image.get_fdata(), expected)


def test_dtype_that_would_overflow_is_refused_cli(tmp_path, cli):
    ct_series(tmp_path / "in")
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--dtype", "uint8", "--json")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "uint8" in done.stderr and "cannot hold" in done.stderr
    out = tmp_path / "out"
    assert not out.exists() or not list(out.glob("*.nii*"))
    with pytest.raises(RefusedError, match="uint8"):
        read_series(tmp_path / "in", ConvertOptions(dtype="uint8"))


# --------------------------------------------------------------------------- refusal on stderr


@pytest.mark.parametrize("case", ["gap", "tilt", "duplicate-positions", "dtype-overflow"])
def test_refusal_reason_on_stderr_in_table_mode(tmp_path, cli, case):
    """Without --json too, a refused series says why on stderr (stdout: results only)."""
    args: list[str] = []
    if case == "gap":
        gap_series(tmp_path / "in", missing=3)
        needle = "-12.5\\30.25\\-35"
    elif case == "tilt":
        tilted_series(tmp_path / "in", iop=ORIENTATIONS["axial"], n=4, rows=3, cols=3,
                      pixel_spacing=(0.5, 0.5), spacing=2.0, drift_dir=(0, 1, 0),
                      drift=2.0 * math.tan(math.radians(15.0)),
                      stored=random_stored(4, 3, 3))
        args, needle = ["--tilt", "refuse"], "tilt"
    elif case == "duplicate-positions":
        regular = stack_positions(ORIENTATIONS["axial"], 3, 2.0, (0, 0, 0))
        write_series(tmp_path / "in", random_stored(4, 3, 3), np.vstack([regular, regular[:1]]))
        needle = "duplicate positions"
    else:
        ct_series(tmp_path / "in")
        args, needle = ["--dtype", "uint8"], "uint8"
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", *args)
    assert done.returncode == 4, done.stdout + done.stderr
    assert needle in done.stderr, f"stderr: {done.stderr!r}\nstdout: {done.stdout}"


# --------------------------------------------------------------------------- NRRD


def test_nrrd_oblique_world_geometry_matches_nifti_cli(tmp_path, cli):
    import nrrd
    import SimpleITK as sitk

    iop = ORIENTATIONS["oblique"]
    pixel_spacing = (0.85, 0.6)
    stored, positions = write_standard(tmp_path / "in", "oblique", "shuffled", n=5, rows=6,
                                       cols=8, pixel_spacing=pixel_spacing, spacing=2.2,
                                       rescale_slope=1.0, rescale_intercept=-1024.0)
    run_ok(cli, tmp_path / "in", tmp_path / "nii")
    run_ok(cli, tmp_path / "in", tmp_path / "nrrd", "--format", "nrrd")
    affine, order = expected_geometry(iop, pixel_spacing, positions)
    expected_lps = RAS_FROM_LPS @ affine
    real = expected_array(stored, order).astype(np.float64) - 1024.0

    nifti = nib.load(load_output(tmp_path / "nii")[0])
    check_nifti_header(nifti, affine, (0.6, 0.85, 2.2))
    np.testing.assert_array_equal(nifti.get_fdata(), real)

    nrrd_path = load_output(tmp_path / "nrrd", ".nrrd")[0]
    data, header = nrrd.read(str(nrrd_path), index_order="F")
    assert header["space"] == "left-posterior-superior"
    assert header["dimension"] == 3
    directions = np.asarray(header["space directions"], float)  # one row per axis
    np.testing.assert_allclose(directions.T, expected_lps[:3, :3], atol=AFFINE_ATOL)
    np.testing.assert_allclose(header["space origin"], expected_lps[:3, 3], atol=AFFINE_ATOL)
    # Same world geometry as the NIfTI (RAS -> LPS).
    nifti_lps = RAS_FROM_LPS @ nifti.affine
    np.testing.assert_allclose(directions.T, nifti_lps[:3, :3], atol=AFFINE_ATOL)
    np.testing.assert_allclose(header["space origin"], nifti_lps[:3, 3], atol=AFFINE_ATOL)
    np.testing.assert_array_equal(data.astype(np.float64), real)  # NRRD: real-world values

    for path in (nrrd_path, load_output(tmp_path / "nii")[0]):
        image = sitk.ReadImage(str(path))
        spacing = np.array(image.GetSpacing())
        direction = np.array(image.GetDirection()).reshape(3, 3)
        np.testing.assert_allclose(spacing, (0.6, 0.85, 2.2), atol=1e-5, err_msg=path.name)
        np.testing.assert_allclose(direction * spacing, expected_lps[:3, :3], atol=AFFINE_ATOL,
                                   err_msg=path.name)
        np.testing.assert_allclose(image.GetOrigin(), expected_lps[:3, 3], atol=AFFINE_ATOL,
                                   err_msg=path.name)
        array = sitk.GetArrayFromImage(image).astype(np.float64)  # (k, j, i)
        np.testing.assert_array_equal(array.T, real, err_msg=path.name)


# --------------------------------------------------------------------------- convert_folder API


def test_convert_folder_api_oblique_with_duplicate(tmp_path):
    iop = ORIENTATIONS["oblique"]
    stored, positions = write_standard(tmp_path / "in", "oblique", "descending", n=4,
                                       pixel_spacing=(0.5, 0.75), spacing=1.2)
    shutil.copy(next((tmp_path / "in").iterdir()), tmp_path / "in" / "copy.dcm")
    report = convert_folder(tmp_path / "in", tmp_path / "out")
    assert report.exit_code == 0
    assert [r.status for r in report.files].count("duplicate") == 1
    assert [r.status for r in report.files].count("used") == 4
    (result,) = report.series
    assert result.status == "written" and result.shape == [7, 5, 4]
    np.testing.assert_allclose(result.spacing, [0.75, 0.5, 1.2], atol=1e-6)
    image = nib.load(tmp_path / "out" / f"{LABEL}.nii.gz")
    affine, order = expected_geometry(iop, (0.5, 0.75), positions)
    check_nifti_header(image, affine, (0.75, 0.5, 1.2))
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected_array(stored, order))
    # The same world orientation letters as nibabel derives from the expected affine.
    assert result.orientation == "".join(nib.aff2axcodes(affine))


def test_convert_folder_api_refusal_is_a_result(tmp_path):
    gap_series(tmp_path / "in", missing=2)
    report = convert_folder(tmp_path / "in", tmp_path / "out")
    assert report.exit_code == 4
    (result,) = report.series
    assert result.status == "refused"
    assert "uneven slice spacing" in result.reason and "--resample" in result.hint
    assert {r.status for r in report.files} == {"refused"}


def test_pixel_spacing_missing_from_a_later_file_is_refused(tmp_path, cli):
    """PixelSpacing missing from the file planned first (the lowest position) but present in
    the first by InstanceNumber: was an internal error (exit 70), is a refusal naming it."""
    import pydicom

    stored = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)
    positions = regular_positions(4, spacing=2.0)[::-1]  # instance 1 is the highest slice
    write_series(tmp_path / "in", stored, positions)
    lowest = next(p for p in (tmp_path / "in").iterdir()
                  if pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber == 4)
    ds = pydicom.dcmread(lowest)
    del ds.PixelSpacing
    ds.save_as(lowest)

    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=4)
    assert "no patient geometry (PixelSpacing missing)" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    done = cli("audit", tmp_path / "in", "--json", check_code=0)
    codes = {f["code"]: f["severity"] for f in json.loads(done.stdout)["findings"]}
    assert codes.get("series.no-geometry") == "error"
