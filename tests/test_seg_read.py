"""dicom2nii reads DICOM SEG as label maps on the grid of the series they reference.

Checked against: the label maps published beside the corpus SEG objects (read with
SimpleITK), dcmqi's segimage2itkimage on the same SEG (read with nibabel), a SEG written by
dcmqi's itkimage2segimage from a known label map, and the round trip label map -> SEG ->
label map. All in world space, at the voxel centres of the output grid.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from convkit.formats import write_volume
from convkit.testing.segmentations import (
    blob_labels,
    labels_at_world,
    reorder,
    voxel_centres,
    write_ct,
)
from convkit.volume import Volume


def nifti(path):
    """(array, affine) of a NIfTI file as nibabel reads it (not convkit's reader)."""
    import nibabel as nib

    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def sitk_labels(path):
    """(array (i, j, k), RAS affine) of a label map as SimpleITK reads it."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def link_files(folder, target):
    """folder/NAME -> target/NAME for every file (the scan does not descend folder links)."""
    folder.mkdir(parents=True)
    for path in sorted(target.iterdir()):
        (folder / path.name).symlink_to(path)


def output(out_dir, pattern):
    found = sorted(out_dir.glob(pattern))
    assert len(found) == 1, f"{pattern}: {found}"
    return found[0]


def test_round_trip_label_map_seg_label_map(cli, tmp_path):
    ct = write_ct(tmp_path / "in" / "ct")
    labels = blob_labels(ct.shape, 4)
    array, affine = reorder(labels, ct.affine, (1, 2, 0), (True, False, False))
    write_volume(Volume(array, affine), tmp_path / "mask.nii.gz")
    cli("nii2dicom", tmp_path / "mask.nii.gz", tmp_path / "in" / "mask.seg.dcm", "--seg",
        "--reference", ct.folder, check_code=0)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=0)
    report = json.loads(done.stdout)
    seg = [s for s in report["series"] if s["modality"] == "SEG"]
    assert [s["status"] for s in seg] == ["written"]
    back, back_affine = nifti(output(tmp_path / "out", "*_seg.nii.gz"))
    centres = voxel_centres(ct.affine, ct.shape)
    np.testing.assert_array_equal(labels_at_world(back, back_affine, centres),
                                  labels.ravel(order="C"))
    assert back.shape == ct.shape  # the grid of the series, nothing more
    sidecar = json.loads(output(tmp_path / "out", "*_seg.json").read_text())
    assert [s["SegmentNumber"] for s in sidecar["Segments"]] == [1, 2, 3, 4]
    assert [s["Voxels"] for s in sidecar["Segments"]] == [
        int(np.count_nonzero(labels == n)) for n in (1, 2, 3, 4)]
    files = {r["path"].rsplit("/", 1)[-1]: r for r in report["files"]}
    assert files["mask.seg.dcm"]["status"] == "used"


def test_seg_whose_source_series_is_missing_is_reported(cli, tmp_path):
    ct = write_ct(tmp_path / "ct")
    other = write_ct(tmp_path / "in" / "other", seed=99)
    write_volume(Volume(blob_labels(ct.shape), ct.affine), tmp_path / "mask.nii.gz")
    cli("nii2dicom", tmp_path / "mask.nii.gz", tmp_path / "in" / "seg.dcm", "--seg",
        "--reference", ct.folder, check_code=0)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=6)
    assert "its source series" in done.stderr and "not in the folder" in done.stderr
    assert other.folder.exists() and not list((tmp_path / "out").glob("*_seg*"))


@pytest.mark.parametrize(("mode", "expected"), [("files", 5), ("stack", 1)])
def test_corpus_overlapping_segments_match_dcmqi(cli, tmp_path, corpus, dcmqi, mode, expected):
    """partial_overlaps.dcm: 5 BINARY segments that overlap; dcmqi writes one file each."""
    source = tmp_path / "in"
    source.mkdir()
    link_files(source / "ct", corpus / "seg" / "ct-3slice")
    (source / "po.dcm").symlink_to(corpus / "seg" / "partial_overlaps.dcm")
    cli("dicom2nii", source, tmp_path / "out", "--seg-overlap", mode, check_code=0)
    ours = sorted((tmp_path / "out").glob("*_seg_*.nii.gz") if mode == "files"
                  else (tmp_path / "out").glob("*_seg.nii.gz"))
    assert len(ours) == expected
    (tmp_path / "dcmqi").mkdir()
    subprocess.run([dcmqi["segimage2itkimage"], "--inputDICOM", str(source / "po.dcm"),
                    "--outputDirectory", str(tmp_path / "dcmqi"), "-t", "nifti"], check=True,
                   capture_output=True)
    ct_array, ct_affine = nifti(output(tmp_path / "out", "2_*Colonoscopy.nii.gz"))
    centres = voxel_centres(ct_affine, ct_array.shape)
    for segment in range(1, 6):
        reference = nifti(tmp_path / "dcmqi" / f"{segment}.nii.gz")
        expected_mask = labels_at_world(*reference, centres, outside=0) > 0
        if mode == "files":
            mine = nifti(output(tmp_path / "out", f"*_seg_{segment}.nii.gz"))
            found = labels_at_world(*mine, centres) > 0
        else:
            array, affine = nifti(ours[0])
            found = labels_at_world(array[..., segment - 1], affine, centres) > 0
        assert expected_mask.sum() > 1000
        np.testing.assert_array_equal(found, expected_mask)


@pytest.mark.parametrize(("seg", "nrrd", "series"), [
    ("liver.dcm", "liver_seg.nrrd", "2_*Colonoscopy"),
    ("sparse-labelmap-noppv.dcm", "sparse_labelmap_noppv_seg.nrrd", "*Image_24x38x3"),
    ("sparse-labelmap-ppv5.dcm", "sparse_labelmap_ppv5_seg.nrrd", "*Image_24x38x3"),
    ("23x38x3/seg/label.seg", "23x38x3/nrrd/label.nrrd", "*Image_23x38x3"),
    ("24x38x3/seg/label.seg", "24x38x3/nrrd/label.nrrd", "*Image_24x38x3"),
])
def test_corpus_seg_matches_its_published_label_map(cli, tmp_path, corpus, seg, nrrd, series):
    data = corpus / "seg"
    source = tmp_path / "in"
    source.mkdir()
    folder = "ct-3slice" if seg == "liver.dcm" else ("23x38x3/image" if "23x38" in nrrd
                                                     else "24x38x3/image")
    link_files(source / "ct", data / folder)
    (source / "seg.dcm").symlink_to(data / seg)
    cli("dicom2nii", source, tmp_path / "out", check_code=0)
    ct_array, ct_affine = nifti(output(tmp_path / "out", f"{series}.nii.gz"))
    centres = voxel_centres(ct_affine, ct_array.shape)
    mine = labels_at_world(*nifti(output(tmp_path / "out", f"{series}_seg.nii.gz")), centres)
    published = labels_at_world(*sitk_labels(data / nrrd), centres)
    # the ppv5 map writes its padding value (5) where the SEG has no frame: background
    published[published == 5] = 0
    assert np.count_nonzero(published) > 100
    np.testing.assert_array_equal(mine, published)


def test_seg_written_by_dcmqi_is_read_on_the_source_grid(cli, tmp_path, dcmqi):
    """itkimage2segimage (dcmqi) writes the SEG from a known label map; convkit reads it."""
    ct = write_ct(tmp_path / "in" / "ct", shape=(30, 24, 8))
    labels = blob_labels(ct.shape, 2)
    array, affine = reorder(labels, ct.affine, (0, 1, 2), (False, True, False))
    write_volume(Volume(array, affine), tmp_path / "mask.nii.gz")
    meta = {"ContentCreatorName": "test", "SeriesDescription": "dcmqi", "SeriesNumber": "300",
            "InstanceNumber": "1", "segmentAttributes": [[
                {"labelID": n, "SegmentLabel": f"blob {n}", "SegmentAlgorithmType": "MANUAL",
                 "SegmentedPropertyCategoryCodeSequence": {
                     "CodeValue": "85756007", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Tissue"},
                 "SegmentedPropertyTypeCodeSequence": {
                     "CodeValue": "85756007", "CodingSchemeDesignator": "SCT",
                     "CodeMeaning": "Tissue"}} for n in (1, 2)]]}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    subprocess.run([dcmqi["itkimage2segimage"], "--inputImageList",
                    str(tmp_path / "mask.nii.gz"), "--inputDICOMDirectory", str(ct.folder),
                    "--inputMetadata", str(tmp_path / "meta.json"),
                    "--outputDICOM", str(tmp_path / "in" / "dcmqi.seg.dcm")],
                   check=True, capture_output=True)
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    back = nifti(output(tmp_path / "out", "*_seg.nii.gz"))
    np.testing.assert_array_equal(labels_at_world(*back, voxel_centres(ct.affine, ct.shape)),
                                  labels.ravel(order="C"))
    names = [s["SegmentLabel"] for s in
             json.loads(output(tmp_path / "out", "*_seg.json").read_text())["Segments"]]
    assert names == ["blob 1", "blob 2"]
