"""The audit accounts for SEG and RTSTRUCT files, pairs them with their series and checks them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convkit.formats import write_volume
from convkit.testing.segmentations import blob_labels, circle_contour, write_ct, write_rtstruct
from convkit.volume import Volume


def audit(cli, path, code=None):
    done = cli("audit", path, "--json", check_code=code)
    return json.loads(done.stdout)


def codes(report, path_end=""):
    return sorted(item["code"] for item in report["findings"]
                  if item["code"].startswith("seg.") and item["path"].endswith(path_end))


def make_seg(cli, tmp_path, ct, name="mask.seg.dcm", seg_type="binary"):
    write_volume(Volume(blob_labels(ct.shape), ct.affine), tmp_path / "mask.nii.gz")
    target = ct.folder.parent / name
    cli("nii2dicom", tmp_path / "mask.nii.gz", target, "--seg", "--reference", ct.folder,
        "--seg-type", seg_type, check_code=0)
    return target


def test_seg_and_rtstruct_are_paired_and_accounted_for(cli, tmp_path):
    ct = write_ct(tmp_path / "tree" / "ct")
    seg = make_seg(cli, tmp_path, ct)
    edge = circle_contour(ct, (1, 10, 3), 5.0, n_points=90)  # partly left of the image
    write_rtstruct(tmp_path / "tree" / "rt.dcm", ct, [(1, "edge", [edge])])
    report = audit(cli, tmp_path / "tree")
    assert codes(report, "mask.seg.dcm") == ["seg.paired"]
    assert codes(report, "rt.dcm") == ["seg.contour-outside", "seg.paired"]
    label = report["series"][0]["label"]
    files = {row["path"].rsplit("/", 1)[-1]: row for row in report["files"]}
    assert files[seg.name]["series"] == label and files["rt.dcm"]["series"] == label
    assert not [f for f in report["findings"] if f["code"] == "file.skipped"]


def test_seg_without_its_series_is_dangling(cli, tmp_path):
    ct = write_ct(tmp_path / "elsewhere" / "ct")
    seg = make_seg(cli, tmp_path, ct)
    tree = tmp_path / "tree"
    write_ct(tree / "other", seed=3)
    seg.rename(tree / seg.name)
    report = audit(cli, tree)
    assert codes(report) == ["seg.dangling"]


def test_seg_frames_off_the_grid_and_empty_segments(cli, tmp_path):
    import pydicom

    ct = write_ct(tmp_path / "tree" / "ct")
    seg = make_seg(cli, tmp_path, ct)
    ds = pydicom.dcmread(seg)
    for item in ds.PerFrameFunctionalGroupsSequence:  # half a pixel along the rows
        position = item.PlanePositionSequence[0]
        position.ImagePositionPatient = [float(position.ImagePositionPatient[0]) + 0.35,
                                         *position.ImagePositionPatient[1:]]
    ds.save_as(seg)
    report = audit(cli, tmp_path / "tree", code=None)
    assert codes(report) == ["seg.off-grid"]
    item = [f for f in report["findings"] if f["code"] == "seg.off-grid"][0]
    assert item["severity"] == "error" and "0.5 voxels" in item["message"]


def test_segment_without_voxels_is_reported(cli, tmp_path):
    import copy

    import pydicom

    ct = write_ct(tmp_path / "tree" / "ct")
    seg = make_seg(cli, tmp_path, ct)
    ds = pydicom.dcmread(seg)
    extra = copy.deepcopy(ds.SegmentSequence[-1])
    extra.SegmentNumber = len(ds.SegmentSequence) + 1
    extra.SegmentLabel = "nothing"
    ds.SegmentSequence.append(extra)
    ds.save_as(seg)
    report = audit(cli, tmp_path / "tree")
    assert codes(report) == ["seg.empty-segment", "seg.paired"]
    assert "4 (nothing)" in [f for f in report["findings"]
                             if f["code"] == "seg.empty-segment"][0]["message"]


def test_mask_beside_a_series_off_its_grid_is_a_mismatch(cli, tmp_path):
    ct = write_ct(tmp_path / "tree" / "ct")
    shifted = ct.affine.copy()
    shifted[:3, 3] += 0.5 * ct.affine[:3, 2]  # half a slice
    write_volume(Volume(blob_labels(ct.shape), shifted), tmp_path / "tree" / "mask.nii.gz")
    write_volume(Volume(blob_labels(ct.shape), ct.affine), tmp_path / "tree" / "good.nii.gz")
    report = audit(cli, tmp_path / "tree")
    mismatched = {f["path"].rsplit("/", 1)[-1] for f in report["findings"]
                  if f["code"] == "pair.geometry-mismatch"}
    assert mismatched == {"mask.nii.gz"}


@pytest.mark.parametrize("name", ["liver.dcm", "partial_overlaps.dcm",
                                  "sparse-labelmap-noppv.dcm"])
def test_corpus_seg_objects_are_paired(cli, corpus, name):
    report = audit(cli, corpus / "seg")
    assert codes(report, "/" + name) == ["seg.paired"]
    assert np.all([f["severity"] != "error" for f in report["findings"]
                   if f["code"].startswith("seg.")])
