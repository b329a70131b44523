"""The audit flags a label-map volume (a mask) beside a series when it does not lie on the
series' grid: masks built on the series (whole or cropped, any axis order) pass; masks
shifted, resampled or rotated against it are named with what differs. Volumes that are not
label maps (floating point, or neither named nor described as one) are left alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convkit.formats import write_volume
from convkit.testing.segmentations import blob_labels, reorder, write_ct
from convkit.volume import Volume


def mask_findings(cli, tree, name):
    done = cli("audit", tree, "--json", check_code=None)
    report = json.loads(done.stdout)
    return [f for f in report["findings"]
            if f["code"] == "seg.mask-off-grid" and f["path"].endswith("/" + name)], report


def shifted(affine, offset_voxels):
    moved = affine.copy()
    moved[:3, 3] += affine[:3, :3] @ np.asarray(offset_voxels, float)
    return moved


def rotated(affine, degrees):
    angle = np.radians(degrees)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                     [0, 0, 1]])
    moved = affine.copy()
    moved[:3, :3] = turn @ affine[:3, :3]
    return moved


@pytest.fixture
def tree(tmp_path):
    return tmp_path / "tree"


@pytest.fixture
def ct(tree):
    return write_ct(tree / "ct")


def test_masks_on_the_series_grid_pass(cli, tree, ct):
    labels = blob_labels(ct.shape)
    write_volume(Volume(labels, ct.affine), tree / "lung_mask.nii.gz")
    # cropped to a box of the grid, stored in another axis order and flipped: still on it
    crop = np.asfortranarray(labels[5:30, 4:20, 2:9])
    array, affine = reorder(crop, shifted(ct.affine, (5, 4, 2)), (2, 0, 1), (True, False, True))
    write_volume(Volume(array, affine), tree / "crop_seg.nrrd")
    for name in ("lung_mask.nii.gz", "crop_seg.nrrd"):
        found, _ = mask_findings(cli, tree, name)
        assert found == []


@pytest.mark.parametrize(("name", "change", "named", "not_named"), [
    ("half_voxel_seg.nii.gz", lambda a: shifted(a, (0.5, 0.0, 0.0)), "first voxel",
     "voxel size"),
    ("coarse_labels.nii.gz", lambda a: a @ np.diag([2.0, 2.0, 1.0, 1.0]), "voxel size",
     "rotated"),
    ("tilted-mask.nii.gz", lambda a: rotated(a, 10.0), "axes rotated by 10.00 degrees",
     "voxel size"),
])
def test_masks_off_the_series_grid_are_flagged(cli, tree, ct, name, change, named, not_named):
    labels = np.asfortranarray(blob_labels(ct.shape)[:30])  # another matrix than the series
    write_volume(Volume(labels, change(ct.affine)), tree / name)
    found, report = mask_findings(cli, tree, name)
    assert len(found) == 1
    label = report["series"][0]["label"]
    assert found[0]["series"] == label and f"series {label}" in found[0]["message"]
    assert named in found[0]["message"] and not_named not in found[0]["message"]
    assert found[0]["severity"] == "warning"


def test_what_is_not_a_label_map_is_left_alone(cli, tree, ct):
    moved = shifted(ct.affine, (0.5, 0.0, 0.0))
    labels = np.asfortranarray(blob_labels(ct.shape)[:30])
    write_volume(Volume(labels.astype(np.float32) + 0.5, moved), tree / "brain_seg.nii.gz")
    write_volume(Volume(labels, moved), tree / "t1_image.nii.gz")  # integers, no mask word
    write_volume(Volume(labels, moved), tree / "described.nii.gz")
    (tree / "described.json").write_text(json.dumps({"Modality": "SEG"}))
    for name, flagged in (("brain_seg.nii.gz", False), ("t1_image.nii.gz", False),
                          ("described.nii.gz", True)):
        found, _ = mask_findings(cli, tree, name)
        assert len(found) == int(flagged), name
