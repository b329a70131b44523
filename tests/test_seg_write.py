"""nii2dicom --seg: a label map -> DICOM SEG on its reference series, checked in world space.

Oracles: highdicom reading the SEG back (get_volume: its own geometry code), dcmqi's
segimage2itkimage (an independent C++ reader; its NIfTI read by nibabel), dciodvfy (0
errors on BINARY SEG; the dicom3tools release on this machine predates the Label Map
Segmentation SOP class, so it cannot check LABELMAP). Every comparison looks up labels at
the world positions of the reference series' voxel centres, never array against array.
"""

from __future__ import annotations

import json
import subprocess
import warnings

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

#: (axes, flips, format): the same mask stored in other axis orders and formats.
LAYOUTS = [((0, 1, 2), (False, False, False), "nii.gz"),
           ((2, 0, 1), (True, False, True), "nrrd"),
           ((1, 2, 0), (False, True, False), "mha")]
OBLIQUE = (0.9848077, 0.0, -0.1736482, 0.0, 1.0, 0.0)  # 10 degrees about the y axis


def hd_labels(path):
    """(array (column, row, slice), RAS affine) of a SEG as highdicom reads it."""
    import highdicom as hd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volume = hd.seg.segread(path).get_volume(combine_segments=True)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(volume.affine)
    return np.transpose(np.asarray(volume.array), (2, 1, 0)), affine[:, [2, 1, 0, 3]]


def write_mask(path, labels, affine, axes=(0, 1, 2), flips=(False, False, False)):
    array, new_affine = reorder(labels, affine, axes, flips)
    write_volume(Volume(array, new_affine), path)
    return path


@pytest.fixture
def ct(tmp_path):
    return write_ct(tmp_path / "ct")


@pytest.mark.parametrize("seg_type", ["labelmap", "binary"])
@pytest.mark.parametrize(("axes", "flips", "fmt"), LAYOUTS)
def test_seg_holds_the_labels_at_their_world_positions(cli, tmp_path, ct, seg_type, axes, flips,
                                                       fmt):
    labels = blob_labels(ct.shape)
    mask = write_mask(tmp_path / f"mask.{fmt}", labels, ct.affine, axes, flips)
    cli("nii2dicom", mask, tmp_path / "mask.seg.dcm", "--seg", "--reference", ct.folder,
        "--seg-type", seg_type, check_code=0)
    array, affine = hd_labels(tmp_path / "mask.seg.dcm")
    found = labels_at_world(array, affine, voxel_centres(ct.affine, ct.shape), outside=0)
    np.testing.assert_array_equal(found, labels.ravel(order="C"))


def test_oblique_series_and_permuted_mask(cli, tmp_path):
    ct = write_ct(tmp_path / "ct", orientation=OBLIQUE, shape=(30, 26, 9))
    labels = blob_labels(ct.shape, 4)
    mask = write_mask(tmp_path / "mask.nii.gz", labels, ct.affine, (2, 1, 0), (True, True, False))
    cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder, check_code=0)
    array, affine = hd_labels(tmp_path / "seg.dcm")
    found = labels_at_world(array, affine, voxel_centres(ct.affine, ct.shape), outside=0)
    np.testing.assert_array_equal(found, labels.ravel(order="C"))


def test_segments_named_coloured_and_coded_from_the_labels_file(cli, tmp_path, ct):
    import highdicom as hd
    import pydicom

    labels = np.zeros(ct.shape, np.uint8, order="F")
    labels[3:9, 4:10, 2:5] = 1
    labels[20:25, 15:20, 6] = 3  # labels need not be contiguous
    mask = write_mask(tmp_path / "mask.nii.gz", labels, ct.affine)
    (tmp_path / "labels.json").write_text(json.dumps({
        "1": {"name": "lung", "color": [200, 40, 40],
              "type": {"scheme": "SCT", "value": "39607008", "meaning": "Lung"}},
        "3": {"name": "ground-glass opacity",
              "category": {"scheme": "SCT", "value": "49755003",
                           "meaning": "Morphologically Altered Structure"}}}))
    cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder,
        "--labels", tmp_path / "labels.json", check_code=0)
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    segments = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert {n: s.SegmentLabel for n, s in segments.items() if n} == {
        1: "lung", 3: "ground-glass opacity"}
    lung = segments[1]
    assert lung.SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"
    assert lung.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "85756007"  # default
    assert segments[3].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    rgb = hd.color.CIELabColor.from_dicom_value(lung.RecommendedDisplayCIELabValue).to_rgb()
    assert np.abs(np.asarray(rgb, int) - [200, 40, 40]).max() <= 2
    # the source series is referenced, and every frame lies on one of its images
    referenced = {str(item.SeriesInstanceUID) for item in ds.ReferencedSeriesSequence}
    assert referenced == {str(pydicom.dcmread(ct.paths[0]).SeriesInstanceUID)}
    assert int(ds.NumberOfFrames) == 4  # slices 2, 3, 4 and 6: empty frames are not written


def test_binary_renumbers_sparse_labels_and_says_so(cli, tmp_path, ct):
    import highdicom as hd

    labels = np.zeros(ct.shape, np.uint8, order="F")
    labels[3:9, 4:10, 2] = 2
    labels[20:25, 15:20, 6] = 5
    mask = write_mask(tmp_path / "mask.nii.gz", labels, ct.affine)
    done = cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder,
               "--seg-type", "binary", check_code=0)
    assert "label 2 is segment 1" in done.stdout and "label 5 is segment 2" in done.stdout
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.segment_numbers == [1, 2]


def test_mask_off_the_reference_grid_is_refused_or_resampled(cli, tmp_path, ct):
    labels = blob_labels(ct.shape)
    shifted = ct.affine.copy()
    shifted[:3, 3] += 0.5 * ct.affine[:3, 0]  # half a voxel along i
    mask = write_mask(tmp_path / "mask.nii.gz", labels, shifted)
    done = cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder,
               check_code=4)
    assert "does not lie on the reference series' grid" in done.stderr
    assert "0.5 voxels" in done.stderr and "--resample" in done.stderr
    assert not (tmp_path / "seg.dcm").exists()
    done = cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder,
               "--resample", check_code=0)
    assert "resampled by nearest neighbour" in done.stdout
    array, affine = hd_labels(tmp_path / "seg.dcm")
    found = labels_at_world(array, affine, voxel_centres(ct.affine, ct.shape), outside=0)
    # nearest neighbour of a half-voxel shift: each voxel takes one of its two neighbours
    expected_a = np.roll(labels, 1, axis=0).ravel(order="C")
    expected_b = labels.ravel(order="C")
    assert ((found == expected_a) | (found == expected_b)).all()
    assert set(np.unique(found)) == {0, 1, 2, 3}


def test_labels_outside_the_reference_are_refused(cli, tmp_path, ct):
    big = np.zeros((ct.shape[0] + 4, *ct.shape[1:]), np.uint8, order="F")
    big[2:-2] = blob_labels(ct.shape)
    big[0, 5, 5] = 2  # a labelled voxel left of the series
    affine = ct.affine.copy()
    affine[:3, 3] -= 2 * ct.affine[:3, 0]
    mask = write_mask(tmp_path / "mask.nii.gz", big, affine)
    done = cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder,
               check_code=4)
    assert "1 labelled voxels" in done.stderr and "outside the reference series" in done.stderr
    big[0, 5, 5] = 0  # a larger grid with background only outside is on the grid
    write_mask(tmp_path / "mask.nii.gz", big, affine)
    cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder, check_code=0)


@pytest.mark.parametrize(("values", "message"), [
    (np.zeros, "holds no label"),
    (lambda shape, dtype: np.full(shape, 0.5, dtype), "non-integer values"),
    (lambda shape, dtype: np.full(shape, -1, dtype), "labels from -1"),
])
def test_not_a_label_map_is_refused(cli, tmp_path, ct, values, message):
    mask = tmp_path / "mask.nii.gz"
    write_volume(Volume(np.asfortranarray(values(ct.shape, np.float32)), ct.affine), mask)
    done = cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder,
               check_code=4)
    assert message in done.stderr


def test_seg_needs_a_reference(cli, tmp_path, ct):
    mask = write_mask(tmp_path / "mask.nii.gz", blob_labels(ct.shape), ct.affine)
    done = cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", check_code=2)
    assert "--reference" in done.stderr


@pytest.mark.parametrize("seg_type", ["labelmap", "binary"])
def test_dcmqi_reads_the_same_labels(cli, tmp_path, ct, dcmqi, seg_type):
    import nibabel as nib

    labels = blob_labels(ct.shape)
    mask = write_mask(tmp_path / "mask.nrrd", labels, ct.affine, (1, 0, 2), (False, True, False))
    cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder,
        "--seg-type", seg_type, check_code=0)
    out = tmp_path / "dcmqi"
    out.mkdir()
    subprocess.run([dcmqi["segimage2itkimage"], "--inputDICOM", str(tmp_path / "seg.dcm"),
                    "--outputDirectory", str(out), "-t", "nifti"], check=True,
                   capture_output=True)
    centres = voxel_centres(ct.affine, ct.shape)
    found = np.zeros(len(centres), np.int64)
    for path in sorted(out.glob("*.nii.gz")):
        image = nib.load(path)
        values = labels_at_world(np.asarray(image.dataobj), image.affine, centres, outside=0)
        segment = int(path.name.split(".")[0])
        # LABELMAP: one file of label values; BINARY: one 0/1 file per segment
        found[values > 0] = values[values > 0] if seg_type == "labelmap" else segment
    np.testing.assert_array_equal(found, labels.ravel(order="C"))


def test_binary_seg_passes_dciodvfy(cli, tmp_path, ct, dicom3tools):
    mask = write_mask(tmp_path / "mask.nii.gz", blob_labels(ct.shape), ct.affine)
    cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder,
        "--seg-type", "binary", check_code=0)
    done = subprocess.run([dicom3tools["dciodvfy"], str(tmp_path / "seg.dcm")],
                          capture_output=True, text=True)
    errors = [line for line in (done.stdout + done.stderr).splitlines()
              if line.startswith("Error")]
    assert errors == []


def test_seg_on_a_multiframe_reference_read_by_dcmqi(cli, tmp_path, corpus, dcmqi):
    """The corpus' enhanced (multi-frame) CT as the reference: frames are in file order."""
    import nibabel as nib

    source = corpus / "seg" / "23x38x3" / "multiframe"
    cli("dicom2nii", source, tmp_path / "ct", check_code=0)
    ct = nib.load(next((tmp_path / "ct").glob("*.nii.gz")))
    labels = np.zeros(ct.shape, np.uint8, order="F")
    labels[4:15, 9:21, 0] = 1
    labels[2:6, 30:35, 2] = 2
    write_volume(Volume(labels, ct.affine), tmp_path / "mask.nii.gz")
    cli("nii2dicom", tmp_path / "mask.nii.gz", tmp_path / "seg.dcm", "--seg", "--reference",
        source, check_code=0)
    (tmp_path / "dcmqi").mkdir()
    subprocess.run([dcmqi["segimage2itkimage"], "--inputDICOM", str(tmp_path / "seg.dcm"),
                    "--outputDirectory", str(tmp_path / "dcmqi"), "-t", "nifti"], check=True,
                   capture_output=True)
    image = nib.load(tmp_path / "dcmqi" / "1.nii.gz")
    found = labels_at_world(np.asarray(image.dataobj), image.affine,
                            voxel_centres(ct.affine, ct.shape), outside=0)
    np.testing.assert_array_equal(found, labels.ravel(order="C"))


@pytest.mark.parametrize("seg_type", ["labelmap", "binary"])
def test_a_label_resampled_away_is_still_described(cli, tmp_path, ct, seg_type):
    import highdicom as hd

    big = np.zeros((ct.shape[0] + 4, *ct.shape[1:]), np.uint8, order="F")
    big[6:10, 5:9, 3] = 1
    big[0, 5, 5] = 2  # outside the series: --resample keeps what falls inside
    affine = ct.affine.copy()
    affine[:3, 3] -= 2 * ct.affine[:3, 0]
    mask = write_mask(tmp_path / "mask.nii.gz", big, affine)
    done = cli("nii2dicom", mask, tmp_path / "seg.dcm", "--seg", "--reference", ct.folder,
               "--resample", "--seg-type", seg_type, check_code=0)
    assert "label 2 (0 voxels); no voxel on the reference grid" in done.stdout
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.segment_numbers == [1, 2] and int(seg.NumberOfFrames) == 1
