"""preview --overlay SEG/RTSTRUCT and compare MASK SEG: the labels where they are in the world."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convkit.formats import write_volume
from convkit.testing.segmentations import (
    blob_labels,
    circle_contour,
    reorder,
    write_ct,
    write_rtstruct,
)
from convkit.volume import Volume


def read_png(path):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(int)


def tile_world(tile):
    """(h, w, 3) RAS position of every pixel centre of a tile (from the JSON report)."""
    _, _, w, h = tile["box"]
    r = np.arange(h)[:, None, None]
    c = np.arange(w)[None, :, None]
    return (np.asarray(tile["origin_ras"]) + c * np.asarray(tile["column_step_ras"])
            + r * np.asarray(tile["row_step_ras"]))


def tinted_pixels(path, tile):
    x, y, w, h = tile["box"]
    rgb = read_png(path)[y:y + h, x:x + w]
    return (rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])


def voxel_of(world, affine):
    """Voxel index (float) of each world point, for pixels of a tile."""
    flat = world.reshape(-1, 3)
    index = (np.linalg.inv(affine) @ np.c_[flat, np.ones(len(flat))].T)[:3].T
    return index.reshape(*world.shape[:2], 3)


@pytest.fixture
def seg_case(cli, tmp_path):
    ct = write_ct(tmp_path / "ct", shape=(40, 32, 8))
    labels = blob_labels(ct.shape, 3)
    array, affine = reorder(labels, ct.affine, (2, 0, 1), (False, True, True))
    write_volume(Volume(array, affine), tmp_path / "mask.nii.gz")
    cli("nii2dicom", tmp_path / "mask.nii.gz", tmp_path / "seg.dcm", "--seg", "--reference",
        ct.folder, check_code=0)
    return ct, labels


def test_preview_draws_seg_on_its_voxels(cli, tmp_path, seg_case):
    ct, labels = seg_case
    k = int(np.argmax(np.count_nonzero(labels, axis=(0, 1))))  # the fullest slice
    at = ct.affine[:3, :3] @ np.array([20.0, 16.0, k]) + ct.affine[:3, 3]
    out = tmp_path / "p.png"
    done = cli("preview", ct.folder, "-o", out, "--overlay", tmp_path / "seg.dcm", "--at",
               ",".join(f"{v:.4f}" for v in at), "--wl", "0,1000", "--json", check_code=0)
    report = json.loads(done.stdout)
    tile = report["tiles"][0]
    index = voxel_of(tile_world(tile), ct.affine)
    assert np.abs(index[..., 2] - k).max() < 0.01  # the slice through the point
    inside = ((index[..., :2] > -0.5) & (index[..., :2] < np.array(ct.shape[:2]) - 0.5)).all(-1)
    nearest = np.clip(np.rint(index).astype(int), 0, np.array(ct.shape) - 1)
    expected = labels[nearest[..., 0], nearest[..., 1], k] > 0
    clear = (np.abs(index[..., :2] - np.rint(index[..., :2])) < 0.4).all(-1) & inside
    tinted = tinted_pixels(out, tile)
    assert expected[clear].sum() > 100
    np.testing.assert_array_equal(tinted[clear], expected[clear])
    assert [e["value"] for e in report["overlays"][0]["labels"]] == [
        n for n in (1, 2, 3) if (labels == n).any()]
    assert report["overlays"][0]["legend"][0].startswith("seg 1 label 1: ")  # segment name


def test_preview_draws_rtstruct_contours_where_they_are(cli, tmp_path):
    ct = write_ct(tmp_path / "in" / "ct", shape=(64, 60, 6))
    centre, radius = (31.0, 29.0, 2), 12.0
    write_rtstruct(tmp_path / "rt.dcm", ct, [(1, "disc", [circle_contour(ct, centre, radius)])])
    at = ct.affine[:3, :3] @ np.array(centre) + ct.affine[:3, 3]
    out = tmp_path / "p.png"
    done = cli("preview", ct.folder, "-o", out, "--overlay", tmp_path / "rt.dcm", "--at",
               ",".join(f"{v:.4f}" for v in at), "--wl", "0,1000", "--json", check_code=0)
    tile = json.loads(done.stdout)["tiles"][0]
    distance = np.linalg.norm(tile_world(tile) - at, axis=-1)
    tinted = tinted_pixels(out, tile)
    assert tinted[distance < radius - 1.1].all()
    assert not tinted[distance > radius + 1.1].any()


def test_compare_mask_with_its_seg_gives_dice_per_label(cli, tmp_path, seg_case):
    ct, labels = seg_case
    done = cli("compare", tmp_path / "mask.nii.gz", tmp_path / "seg.dcm", "--json", check_code=0)
    dice = {row["label"]: row["dice"] for row in json.loads(done.stdout)["voxels"]["labels"]}
    assert dice == {1: 1.0, 2: 1.0, 3: 1.0}
    edited = labels.copy()
    two = np.argwhere(edited == 2)
    for i, j, k in two[: len(two) // 3]:
        edited[i, j, k] = 0
    write_volume(Volume(edited, ct.affine), tmp_path / "edited.nii.gz")
    done = cli("compare", tmp_path / "seg.dcm", tmp_path / "edited.nii.gz", "--json",
               check_code=1)
    rows = {row["label"]: row for row in json.loads(done.stdout)["voxels"]["labels"]}
    kept = len(two) - len(two) // 3
    assert rows[2]["dice"] == pytest.approx(2 * kept / (len(two) + kept))
    assert rows[1]["dice"] == 1.0 and rows[3]["dice"] == 1.0


def test_compare_rtstruct_with_its_label_map(cli, tmp_path):
    ct = write_ct(tmp_path / "in" / "ct", shape=(64, 60, 6))
    disc = circle_contour(ct, (31.0, 29.0, 2), 12.0)
    write_rtstruct(tmp_path / "in" / "rt.dcm", ct, [(4, "disc", [disc])])
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    label_map = next((tmp_path / "out").glob("*_seg.nii.gz"))
    done = cli("compare", label_map, tmp_path / "in" / "rt.dcm", "--json", check_code=0)
    rows = json.loads(done.stdout)["voxels"]["labels"]
    assert [(row["label"], row["dice"]) for row in rows] == [(4, 1.0)]
    assert rows[0]["voxels_a"] > 500  # pi * 12^2 mm^2 in 0.8 x 0.7 mm pixels: ~808
