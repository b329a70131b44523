"""Regenerate the synthetic sample DICOM data under <out>/dicom (deleted and recreated).

    python sample_data/make_sample_data.py [--out sample_data]

Deterministic: two runs write byte-identical files (UIDs and file names derive from fixed
seeds, and nothing time-dependent is written). See sample_data/README.md for what each
series contains.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from convkit.formats import write_volume
from convkit.geometry import affine_lps, lps_to_ras
from convkit.seg.dicomseg import write_seg
from convkit.testing.phantoms import chest_ct_hu, chest_ct_masks, head_mr
from convkit.testing.synthetic import regular_positions, uid, write_series
from convkit.volume import Volume

CT_SHAPE = (70, 128, 128)  # slices, rows, columns
CT_PIXEL_SPACING = (2.734375, 2.734375)  # 350 mm field of view
CT_SLICE_SPACING = 5.0
CT_RESCALE_INTERCEPT = -1024
AXIAL = (1, 0, 0, 0, 1, 0)

MR_SHAPE = (20, 80, 64)  # sagittal slices (left to right), rows (S->I), columns (A->P)
MR_PIXEL_SPACING = (3.0, 3.0)  # 240 mm superior-inferior x 192 mm anterior-posterior
MR_SLICE_SPACING = 8.0
# Columns run anterior -> posterior (+y), rows superior -> inferior (-z); the normal
# (row x column direction) is -x, so slices step from patient left to patient right.
SAGITTAL = (0, 1, 0, 0, 0, -1)


def centred_origin(shape: tuple[int, int, int], pixel_spacing: tuple[float, float],
                   slice_spacing: float, orientation: tuple[int, ...]) -> np.ndarray:
    """LPS position of the first voxel that puts the volume centre at (0, 0, 0).

    convkit.testing.phantoms builds its anatomy around the volume centre, so with this origin the
    phantom's millimetre coordinates are the patient (LPS) coordinates.
    """
    n, rows, cols = shape
    row_dir, col_dir = np.reshape(orientation, (2, 3)).astype(float)
    normal = np.cross(row_dir, col_dir)
    return -((cols - 1) / 2 * pixel_spacing[1] * row_dir
             + (rows - 1) / 2 * pixel_spacing[0] * col_dir
             + (n - 1) / 2 * slice_spacing * normal)


def write_chest_ct(out_dir: Path) -> None:
    """Axial chest CT: stored int16 = round(HU) + 1024, rescale intercept -1024."""
    hu = chest_ct_hu(CT_SHAPE, CT_PIXEL_SPACING, CT_SLICE_SPACING, seed=0)
    stored = (np.rint(hu) - CT_RESCALE_INTERCEPT).astype(np.int16)
    origin = centred_origin(CT_SHAPE, CT_PIXEL_SPACING, CT_SLICE_SPACING, AXIAL)
    write_series(
        out_dir,
        stored,
        regular_positions(CT_SHAPE[0], AXIAL, origin, CT_SLICE_SPACING),
        orientation=AXIAL,
        pixel_spacing=CT_PIXEL_SPACING,
        modality="CT",
        rescale_slope=1,
        rescale_intercept=CT_RESCALE_INTERCEPT,
        bits_stored=12,
        series_number=2,
        series_description="Chest CT synthetic",
        seed=1,
        shuffle_names=True,
        extra={
            "KVP": "120",
            "ConvolutionKernel": "B30f",
            "PatientPosition": "HFS",
            "BodyPartExamined": "CHEST",
            "RescaleType": "HU",
            "WindowCenter": "-600",
            "WindowWidth": "1500",
        },
    )


#: The ground-glass patches' segment: name, colour and codes (the labels file format).
GGO_LABELS = {"1": {"name": "ground-glass opacity", "color": [255, 200, 0],
                    "category": {"scheme": "SCT", "value": "49755003",
                                 "meaning": "Morphologically Altered Structure"}}}
#: Written for the SEG instead of what changes from run to run (UIDs, creation time).
SEG_FIXED = {"ContentDate": "20260101", "ContentTime": "120000", "SeriesDate": "20260101",
             "SeriesTime": "120000", "InstanceCreationDate": "20260101",
             "InstanceCreationTime": "120000"}


def write_ggo_seg(ct_dir: Path, out: Path, work: Path) -> None:
    """The chest CT's ground-glass patches as a LABELMAP SEG referencing the CT series."""
    mask = chest_ct_masks(CT_SHAPE, CT_PIXEL_SPACING, CT_SLICE_SPACING, seed=0)["ggo"]
    origin = centred_origin(CT_SHAPE, CT_PIXEL_SPACING, CT_SLICE_SPACING, AXIAL)
    affine = lps_to_ras(affine_lps(AXIAL, CT_PIXEL_SPACING, origin, (0, 0, CT_SLICE_SPACING)))
    labels = np.asfortranarray(mask.transpose(2, 1, 0).astype(np.uint8))  # (i, j, k)
    write_volume(Volume(labels, affine), work / "ggo.nii.gz")
    (work / "labels.json").write_text(json.dumps(GGO_LABELS))
    write_seg(work / "ggo.nii.gz", ct_dir, out, labels_file=work / "labels.json")
    _make_deterministic(out)


def _make_deterministic(path: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID = uid(3, "ggo-seg-series")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid(3, "ggo-seg")
    for keyword, value in SEG_FIXED.items():
        if keyword in ds:
            setattr(ds, keyword, value)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = "20260101120000"
    dimensions = uid(3, "ggo-seg-dimensions")
    for item in [*ds.DimensionOrganizationSequence, *ds.DimensionIndexSequence]:
        item.DimensionOrganizationUID = dimensions
    ds.save_as(path, enforce_file_format=True)


def write_head_mr(out_dir: Path) -> None:
    """Sagittal T1-weighted head MR, uint16 stored values, no rescale."""
    origin = centred_origin(MR_SHAPE, MR_PIXEL_SPACING, MR_SLICE_SPACING, SAGITTAL)
    write_series(
        out_dir,
        head_mr(MR_SHAPE, seed=0),
        regular_positions(MR_SHAPE[0], SAGITTAL, origin, MR_SLICE_SPACING),
        orientation=SAGITTAL,
        pixel_spacing=MR_PIXEL_SPACING,
        modality="MR",
        bits_stored=12,
        series_number=5,
        series_description="T1 sagittal synthetic",
        seed=2,
        shuffle_names=True,
        extra={
            "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
            "ScanningSequence": "SE",
            "SequenceVariant": "NONE",
            "MRAcquisitionType": "2D",
            "EchoTime": "12",
            "RepetitionTime": "500",
            "FlipAngle": "90",
            "EchoTrainLength": 1,
            "MagneticFieldStrength": "1.5",
            "ImagingFrequency": "63.87",
            "SpacingBetweenSlices": str(MR_SLICE_SPACING),
            "PatientPosition": "HFS",
            "BodyPartExamined": "HEAD",
            "WindowCenter": "500",
            "WindowWidth": "1000",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="folder to write dicom/ into (default: this script's folder)")
    dicom_dir = parser.parse_args().out / "dicom"
    if dicom_dir.exists():
        shutil.rmtree(dicom_dir)
    write_chest_ct(dicom_dir / "chest_ct")
    with tempfile.TemporaryDirectory() as work:
        write_ggo_seg(dicom_dir / "chest_ct", dicom_dir / "chest_ct_ggo.seg.dcm", Path(work))
    write_head_mr(dicom_dir / "head_mr_sagittal")
    (dicom_dir / "README.txt").write_text(
        "Synthetic sample DICOM (no patient data); see ../README.md.\n")
    print(f"wrote {dicom_dir}")


if __name__ == "__main__":
    main()
