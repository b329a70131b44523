"""dicom2nii reads RTSTRUCT as label maps on the grid of the series its contours lie on.

Hand-built contours of known exact area (polygons: shoelace) on synthetic series, axial
and oblique: the filled area agrees with the polygon's to >= 99%, voxel centres well
inside a contour are labelled and those well outside are not (checked at their world
positions), holes come from nesting, names are kept, and points outside the field of view
are reported.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from convkit.testing.segmentations import (
    circle_contour,
    labels_at_world,
    voxel_centres,
    write_ct,
    write_rtstruct,
)

OBLIQUE = (0.9659258, 0.0, -0.2588190, 0.0, 1.0, 0.0)  # 15 degrees about y


def nifti(path):
    import nibabel as nib

    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def shoelace_mm2(points_lps, ct):
    """Exact area of a planar polygon in mm^2 (in the plane's own 2D coordinates)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct.affine
    u = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    v = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    x, y = points_lps @ u, points_lps @ v
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def convert(cli, tmp_path, ct, rois, *extra, code=0, out="out"):
    write_rtstruct(tmp_path / "in" / "rt.dcm", ct, rois)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / out, "--json", *extra,
               check_code=code)
    return json.loads(done.stdout)


def in_plane_distance(ct, centre_index, k):
    """mm from the circle's centre of every voxel centre of slice k (NaN on other slices)."""
    centres = voxel_centres(ct.affine, ct.shape)
    centre = ct.affine[:3, :3] @ np.asarray(centre_index, float) + ct.affine[:3, 3]
    slice_of = np.indices(ct.shape).reshape(3, -1)[2]
    distance = np.linalg.norm(centres - centre, axis=1)
    return np.where(slice_of == k, distance, np.nan), centres


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, 1, 0), OBLIQUE])
def test_large_contour_area_and_position(cli, tmp_path, orientation):
    ct = write_ct(tmp_path / "in" / "ct", shape=(64, 60, 10), orientation=orientation)
    centre_index, radius = (30.3, 28.6, 4), 14.0
    circle = circle_contour(ct, centre_index, radius)
    report = convert(cli, tmp_path, ct, [(7, "tumour", [circle])])
    assert [s["status"] for s in report["series"]] == ["written", "written"]
    labels, affine = nifti(next((tmp_path / "out").glob("*_seg.nii.gz")))
    distance, centres = in_plane_distance(ct, centre_index, 4)
    found = labels_at_world(labels, affine, centres)
    voxel_mm2 = 0.8 * 0.7
    area = np.count_nonzero(found == 7) * voxel_mm2
    assert area / shoelace_mm2(circle, ct) == pytest.approx(1.0, abs=0.01)
    assert (found[distance < radius - 1.1] == 7).all()  # 1.1 mm > half a voxel diagonal
    assert (found[~(distance < radius + 1.1)] == 0).all()  # other slices included
    sidecar = json.loads(next((tmp_path / "out").glob("*_seg.json")).read_text())
    assert sidecar["Segments"] == [{"SegmentNumber": 7, "SegmentLabel": "tumour",
                                    "Voxels": int(np.count_nonzero(found == 7))}]


def test_nested_contour_is_a_hole_and_an_island_inside_it_is_filled(cli, tmp_path):
    ct = write_ct(tmp_path / "in" / "ct", shape=(64, 60, 6))
    centre_index = (31.0, 29.0, 2)
    rings = [circle_contour(ct, centre_index, r) for r in (16.0, 9.0, 4.0)]
    convert(cli, tmp_path, ct, [(1, "ring", rings)])
    labels, affine = nifti(next((tmp_path / "out").glob("*_seg.nii.gz")))
    distance, centres = in_plane_distance(ct, centre_index, 2)
    found = labels_at_world(labels, affine, centres)
    exact = shoelace_mm2(rings[0], ct) - shoelace_mm2(rings[1], ct) + shoelace_mm2(rings[2], ct)
    assert np.count_nonzero(found) * 0.8 * 0.7 / exact == pytest.approx(1.0, abs=0.01)
    assert (found[distance < 2.9] == 1).all()  # the island
    assert (found[(distance > 5.1) & (distance < 7.9)] == 0).all()  # the hole
    assert (found[(distance > 10.1) & (distance < 14.9)] == 1).all()  # the ring


def test_rois_keep_their_numbers_and_names_and_overlaps_become_files(cli, tmp_path):
    ct = write_ct(tmp_path / "in" / "ct", shape=(64, 60, 6))
    body = circle_contour(ct, (31, 29, 3), 20.0)
    left = circle_contour(ct, (22, 29, 3), 5.0)
    right = circle_contour(ct, (42, 29, 3), 5.0)
    convert(cli, tmp_path, ct, [(2, "left lung", [left]), (5, "right lung", [right])])
    labels, affine = nifti(next((tmp_path / "out").glob("*_seg.nii.gz")))
    assert set(np.unique(labels)) == {0, 2, 5}
    centres = np.array([ct.affine[:3, :3] @ np.array(p, float) + ct.affine[:3, 3]
                        for p in [(22, 29, 3), (42, 29, 3), (31, 29, 3)]])
    assert list(labels_at_world(labels, affine, centres)) == [2, 5, 0]
    names = [s["SegmentLabel"] for s in
             json.loads(next((tmp_path / "out").glob("*_seg.json")).read_text())["Segments"]]
    assert names == ["left lung", "right lung"]
    # the body holds both lungs: one file per ROI
    report = convert(cli, tmp_path, ct, [(1, "body", [body]), (2, "left lung", [left])],
                     out="out2")
    assert report["exit_code"] == 0
    outputs = sorted(p.name for p in (tmp_path / "out2").glob("*_seg_*.nii.gz"))
    assert len(outputs) == 2 and outputs[0].endswith("_seg_1.nii.gz")


def test_points_outside_the_field_of_view_are_reported(cli, tmp_path):
    ct = write_ct(tmp_path / "in" / "ct", shape=(40, 36, 5))
    edge = circle_contour(ct, (2, 18, 2), 6.0, n_points=360)  # crosses the left edge
    report = convert(cli, tmp_path, ct, [(1, "edge", [edge])])
    seg = [s for s in report["series"] if s["modality"] == "RTSTRUCT"][0]
    assert any("contour points lie outside the series' field of view" in note
               for note in seg["notes"])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct.affine
    index = (np.linalg.inv(lps) @ np.c_[edge, np.ones(len(edge))].T)[:2]
    outside = int(((index < -0.5) | (index > np.array([[39.5], [35.5]]))).any(axis=0).sum())
    assert f"{outside} contour points" in " ".join(seg["notes"])


def test_split_writes_one_file_per_roi(cli, tmp_path):
    ct = write_ct(tmp_path / "in" / "ct", shape=(64, 60, 6))
    left = circle_contour(ct, (22, 29, 3), 5.0)
    right = circle_contour(ct, (42, 29, 3), 5.0)
    convert(cli, tmp_path, ct, [(2, "left", [left]), (5, "right", [right])],
            "--seg-overlap", "split")
    files = sorted((tmp_path / "out").glob("*_seg_*.nii.gz"))
    assert [p.name.rsplit("_", 1)[1] for p in files] == ["2.nii.gz", "5.nii.gz"]
    centres = np.array([ct.affine[:3, :3] @ np.array(p, float) + ct.affine[:3, 3]
                        for p in [(22, 29, 3), (42, 29, 3)]])
    assert list(labels_at_world(*nifti(files[0]), centres)) == [1, 0]
    assert list(labels_at_world(*nifti(files[1]), centres)) == [0, 1]
