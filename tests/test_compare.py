"""convkit compare: real files in every format, the CLI end to end, values checked by hand.

Every file here is written by an independent writer (nibabel for NIfTI-1/-2, pynrrd
for NRRD in LPS and RAS space, SimpleITK for MetaImage, dcm2niix and convkit for
DICOM conversions), so compare is tested against files it did not produce.
"""

from __future__ import annotations

import json
from itertools import permutations, product

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import rotation, run_dcm2niix

from convkit.compare import (
    DIRECTION_ATOL,
    LABEL_MAX_VALUES,
    POSITION_ATOL_MM,
    VALUE_ATOL,
    VALUE_RTOL,
    align_to,
    compare_files,
    compare_volumes,
    match_grids,
)
from convkit.errors import UsageError
from convkit.formats import read_volume
from convkit.testing.synthetic import regular_positions, write_series
from convkit.volume import Volume

SHAPE = (12, 10, 8)
LPS = "left-posterior-superior"
RAS = "right-anterior-superior"


def base_affine(spacing=(0.8, 0.9, 2.5), origin=(-40.5, 22.25, 13.0)) -> np.ndarray:
    """An oblique RAS affine (rotated ~10-20 degrees about every axis)."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(10, -5, 20) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def base_data(shape=SHAPE, seed=6) -> np.ndarray:
    """int16 values in 0..2999, seeded, in Fortran order (no axis symmetry)."""
    return np.asfortranarray(np.random.default_rng(seed).integers(0, 3000, size=shape,
                                                                  dtype=np.int16))


def write_nifti(path, data, affine, *, version=1, slope=None, inter=None):
    cls = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    image = cls(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, str(path))
    return path


def write_nrrd(path, data, affine_ras, space=LPS):
    """pynrrd writes what it is given: convert RAS to the file's space here."""
    signs = np.array([-1.0, -1.0, 1.0]) if space == LPS else np.ones(3)
    header = {"space": space, "space directions": (affine_ras[:3, :3] * signs[:, None]).T,
              "space origin": affine_ras[:3, 3] * signs, "kinds": ["domain"] * 3}
    nrrd.write(str(path), data, header, index_order="F")
    return path


def write_mha(path, data, affine_ras):
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.T))
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine_ras[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).ravel().tolist())
    image.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ affine_ras[:3, 3]).tolist())
    sitk.WriteImage(image, str(path))
    return path


def report(cli, *args, code):
    """Run `convkit compare ... --json`, check the exit code, return the parsed report."""
    done = cli("compare", *map(str, args), "--json", check_code=code)
    data = json.loads(done.stdout)
    assert data["exit_code"] == code
    return data


def field(data, name):
    return next(row for row in data["fields"] if row["name"] == name)


def statuses(data, group="geometry"):
    return {row["name"]: row["status"] for row in data["fields"] if row["group"] == group}


# ------------------------------------------------------------------------------------------
# The same image: equal


def test_nifti1_vs_nifti2_is_identical(cli, tmp_path):
    data, affine = base_data(), base_affine()
    one = write_nifti(tmp_path / "one.nii", data, affine, version=1)
    two = write_nifti(tmp_path / "two.nii.gz", data, affine, version=2)
    out = report(cli, one, two, code=0)
    assert out["verdict"] == "identical"
    assert field(out, "format")["a"] == "NIfTI-1" and field(out, "format")["b"] == "NIfTI-2"
    assert field(out, "format")["status"] == "info"  # the container never makes images differ
    assert set(statuses(out).values()) == {"same"}
    assert out["voxels"]["compared"] == data.size and out["voxels"]["exact"]
    assert out["voxels"]["method"] == "same grid"
    assert out["summary"] == "identical: same grid, same voxel values, same encoding"


def test_lps_and_ras_nrrd_are_the_same_image(cli, tmp_path):
    data, affine = base_data(), base_affine()
    lps = write_nrrd(tmp_path / "lps.nrrd", data, affine, LPS)
    ras = write_nrrd(tmp_path / "ras.nhdr", data, affine, RAS)  # detached header
    out = report(cli, lps, ras, code=0)
    assert out["verdict"] == "equal"
    assert set(statuses(out).values()) == {"same"}  # geometry compared in RAS
    space = field(out, "NRRD space")
    assert (space["a"], space["b"], space["status"]) == (LPS, RAS, "encoding")
    assert out["voxels"]["exact"] and out["voxels"]["compared"] == data.size
    assert out["encoding"] == [f"NRRD space ({LPS} vs {RAS})"]
    # Control: the RAS header's numbers labelled as LPS put the image elsewhere.
    wrong = tmp_path / "wrong.nrrd"
    header = dict(nrrd.read_header(str(ras)))
    header["space"] = LPS
    nrrd.write(str(wrong), data, {k: header[k] for k in ("space", "space directions",
                                                         "space origin", "kinds")},
               index_order="F")
    result = compare_volumes(read_volume(lps), read_volume(wrong))
    assert result.verdict == "different" and result.row("origin").status == "different"
    expected = np.linalg.norm(affine[:2, 3] * 2)  # x and y negated
    assert result.row("origin").detail == f"Δ {expected:.6g} mm"


def test_flipped_and_transposed_on_disk_with_the_affine_adjusted(cli, tmp_path):
    data, affine = base_data(), base_affine()
    # new[u, v, w] = old[n0 - 1 - v, w, u]: old i = n0-1-v, old j = w, old k = u
    moved = np.asfortranarray(np.flip(np.transpose(data, (2, 0, 1)), axis=1))
    to_old = np.zeros((4, 4))
    to_old[0, 1], to_old[0, 3] = -1, SHAPE[0] - 1
    to_old[1, 2] = to_old[2, 0] = to_old[3, 3] = 1
    assert moved[1, 2, 3] == data[SHAPE[0] - 1 - 2, 3, 1]
    a = write_nifti(tmp_path / "a.nii.gz", data, affine)
    b = write_mha(tmp_path / "b.mha", moved, affine @ to_old)
    out = report(cli, a, b, code=0)
    assert out["verdict"] == "equal"
    voxels = out["voxels"]
    assert voxels["method"] == "axes reordered"
    assert voxels["mapping"] == "A (i, j, k) = B (-j, k, i)"
    assert voxels["exact"] and voxels["compared"] == data.size
    for name in ("shape", "origin", "direction cosines", "orientation"):
        assert field(out, name)["status"] == "layout", name
    assert field(out, "world bounding box")["status"] == "same"
    assert field(out, "shape")["b"] == [8, 12, 10]
    assert "voxel axes ordered differently on disk" in out["summary"]


def test_cross_format_table_output(cli_subprocess, tmp_path):
    """The human output: verdict first, the header table, voxel statistics."""
    # A real process (smoke test): rich's table through a pipe, its width from COLUMNS.
    cli = cli_subprocess
    data, affine = base_data(), base_affine()
    a = write_nifti(tmp_path / "scan.nii.gz", data, affine, slope=2.0, inter=-1024.0)
    real = data.astype(np.float64) * 2 - 1024
    b = write_nrrd(tmp_path / "scan.nrrd", real.astype(np.int16), affine, LPS)
    # scan.json is the sidecar of both files; its value looks like rich markup
    (tmp_path / "scan.json").write_text(json.dumps({"SeriesDescription": "CT [bold] head"}))
    lines = cli("compare", a, b, check_code=0).stdout.splitlines()
    assert lines[0] == ("Equal within tolerance: same image in world space; stored differently: "
                        "scaling (slope 2, intercept -1024 vs —)")
    assert lines[1:3] == [f"A: {a}", f"B: {b}"]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in lines if line.startswith("│") and line.count("│") == 5}
    assert rows["scaling"] == ["slope 2, intercept -1024", "—",
                               "encoding: only in A: values stored scaled"]
    assert rows["NRRD space"] == ["—", LPS, "one-side: only in B"]
    assert rows["qform/sform codes"] == ["qform 1, sform 1", "—", "one-side: only in A"]
    assert rows["origin"][2] == "same"
    assert rows["SeriesDescription"] == ["CT [bold] head", "CT [bold] head", "same"]
    assert any(line.startswith("│ exactly equal") and "yes" in line for line in lines)


# ------------------------------------------------------------------------------------------
# Each kind of difference, reported precisely


def test_one_changed_voxel(cli, tmp_path):
    data, affine = base_data(), base_affine()
    changed = data.copy(order="F")
    changed[3, 4, 5] += 100
    a = write_nifti(tmp_path / "a.nii", data, affine)
    b = write_nrrd(tmp_path / "b.nrrd", changed, affine)
    out = report(cli, a, b, code=1)
    voxels = out["voxels"]
    assert (voxels["differing"], voxels["nonzero"]) == (1, 1)
    assert voxels["max_abs_diff"] == 100
    assert voxels["max_at"] == [3, 4, 5]
    assert voxels["max_at_ras"] == pytest.approx((affine @ [3, 4, 5, 1])[:3])
    assert voxels["mean_abs_diff"] == pytest.approx(100 / data.size)
    assert voxels["fraction_differing"] == pytest.approx(1 / data.size)
    assert out["summary"] == (f"different: voxel values: 1 of {data.size:,} "
                              f"({100 / data.size:.4g}%) differ beyond "
                              f"{voxels['tolerance']:.6g}, max |diff| 100 at voxel (3, 4, 5)")
    geometry = statuses(out)
    assert geometry.pop("spatial units") == "one-side"  # NIfTI states mm, this NRRD does not
    assert set(geometry.values()) == {"same"}
    # the same change within --atol is equal, not identical
    result = compare_volumes(read_volume(a), read_volume(b), atol=100)
    assert result.verdict == "equal" and "within tolerance (max |diff| 100" in result.summary


def test_origin_moved_half_a_millimetre(cli, tmp_path):
    data, affine = base_data(), base_affine(spacing=(1.0, 1.0, 1.0))
    moved = affine.copy()
    moved[:3, 3] += moved[:3, 0] * 0.5  # half a voxel (0.5 mm) along i
    # NRRD keeps the geometry in decimal text (NIfTI's float32 affine would blur the 0.5 mm)
    a = write_nrrd(tmp_path / "a.nrrd", data, affine)
    b = write_nrrd(tmp_path / "b.nrrd", data, moved, RAS)
    out = report(cli, a, b, code=1)
    assert field(out, "origin")["status"] == "different"
    assert field(out, "origin")["detail"] == "Δ 0.5 mm"
    assert field(out, "world bounding box")["status"] == "different"
    assert field(out, "spacing")["status"] == "same"
    assert out["voxels"] is None
    assert out["voxels_skipped"] == "the grids differ (--resample samples B on A's grid)"
    assert out["summary"].startswith("different: origin (")
    # Resampled: A's first i column lies before B's first voxel centre (index -0.5).
    voxels = compare_volumes(read_volume(a), read_volume(b), resample=True).voxels
    assert voxels.interpolation == "linear"
    assert voxels.outside == SHAPE[1] * SHAPE[2]
    assert voxels.compared == data.size - SHAPE[1] * SHAPE[2]
    # B at A's voxel i sits halfway between B's i-1 and i: the mean of the two neighbours
    expected = np.abs(data[1:] - (data[:-1].astype(float) + data[1:]) / 2)
    assert voxels.max_abs_diff == pytest.approx(expected.max())
    assert voxels.mean_abs_diff == pytest.approx(expected.mean())


def test_spacing_changed(cli, tmp_path):
    data, affine = base_data(), base_affine()
    wider = affine.copy()
    wider[:3, 2] *= 3.0 / 2.5  # k spacing 2.5 -> 3 mm
    a = write_nifti(tmp_path / "a.nii", data, affine)
    b = write_nifti(tmp_path / "b.nii", data, wider)
    out = report(cli, a, b, code=1)
    spacing = field(out, "spacing")
    assert spacing["status"] == "different" and spacing["detail"] == "Δ 0.5 mm"
    assert spacing["a"] == pytest.approx([0.8, 0.9, 2.5]) and spacing["b"] == pytest.approx(
        [0.8, 0.9, 3.0])
    assert field(out, "origin")["status"] == "same"
    assert "spacing ([0.8 0.9 2.5] vs [0.8 0.9 3], Δ 0.5 mm)" in out["summary"]


def test_flipped_axis_without_the_affine_adjusted(cli, tmp_path):
    data, affine = base_data(), base_affine()
    flipped = np.asfortranarray(data[:, ::-1, :])
    a = write_nifti(tmp_path / "a.nii", data, affine)
    b = write_nifti(tmp_path / "b.nii", flipped, affine)
    out = report(cli, a, b, code=1)
    assert set(statuses(out).values()) == {"same"}  # the headers cannot tell
    voxels = out["voxels"]
    assert voxels["method"] == "same grid"
    assert voxels["differing"] == np.count_nonzero(data != flipped)
    assert voxels["max_abs_diff"] == np.abs(data.astype(int) - flipped).max()
    assert voxels["correlation"] == pytest.approx(
        np.corrcoef(data.ravel(), flipped.ravel())[0, 1], abs=1e-12)
    assert voxels["correlation"] < 0.2


def test_different_dtype_with_equal_values_is_equal(cli, tmp_path):
    data, affine = base_data(), base_affine()
    a = write_nifti(tmp_path / "a.nii", data, affine)
    b = write_nifti(tmp_path / "b.nii", data.astype(np.float32), affine)
    out = report(cli, a, b, code=0)
    assert out["verdict"] == "equal"
    dtype = field(out, "data type")
    assert (dtype["a"], dtype["b"], dtype["status"]) == ("int16", "float32", "encoding")
    assert out["voxels"]["exact"]
    assert out["encoding"] == ["data type (int16 vs float32)"]


def test_slope_intercept_applied_vs_stored(cli, tmp_path):
    data, affine = base_data(), base_affine()
    real = data.astype(np.float64) * 0.5 - 1024  # exact in float32
    stored = write_nifti(tmp_path / "stored.nii", data, affine, slope=0.5, inter=-1024.0)
    applied = write_nifti(tmp_path / "applied.nii", real.astype(np.float32), affine)
    out = report(cli, applied, stored, code=0)
    assert out["verdict"] == "equal"
    scaling = field(out, "scaling")
    assert scaling["a"] == {"slope": 1.0, "intercept": 0.0}
    assert scaling["b"] == {"slope": 0.5, "intercept": -1024.0}
    assert scaling["status"] == "encoding"
    assert field(out, "data type")["status"] == "encoding"  # float32 vs int16
    assert out["voxels"]["exact"] and out["voxels"]["value_range_a"] == np.ptp(real)
    assert out["summary"] == ("equal within tolerance: same image in world space; stored "
                              "differently: data type (float32 vs int16), scaling (slope 1, "
                              "intercept 0 vs slope 0.5, intercept -1024)")
    # Controls: the stored integers without their scaling are a different image, either way.
    raw = read_volume(write_nifti(tmp_path / "raw.nii", data, affine))
    for a, b in ((read_volume(stored), raw), (raw, read_volume(stored))):
        voxels = compare_volumes(a, b).voxels
        assert voxels.differing == data.size  # v*0.5-1024 != v for 0 <= v < 3000
        assert voxels.max_abs_diff == np.abs(real - data).max()
        assert voxels.value_range_a == np.ptp(real if a is not raw else data)


# ------------------------------------------------------------------------------------------
# Label maps and resampling


def label_maps():
    a = np.zeros((10, 10, 10), dtype=np.uint8, order="F")
    b = np.zeros((10, 10, 10), dtype=np.uint8, order="F")
    a[3:6, 2:5, 2:5] = 1  # 27 voxels
    b[4:7, 2:5, 2:5] = 1  # 27 voxels, 18 shared
    a[6:8, 6:8, 6:8] = 2  # 8 voxels
    b[7:9, 6:8, 6:8] = 2  # 8 voxels, 4 shared
    b[9, 0, 0:3] = 3  # only in B
    return a, b


def test_label_maps_dice_per_label(cli, tmp_path):
    a, b = label_maps()
    affine = base_affine(spacing=(1.0, 1.0, 1.0))
    pa = write_nifti(tmp_path / "a.nii.gz", a, affine)
    pb = write_nrrd(tmp_path / "b.nrrd", b, affine)
    out = report(cli, pa, pb, code=1)
    labels = {entry["label"]: entry for entry in out["voxels"]["labels"]}
    assert sorted(labels) == [1, 2, 3]  # background 0 is not a label
    assert labels[1]["dice"] == pytest.approx(2 * 18 / (27 + 27))
    assert labels[2]["dice"] == pytest.approx(2 * 4 / (8 + 8))
    assert (labels[3]["voxels_a"], labels[3]["voxels_b"], labels[3]["dice"]) == (0, 3, 0.0)
    assert (labels[1]["voxels_a"], labels[1]["voxels_b"], labels[1]["overlap"]) == (27, 27, 18)
    text = cli("compare", pa, pb, check_code=1).stdout
    assert any(line.split() == ["│", "1", "│", "27", "│", "27", "│", "18", "│", "0.666667", "│"]
               for line in text.splitlines())
    assert compare_volumes(read_volume(pa), read_volume(pb), labels=False).voxels.labels is None


def test_resampled_label_map_uses_nearest(cli, tmp_path):
    a, _ = label_maps()
    affine = base_affine(spacing=(1.0, 1.0, 1.0))
    # B's voxel m sits at A's index m + 2.4 and holds A[m + 2]: the nearest A voxel.
    b = np.zeros_like(a)
    b[:8] = a[2:]
    moved = affine.copy()
    moved[:3, 3] += affine[:3, 0] * 2.4
    pa = write_nifti(tmp_path / "a.nii", a, affine)
    pb = write_nifti(tmp_path / "b.nii", b, moved)
    out = report(cli, pa, pb, "--resample", code=1)  # the grids differ: origin
    voxels = out["voxels"]
    assert voxels["interpolation"] == "nearest"
    assert voxels["outside"] == 3 * 10 * 10  # A's i = 0, 1, 2 map before B's first centre
    assert voxels["exact"] and all(entry["dice"] == 1.0 for entry in voxels["labels"])
    # Linear interpolation blends neighbours at every label border: not exact, no Dice.
    linear = compare_volumes(read_volume(pa), read_volume(pb), resample=True,
                             interpolation="linear").voxels
    assert linear.differing > 0 and linear.labels is None
    assert linear.label_note == "no Dice: labels resampled with linear interpolation"


def test_resampling_reproduces_a_linear_field():
    """Linear interpolation of a linear function is exact: a wrong index mapping is not."""
    def field_at(affine, shape):
        ijk = np.indices(shape).reshape(3, -1)
        xyz = affine[:3, :3] @ ijk + affine[:3, 3:4]
        values = 2 * xyz[0] - 3 * xyz[1] + 0.5 * xyz[2] + 100
        return np.asfortranarray(values.reshape(shape).astype(np.float32))

    affine_a = base_affine(spacing=(1.5, 1.5, 1.5), origin=(-10, -8, -6))
    affine_b = np.eye(4)
    affine_b[:3, :3] = rotation(-20, 15, 5) @ np.diag([1.1, 1.3, 1.7])
    affine_b[:3, 3] = (-16, -14, -12)
    shape_a, shape_b = (16, 14, 12), (24, 20, 16)
    a = Volume(field_at(affine_a, shape_a), affine_a)
    b = Volume(field_at(affine_b, shape_b), affine_b)
    result = compare_volumes(a, b, resample=True)
    voxels = result.voxels
    # inside = B's continuous index within [0, n - 1] on every axis, per voxel
    ijk = np.indices(shape_a).reshape(3, -1)
    index_b = (np.linalg.inv(affine_b) @ affine_a)[:3] @ np.vstack([ijk, np.ones(ijk.shape[1])])
    inside = np.all((index_b >= -1e-6) & (index_b <= np.array(shape_b)[:, None] - 1 + 1e-6), 0)
    assert 0 < inside.sum() < inside.size
    assert voxels.outside == inside.size - inside.sum()
    assert voxels.compared == inside.sum()
    assert voxels.interpolation == "linear"
    assert voxels.max_abs_diff < 1e-3 and voxels.differing == 0
    assert result.verdict == "different"  # different grids are different images
    assert "origin" in result.summary and "voxel values" not in result.summary
    assert "B resampled on A's grid (linear) agrees within tolerance" in result.summary


# ------------------------------------------------------------------------------------------
# DICOM against its conversions


def convert_both(cli, dcm2niix, series_dir, tmp_path):
    ours = tmp_path / "convkit"
    cli("dicom2nii", series_dir, ours, "--format", "nrrd", check_code=0)
    nrrds = sorted(ours.glob("*.nrrd"))
    niis = run_dcm2niix(dcm2niix, series_dir, tmp_path / "dcm2niix")
    assert len(nrrds) == 1 and len(niis) == 1
    return niis[0], nrrds[0]


def test_corpus_series_dicom_dcm2niix_and_convkit_agree(cli, corpus, dcm2niix, tmp_path):
    series = corpus / "dicom" / "d2n" / "siemens_anatomical_001" / "series"
    nii, nrrd_path = convert_both(cli, dcm2niix, series, tmp_path)
    out = report(cli, nii, nrrd_path, code=0)
    assert out["verdict"] == "equal"
    voxels = out["voxels"]
    assert voxels["exact"] and voxels["compared"] == 256 * 256 * 4
    assert voxels["method"] == "axes reordered"  # dcm2niix and convkit order axes differently
    assert voxels["correlation"] == 1.0
    assert field(out, "world bounding box")["status"] == "same"
    assert field(out, "EchoTime")["status"] == "same"  # from both sidecars
    # convkit's NRRD is the DICOM series exactly; dcm2niix's sidecar adds MAGNITUDE to ImageType
    for other, verdict in ((nrrd_path, "identical"), (nii, "equal")):
        out = report(cli, series, other, code=0)
        assert out["verdict"] == verdict
        assert out["voxels"]["exact"] and out["voxels"]["compared"] == 256 * 256 * 4
        assert field(out, "format")["a"] == "DICOM"
    assert out["acquisition"] == ["ImageType"]


def test_synthetic_ct_dicom_with_rescale_against_both_converters(cli, dcm2niix, tmp_path):
    stored = (np.arange(6 * 20 * 16, dtype=np.int16).reshape(6, 20, 16) * 7) % 3000
    orientation = (0.96, 0.28, 0.0, -0.28, 0.96, 0.0)
    write_series(tmp_path / "dicom", stored, regular_positions(6, orientation, (-30, 20, 5), 2.5),
                 orientation=orientation, pixel_spacing=(0.7, 0.6), rescale_intercept=-1024,
                 rescale_slope=1)
    nii, nrrd_path = convert_both(cli, dcm2niix, tmp_path / "dicom", tmp_path)
    expected_range = float(stored.max() - stored.min())
    for other in (nii, nrrd_path):
        out = report(cli, tmp_path / "dicom", other, code=0)
        assert out["voxels"]["exact"] and out["voxels"]["compared"] == stored.size
        assert out["voxels"]["value_range_a"] == expected_range
        assert field(out, "world bounding box")["status"] == "same"
    result = compare_files(nii, nrrd_path)
    assert result.exit_code == 0 and result.voxels.exact
    assert result.row("scaling").a == {"slope": 1.0, "intercept": -1024.0}


# ------------------------------------------------------------------------------------------
# Options, errors, library


def test_header_only_skips_voxels(cli, tmp_path):
    data, affine = base_data(), base_affine()
    changed = data.copy(order="F")
    changed[0, 0, 0] += 1
    a = write_nifti(tmp_path / "a.nii", data, affine)
    b = write_nifti(tmp_path / "b.nii", changed, affine)
    out = report(cli, a, b, "--header-only", code=0)
    assert out["voxels"] is None and out["voxels_skipped"] == "--header-only"
    assert out["summary"] == ("equal within tolerance: same headers (voxels not compared: "
                              "--header-only)")


def test_errors_and_exit_codes(cli, tmp_path):
    data, affine = base_data(), base_affine()
    good = write_nifti(tmp_path / "a.nii", data, affine)
    truncated = tmp_path / "cut.nii"
    truncated.write_bytes(good.read_bytes()[:600])
    done = cli("compare", good, truncated, check_code=3)
    assert "cannot read NIfTI" in done.stderr and "Traceback" not in done.stderr
    done = cli("compare", good, tmp_path / "missing.nrrd", check_code=3)
    assert "does not exist" in done.stderr
    done = cli("compare", good, good, "--interpolation", "cubic", check_code=2)
    assert "unknown interpolation 'cubic'" in done.stderr
    volume = read_volume(good)
    with pytest.raises(UsageError, match="--atol-mm must be a finite number >= 0"):
        compare_volumes(volume, volume, atol_mm=-1)
    with pytest.raises(UsageError, match="--labels needs integer-valued images"):
        compare_volumes(volume, Volume(data * 0.5, affine), labels=True)


def test_help_states_the_default_tolerances(cli):
    text = " ".join(cli("compare", "--help", check_code=0).stdout.split())
    for value, name in ((POSITION_ATOL_MM, "POSITION_ATOL_MM"), (DIRECTION_ATOL, "DIRECTION_ATOL"),
                        (VALUE_ATOL, "VALUE_ATOL"), (VALUE_RTOL, "VALUE_RTOL"),
                        (LABEL_MAX_VALUES, "LABEL_MAX_VALUES")):
        assert name in text
        assert f"{value:g}" in text, name


@pytest.mark.parametrize("perm", list(permutations(range(3))))
def test_match_grids_finds_every_axis_order_and_reversal(perm):
    data, affine = base_data(), base_affine()
    for flips in product((False, True), repeat=3):
        # B's axis perm[d] runs along A's axis d, reversed where flips[d]
        view = data
        for axis, flip in enumerate(flips):
            view = np.flip(view, axis) if flip else view
        moved = np.transpose(view, np.argsort(perm))
        index_map = np.zeros((4, 4))  # B index -> A index
        index_map[3, 3] = 1
        for d in range(3):
            index_map[d, perm[d]] = -1 if flips[d] else 1
            index_map[d, 3] = SHAPE[d] - 1 if flips[d] else 0
        affine_b = affine @ index_map
        match = match_grids(affine, SHAPE, affine_b, moved.shape)
        assert match is not None and (match.perm, match.flips) == (perm, flips)
        assert np.array_equal(align_to(moved, match), data)
        shifted = affine_b.copy()
        shifted[:3, 3] += 2 * POSITION_ATOL_MM
        assert match_grids(affine, SHAPE, shifted, moved.shape) is None


def test_streaming_statistics_equal_whole_array_numpy(monkeypatch):
    """Slab by slab (one k slice per slab here) gives the whole-array numbers."""
    monkeypatch.setattr("convkit.compare.CHUNK_VOXELS", SHAPE[0] * SHAPE[1])
    data = base_data().astype(np.float64)
    other = data.copy(order="F")
    other[:, :, 0] = other[:, :, 0] * 0.5 + 7  # the first slab differs, the others are equal
    other[5, 6, 4] = -3000.0
    a = Volume(np.asfortranarray(data.astype(np.float32)), base_affine())
    b = Volume(np.asfortranarray(other.astype(np.float32)), base_affine())
    voxels = compare_volumes(a, b, rtol=1e-3).voxels
    diff = np.abs(data - other)
    assert voxels.correlation == pytest.approx(np.corrcoef(data.ravel(), other.ravel())[0, 1],
                                               abs=1e-12)
    assert voxels.mean_abs_diff == pytest.approx(diff.mean(), rel=1e-12)
    assert voxels.differing == np.count_nonzero(diff > 1e-3 * np.ptp(data))
    assert voxels.nonzero == np.count_nonzero(diff)
    assert voxels.max_at == (5, 6, 4) and voxels.max_abs_diff == diff.max()


def test_4d_difference_names_the_time_point():
    data = np.stack([base_data(seed=s) for s in range(3)], axis=-1)
    changed = data.copy(order="F")
    changed[1, 2, 3, 2] -= 5
    a = Volume(np.asfortranarray(data), base_affine())
    b = Volume(changed, base_affine())
    result = compare_volumes(a, b)
    assert result.verdict == "different" and result.exit_code == 1
    assert result.voxels.compared == data.size
    assert result.voxels.max_at == (1, 2, 3, 2) and result.voxels.max_abs_diff == 5
    assert result.row("components").a == "3 (4th axis)"


def test_nan_on_one_side_is_a_difference_and_on_both_is_not():
    data = base_data().astype(np.float32)
    data[0, 0, 0] = np.nan
    other = data.copy(order="F")
    assert compare_volumes(Volume(data, base_affine()), Volume(other, base_affine())).verdict \
        == "identical"
    other[0, 0, 0] = 1.0
    other[1, 1, 1] = np.inf
    result = compare_volumes(Volume(data, base_affine()), Volume(other, base_affine()))
    voxels = result.voxels
    assert (voxels.differing, voxels.nonfinite_mismatches, voxels.max_abs_diff) == (2, 2, 0)
    assert result.summary.endswith("max |diff| 0, 2 NaN/inf on one side only")
    assert voxels.compared == data.size
