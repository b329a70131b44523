"""The SEG writer (convkit.seg.build, pydicom and numpy) against highdicom's Segmentation of
the same frames: the same module structure, segment descriptions, frame references,
positions and pixels; and the cases its fast paths treat apart (BINARY frames whose pixels
do not fill whole bytes, 16-bit label maps) read back by highdicom and dcmqi."""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pydicom
import pytest

from convkit.formats import write_volume
from convkit.seg.build import cielab
from convkit.seg.dicomseg import write_seg
from convkit.testing.segmentations import blob_labels, labels_at_world, voxel_centres, write_ct
from convkit.volume import Volume


def hd_volume(path):
    import highdicom as hd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volume = hd.seg.segread(path).get_volume(combine_segments=True)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(volume.affine)
    return np.transpose(np.asarray(volume.array), (2, 1, 0)), affine[:, [2, 1, 0, 3]]


def highdicom_seg(ct, labels, seg_type):
    """highdicom's own Segmentation of the same labels on the same source images."""
    import highdicom as hd
    from pydicom.sr.coding import Code

    sources = [pydicom.dcmread(p) for p in ct.paths]  # slice order, as labels' third axis
    for source in sources:  # Type 2 attributes highdicom copies and needs present
        for keyword in ("PatientSex", "PatientBirthDate", "StudyID", "AccessionNumber",
                        "ReferringPhysicianName"):
            if keyword not in source:
                setattr(source, keyword, "")
    numbers = [int(n) for n in np.unique(labels) if n]
    tissue = Code("85756007", "SCT", "Tissue")
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=f"label {n}", segmented_property_category=tissue,
        segmented_property_type=tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n in numbers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hd.seg.Segmentation(
            source_images=sources, pixel_array=np.ascontiguousarray(labels.transpose(2, 1, 0)),
            segmentation_type=seg_type.upper(), segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=1, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="x", manufacturer_model_name="x",
            software_versions="0", device_serial_number="0", omit_empty_frames=True)


def frames_by_place(ds):
    """{(source SOP instance, position, segment): frame pixels} of a SEG (pydicom)."""
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    found = {}
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        position = tuple(round(float(v), 4) for v in
                         item.PlanePositionSequence[0].ImagePositionPatient)
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) \
            if "SegmentIdentificationSequence" in item else 0
        assert source.SpatialLocationsPreserved == "YES"
        found[(str(source.ReferencedSOPInstanceUID), position, segment)] = pixels[index]
    return found


@pytest.mark.parametrize("seg_type", ["labelmap", "binary"])
@pytest.mark.parametrize("shape", [(13, 11, 6),  # 143 pixels a frame: not whole bytes
                                   (16, 8, 37)])  # whole bytes, frames packed in blocks
def test_same_object_as_highdicom_writes(tmp_path, seg_type, shape):
    ct = write_ct(tmp_path / "ct", shape=shape)
    labels = blob_labels(ct.shape)
    write_volume(Volume(labels, ct.affine), tmp_path / "mask.nii.gz")
    write_seg(tmp_path / "mask.nii.gz", ct.folder, tmp_path / "ours.dcm", seg_type=seg_type)
    ours = pydicom.dcmread(tmp_path / "ours.dcm")
    theirs = highdicom_seg(ct, labels, seg_type)
    for keyword in ("SOPClassUID", "Modality", "SegmentationType", "NumberOfFrames", "Rows",
                    "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "PhotometricInterpretation", "SegmentsOverlap", "FrameOfReferenceUID",
                    "StudyInstanceUID", "PatientID", "PatientName", "ImageType",
                    "DimensionOrganizationType"):
        assert ours.get(keyword) == theirs.get(keyword), keyword
    assert ([(int(s.SegmentNumber), s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
             for s in ours.SegmentSequence]
            == [(int(s.SegmentNumber), s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
                for s in theirs.SegmentSequence])
    assert ([(d.DimensionIndexPointer, d.FunctionalGroupPointer)
             for d in ours.DimensionIndexSequence]
            == [(d.DimensionIndexPointer, d.FunctionalGroupPointer)
                for d in theirs.DimensionIndexSequence])
    for shared in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        assert ours.SharedFunctionalGroupsSequence[0][shared][0] == \
            theirs.SharedFunctionalGroupsSequence[0][shared][0], shared
    assert ({str(i.ReferencedSOPInstanceUID)
             for i in ours.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
            == {str(i.ReferencedSOPInstanceUID)
                for i in theirs.ReferencedSeriesSequence[0].ReferencedInstanceSequence})
    mine, reference = frames_by_place(ours), frames_by_place(theirs)
    assert sorted(mine) == sorted(reference)
    for place, pixels in reference.items():
        np.testing.assert_array_equal(mine[place], pixels)


def test_colours_encode_as_highdicom_does():
    import highdicom as hd

    for rgb in [(0, 0, 0), (255, 255, 255), (200, 40, 40), (128, 174, 128), (10, 20, 250),
                (241, 214, 145)]:
        expected = hd.color.CIELabColor.from_rgb(*rgb).value
        assert np.abs(np.asarray(cielab(rgb)) - np.asarray(expected)).max() <= 1, rgb


def test_odd_sized_binary_frames_read_by_dcmqi(cli, tmp_path, dcmqi):
    import nibabel as nib

    ct = write_ct(tmp_path / "ct", shape=(13, 11, 6))
    labels = blob_labels(ct.shape, 4)
    write_volume(Volume(labels, ct.affine), tmp_path / "mask.nii.gz")
    cli("nii2dicom", tmp_path / "mask.nii.gz", tmp_path / "seg.dcm", "--seg", "--reference",
        ct.folder, "--seg-type", "binary", check_code=0)
    (tmp_path / "out").mkdir()
    subprocess.run([dcmqi["segimage2itkimage"], "--inputDICOM", str(tmp_path / "seg.dcm"),
                    "--outputDirectory", str(tmp_path / "out"), "-t", "nifti"], check=True,
                   capture_output=True)
    centres = voxel_centres(ct.affine, ct.shape)
    for number in range(1, 5):  # one file per segment, its number inside it
        image = nib.load(tmp_path / "out" / f"{number}.nii.gz")
        found = labels_at_world(np.asarray(image.dataobj), image.affine, centres, outside=0)
        np.testing.assert_array_equal(found, np.where(labels.ravel(order="C") == number,
                                                      number, 0))


def test_sixteen_bit_label_map(cli, tmp_path):
    ct = write_ct(tmp_path / "ct", shape=(12, 10, 5))
    labels = np.zeros(ct.shape, np.uint16, order="F")
    labels[2:6, 3:7, 1:3] = 300
    labels[7:10, 1:4, 4] = 2
    write_volume(Volume(labels, ct.affine), tmp_path / "mask.nii.gz")
    cli("nii2dicom", tmp_path / "mask.nii.gz", tmp_path / "seg.dcm", "--seg", "--reference",
        ct.folder, check_code=0)
    assert int(pydicom.dcmread(tmp_path / "seg.dcm").BitsAllocated) == 16
    array, affine = hd_volume(tmp_path / "seg.dcm")
    found = labels_at_world(array, affine, voxel_centres(ct.affine, ct.shape), outside=0)
    np.testing.assert_array_equal(found, labels.ravel(order="C"))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("size", [1, 2, 7, 1000, 3_000_001])
def test_label_counts_match_numpy_unique(dtype, size):
    from convkit.seg.sampling import label_counts

    rng = np.random.default_rng(size)
    top = 200 if dtype == np.uint8 else 700
    values = rng.choice([0, 1, 3, top], size=size, p=[0.5, 0.3, 0.15, 0.05]).astype(dtype)
    numbers, found = np.unique(values, return_counts=True)
    expected = np.zeros(int(numbers[-1]) + 1, np.int64)
    expected[numbers] = found
    np.testing.assert_array_equal(label_counts(values), expected)
    np.testing.assert_array_equal(label_counts(values.reshape(-1, 1)[:, 0]), expected)
