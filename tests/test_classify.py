"""What a file IS, and how the scan, dicom2nii and the audit account for it (issue 17).

Each class on synthetic files with known content: SOPInstanceUID conflicts (not
duplicates picked by path order), vendor private non-image objects, UIH grids,
screenshots and report pages, overlay planes, Siemens mosaics whose CSA header was
stripped. dcm2niix is the oracle where it applies (the real series beside a private
object); overlay positions are checked against hand-computed world positions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import assert_same_world, rotation, run_dcm2niix

from convkit import geometry
from convkit.dicom.header import NOT_PATIENT_IMAGE, FileStatus, _read_header, read_header
from convkit.dicom.scan import scan_folder
from convkit.testing.synthetic import (
    add_overlay,
    mark_uih_grid,
    regular_positions,
    write_private_object,
    write_screenshot,
    write_series,
)

RLE = "1.2.840.10008.1.2.5"
IMPLICIT = "1.2.840.10008.1.2"


def ct_series(folder: Path, n: int = 5, seed: int = 0, series_number: int = 1,
              **kwargs) -> list[Path]:
    """A CT series of n 6 x 8 slices with distinct values (stored = 100 * k + pixel index)."""
    stored = (np.arange(n * 6 * 8).reshape(n, 6, 8) + 100).astype(np.int16)
    return write_series(folder, stored, regular_positions(n, spacing=2.0), seed=seed,
                        series_number=series_number, **kwargs)


def give_uid_of(path: Path, original: Path) -> None:
    """Give path the SOPInstanceUID of original (pydicom's compress() makes a new one)."""
    from pydicom import dcmread

    ds, uid = dcmread(path), dcmread(original).SOPInstanceUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(path)


def files_json(out) -> dict[str, dict]:
    return {Path(f["path"]).name: f for f in json.loads(out.stdout)["files"]}


def audit_json(cli, folder: Path) -> dict:
    """The audit's JSON report of folder, checked against the published schema."""
    from test_audit import validate

    report = json.loads(cli("audit", folder, "--json").stdout)
    validate(report)
    return report


def codes(report: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for item in report["findings"]:
        found.setdefault(item["code"], []).append(item)
    return found


# --- 1. Files that share a SOPInstanceUID ---------------------------------------------------

def test_byte_identical_and_reencoded_copies_stay_duplicates(tmp_path: Path, cli) -> None:
    """A byte-identical copy, and the same instances in another transfer syntax (RLE: same
    header, same decoded pixels), are duplicates: the series is written, exit 0."""
    paths = ct_series(tmp_path / "in" / "a")
    shutil.copy(paths[0], tmp_path / "in" / "copy.dcm")
    for copy, original in zip(ct_series(tmp_path / "in" / "rle", transfer_syntax=RLE), paths,
                              strict=True):
        give_uid_of(copy, original)
    out = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=0)
    statuses = [f["status"] for f in json.loads(out.stdout)["files"]]
    assert statuses.count("duplicate") == 6 and statuses.count("used") == 5
    assert files_json(out)["copy.dcm"]["reason"] == f"same SOPInstanceUID as a/{paths[0].name}"
    assert "conflict" not in statuses


@pytest.mark.parametrize("change, said", [
    ({"series_number": 2}, "which differs in SeriesInstanceUID, SeriesNumber (2 there, 1 here)"),
    ({"pixels": "unsigned"}, "which differs in PixelRepresentation (0 there, 1 here)"),
    ({"pixels": "other"}, "which differs in pixel data"),
])
def test_differing_files_with_one_sop_instance_uid_are_a_conflict(
        tmp_path: Path, cli, change: dict, said: str) -> None:
    """A file sharing a SOPInstanceUID with another but differing in SeriesNumber, pixel
    representation or pixel data is not dropped by path order: both files are conflicts,
    every series holding one is refused (exit 4: nothing written), and the audit says so."""
    first = ct_series(tmp_path / "in" / "a")
    stored = (np.arange(6 * 8).reshape(1, 6, 8) + 100).astype(np.int16)
    if change.get("pixels") == "unsigned":
        stored = stored.astype(np.uint16)
    if change.get("pixels") == "other":
        stored = stored + 1
    # the first slice again, written with the same seed (same SOPInstanceUID), changed
    number = change.get("series_number", 1)
    other = write_series(tmp_path / "in" / "b", stored, regular_positions(1, spacing=2.0),
                         seed=0, series_number=number, shuffle_names=False,
                         slice_thickness=2.0)[0]
    give_uid_of(other, first[0])  # the same instance as slice 0 of series 1
    out = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=4)
    files = files_json(out)
    conflicts = {name: f for name, f in files.items() if f["status"] == "conflict"}
    assert set(conflicts) == {first[0].name, other.name}
    assert said in conflicts[first[0].name]["reason"]
    assert conflicts[other.name]["reason"].startswith(f"shares its SOPInstanceUID with a/"
                                                      f"{first[0].name}")
    report = json.loads(out.stdout)
    assert all(s["status"] == "refused" and "SOPInstanceUID conflict" in s["reason"]
               for s in report["series"])
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    table = cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=4)
    assert f"conflict {first[0].name}: shares its SOPInstanceUID" in table.stdout
    found = codes(audit_json(cli, tmp_path / "in"))
    assert {f["path"].rsplit("/", 1)[-1] for f in found["file.conflict"]} == set(conflicts)
    assert all(f["severity"] == "error" for f in found["file.conflict"])
    assert "file.duplicate" not in found


# --- 2. Vendor private non-image objects ----------------------------------------------------

def test_private_non_image_object_is_skipped_not_grouped(tmp_path: Path, cli,
                                                         dcm2niix: str) -> None:
    """A Philips private object (Rows/Columns, another orientation, no PixelData) in the
    series is skipped as no image: the real series is written alone, without `_ori2`, exit 0,
    and equals dcm2niix's conversion of the same folder in world space."""
    orientation = np.concatenate(rotation(10, -5, 20)[:, :2].T)
    stored = (np.arange(5 * 6 * 8).reshape(5, 6, 8) % 97).astype(np.int16)
    paths = write_series(tmp_path / "mr", stored, regular_positions(5, orientation, spacing=3),
                         orientation=orientation, modality="MR", series_number=7,
                         series_description="t1")
    private = write_private_object(tmp_path / "mr" / "XX_private", paths[0])
    outcome = read_header(private)
    assert outcome.status == FileStatus.SKIPPED
    assert outcome.reason.startswith("not an image: a private SOP class 1.3.46.670589")
    out = cli("dicom2nii", tmp_path / "mr", tmp_path / "out", "--json", check_code=0)
    report = json.loads(out.stdout)
    assert [s["label"] for s in report["series"]] == ["7_t1"]
    assert files_json(out)["XX_private"]["status"] == "skipped"
    ours = tmp_path / "out" / "7_t1.nii.gz"
    theirs = run_dcm2niix(dcm2niix, tmp_path / "mr", tmp_path / "d2n")
    assert len(theirs) == 1
    assert_same_world(ours, theirs[0])
    found = codes(audit_json(cli, tmp_path / "mr"))
    assert "series.split" not in found and "series.mixed-orientation" not in found
    assert [f["path"].rsplit("/", 1)[-1] for f in found["file.skipped"]] == ["XX_private"]


def test_image_storage_without_pixel_data_stays_unreadable(tmp_path: Path) -> None:
    """A standard image (CT Image Storage) cut before its PixelData is not 'no image': it is
    unreadable, so that its series fails instead of losing a slice."""
    path = ct_series(tmp_path, n=1)[0]
    data = path.read_bytes()
    cut = data.index(b"\xe0\x7f\x10\x00")  # the PixelData element's tag
    path.write_bytes(data[:cut])
    outcome = read_header(path)
    assert outcome.status == FileStatus.UNREADABLE
    assert outcome.reason.startswith("truncated pixel data")


# --- 3. UIH grids ---------------------------------------------------------------------------

def test_uih_grid_is_refused_as_unsupported_grid(tmp_path: Path, cli) -> None:
    paths = ct_series(tmp_path / "uih", n=3)
    for path in paths:
        mark_uih_grid(path, 16)
    out = cli("dicom2nii", tmp_path / "uih", tmp_path / "out", "--json", check_code=4)
    reason = json.loads(out.stdout)["series"][0]["reason"]
    assert "unsupported UIH grid: 16 images tiled in one" in reason
    assert "ImagePositionPatient" not in reason
    found = codes(audit_json(cli, tmp_path / "uih"))
    assert "unsupported UIH grid" in found["series.unsupported"][0]["message"]
    assert "series.no-geometry" not in found


def test_uih_file_without_grid_is_a_plain_image(tmp_path: Path, cli) -> None:
    """NumberOfImagesInGrid 1 (or none) is no grid: such files convert as usual."""
    paths = ct_series(tmp_path / "uih", n=3)
    for path in paths:
        from pydicom import dcmread

        ds = dcmread(path)
        ds.Manufacturer = "UIH"
        ds.private_block(0x0065, "Image Private Header", create=True).add_new(0x50, "DS", "1")
        ds.save_as(path)
    cli("dicom2nii", tmp_path / "uih", tmp_path / "out", check_code=0)


# --- 4. Screenshots and report pages --------------------------------------------------------

@pytest.mark.parametrize("burned_in, said", [
    ("YES", "BurnedInAnnotation YES: it carries burned-in identifying text"),
    (None, "it may carry burned-in identifying text (no BurnedInAnnotation)"),
])
def test_clean_exam_with_a_screenshot_exits_0(tmp_path: Path, cli, burned_in, said) -> None:
    """A CT series and a dose-report screenshot (RGB Secondary Capture, DERIVED\\SECONDARY,
    no patient geometry): the CT is written, the screenshot skipped as not a patient-space
    image with the burned-in note (table, --json, audit), and the run exits 0."""
    ct_series(tmp_path / "exam" / "ct", series_number=2)
    shot = write_screenshot(tmp_path / "exam" / "dose" / "page1", burned_in=burned_in)
    out = cli("dicom2nii", tmp_path / "exam", tmp_path / "out", "--json", check_code=0)
    report = json.loads(out.stdout)
    assert [s["label"] for s in report["series"]] == ["2_synthetic"]
    record = files_json(out)[shot.name]
    assert record["status"] == "skipped"
    assert record["reason"].startswith(NOT_PATIENT_IMAGE) and record["reason"].endswith(said)
    table = cli("dicom2nii", tmp_path / "exam", tmp_path / "out", "--force", check_code=0)
    assert f"skipped {shot.name}: {NOT_PATIENT_IMAGE}" in table.stdout
    listing = cli("dicom2nii", tmp_path / "exam", "--list", "--json", check_code=0)
    assert [s["label"] for s in json.loads(listing.stdout)["series"]] == ["2_synthetic"]
    audit = audit_json(cli, tmp_path / "exam")
    found = codes(audit)
    assert [f["path"].rsplit("/", 1)[-1] for f in found["file.not-patient-image"]] == ["page1"]
    assert said in found["file.not-patient-image"][0]["message"]
    assert "series.no-geometry" not in found and "file.skipped" not in found
    assert all(f["severity"] != "error" for f in audit["findings"])


def test_derived_secondary_ct_page_is_skipped_but_a_ct_without_geometry_is_refused(
        tmp_path: Path, cli) -> None:
    """The rule is the kind of image, not the lack of geometry: a CT Image Storage page with
    ImageType DERIVED\\SECONDARY is skipped; an ORIGINAL CT that lost its positions is still
    refused (no-geometry)."""
    page = write_screenshot(tmp_path / "page", secondary_capture=False, burned_in="NO")
    outcome = read_header(page)
    assert outcome.status == FileStatus.SKIPPED
    assert outcome.reason.endswith("BurnedInAnnotation NO")
    lost = ct_series(tmp_path / "lost", n=3)
    from pydicom import dcmread

    for path in lost:
        ds = dcmread(path)
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        ds.save_as(path)
    out = cli("dicom2nii", tmp_path / "lost", tmp_path / "out", "--json", check_code=4)
    assert "no patient geometry" in json.loads(out.stdout)["series"][0]["reason"]


def test_colour_secondary_capture_without_geometry_is_skipped(tmp_path: Path) -> None:
    """An RGB Secondary Capture is a screenshot even when its ImageType says ORIGINAL."""
    shot = write_screenshot(tmp_path / "shot", image_type=("ORIGINAL", "PRIMARY"))
    outcome = read_header(shot)
    assert outcome.status == FileStatus.SKIPPED
    assert outcome.reason.startswith(f"{NOT_PATIENT_IMAGE} (colour Secondary Capture")


@pytest.mark.parametrize("syntax", [None, IMPLICIT])
def test_names_come_from_the_series_own_series_number(tmp_path: Path, cli, syntax) -> None:
    """A sequence nested in the files (ReferencedSeriesSequence of another series) holds
    SeriesNumber 77: both header readers, --list and the output name take the series' own 5."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.SeriesNumber = 77
    item.SeriesInstanceUID = "1.2.3.4"
    paths = ct_series(tmp_path / "s", n=3, series_number=5, transfer_syntax=syntax,
                      extra={"ReferencedSeriesSequence": DicomSequence([item])})
    fast, full = read_header(paths[0]), _read_header(paths[0], None, None)
    assert fast[0].series_number == full[0].series_number == 5
    listing = cli("dicom2nii", tmp_path / "s", "--list", "--json", check_code=0)
    assert [s["label"] for s in json.loads(listing.stdout)["series"]] == ["5_synthetic"]
    cli("dicom2nii", tmp_path / "s", tmp_path / "out", check_code=0)
    assert (tmp_path / "out" / "5_synthetic.nii.gz").exists()


# --- 5. Overlay planes ----------------------------------------------------------------------

def overlay_series(folder: Path) -> tuple[list[Path], np.ndarray, np.ndarray, dict]:
    """An oblique MR series (4 slices of 12 x 10) with overlays on slices 1 and 2: group
    6000 (a 3 x 4 block at row 2, column 3) and group 6002 (a diagonal on slice 2, at the
    image's first pixel). Returns paths, orientation, positions and {(slice, group): bits,
    origin}."""
    orientation = np.concatenate(rotation(15, 0, 30)[:, :2].T)
    positions = regular_positions(4, orientation, origin=(10, -20, 5), spacing=2.5)
    stored = (np.arange(4 * 12 * 10).reshape(4, 12, 10) % 50).astype(np.uint16)
    paths = write_series(folder, stored, positions, orientation=orientation,
                         pixel_spacing=(0.8, 1.2), modality="MR", series_number=3,
                         series_description="ov")
    block = np.zeros((4, 5), np.uint8)
    block[1:4, 1:5] = 1
    diagonal = np.eye(6, dtype=np.uint8)
    placed = {(1, 0x6000): (block, (2, 3)), (2, 0x6000): (block, (2, 3)),
              (2, 0x6002): (diagonal, (1, 1))}
    for (k, group), (bits, origin) in placed.items():
        add_overlay(paths[k], bits, group=group, origin=origin)
    return paths, orientation, positions, placed


def test_overlays_are_reported_not_dropped(tmp_path: Path, cli) -> None:
    paths, _, _, _ = overlay_series(tmp_path / "s")
    for path, groups in ((paths[0], ()), (paths[1], (0x6000,)), (paths[2], (0x6000, 0x6002))):
        fast, full = read_header(path)[0], _read_header(path, None, None)[0]
        assert fast.overlays == full.overlays == groups  # the tag walker and pydicom
    out = cli("dicom2nii", tmp_path / "s", tmp_path / "out", "--json", check_code=0)
    notes = json.loads(out.stdout)["series"][0]["notes"]
    said = "overlay planes (60xx,3000) in 2 of 4 images: groups 6000, 6002"
    assert any(note.startswith(said) for note in notes)
    sidecar = json.loads((tmp_path / "out" / "3_ov.json").read_text())
    assert sidecar["OverlayGroups"] == ["6000", "6002"] and sidecar["OverlayImages"] == 2
    assert not (tmp_path / "out" / "3_ov_overlay.nii.gz").exists()
    table = cli("dicom2nii", tmp_path / "s", tmp_path / "out2", check_code=0)
    assert said in table.stdout
    found = codes(audit_json(cli, tmp_path / "s"))
    assert said in found["series.overlays"][0]["message"]
    clean = codes(audit_json(cli, (ct_series(tmp_path / "clean")[0]).parent))
    assert "series.overlays" not in clean


def test_overlays_label_map_at_known_world_positions(tmp_path: Path, cli) -> None:
    """--overlays writes NAME_overlay on the image grid: every overlay pixel, placed by hand
    at IPP + column * row_dir * dx + row * col_dir * dy (LPS, then RAS), holds its group's
    bit (6000 -> 1, 6002 -> 2, both -> 3); every other voxel is 0."""
    paths, orientation, positions, placed = overlay_series(tmp_path / "s")
    out = cli("dicom2nii", tmp_path / "s", tmp_path / "out", "--overlays", "--json",
              check_code=0)
    result = json.loads(out.stdout)["series"][0]
    assert str(tmp_path / "out" / "3_ov_overlay.nii.gz") in result["outputs"]
    image = nib.load(tmp_path / "out" / "3_ov_overlay.nii.gz")
    labels = np.asarray(image.dataobj)
    assert labels.shape == nib.load(tmp_path / "out" / "3_ov.nii.gz").shape
    np.testing.assert_allclose(image.affine, nib.load(tmp_path / "out" / "3_ov.nii.gz").affine)
    row_dir, col_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    expected: dict[tuple[int, int, int], int] = {}
    for (k, group), (bits, (row0, col0)) in placed.items():
        for r, c in np.argwhere(bits):
            row, col = r + row0 - 1, c + col0 - 1
            if row >= 12 or col >= 10:
                continue
            lps = positions[k] + col * 1.2 * row_dir + row * 0.8 * col_dir
            ras = geometry.lps_to_ras(np.array([[1, 0, 0, lps[0]], [0, 1, 0, lps[1]],
                                                [0, 0, 1, lps[2]], [0, 0, 0, 1.0]]))[:3, 3]
            voxel = np.linalg.solve(image.affine, np.append(ras, 1))[:3]
            index = tuple(int(v) for v in np.round(voxel))
            np.testing.assert_allclose(voxel, index, atol=1e-4)
            expected[index] = expected.get(index, 0) | (1 << ((group - 0x6000) // 2))
    assert 3 in expected.values()  # the two groups overlap somewhere
    for index, value in expected.items():
        assert labels[index] == value, index
    assert np.count_nonzero(labels) == len(expected)
    sidecar = json.loads((tmp_path / "out" / "3_ov.json").read_text())
    assert sidecar["OverlayLabelValues"] == {"6000": 1, "6002": 2}
    assert sidecar["OverlayFile"] == "3_ov_overlay"


def test_overlays_of_a_tilted_series_are_not_interpolated(tmp_path: Path, cli) -> None:
    """A gantry-tilted series is straightened: its overlays are not written (a note says
    why) rather than interpolated."""
    stored = (np.arange(4 * 6 * 8).reshape(4, 6, 8) % 50).astype(np.int16)
    positions = regular_positions(4, step=(0, 1.0, 2.0))  # sheared: tilt
    paths = write_series(tmp_path / "t", stored, positions, series_number=4)
    add_overlay(paths[0], np.ones((2, 2), np.uint8))
    out = cli("dicom2nii", tmp_path / "t", tmp_path / "out", "--overlays", "--json",
              check_code=0)
    notes = json.loads(out.stdout)["series"][0]["notes"]
    assert any(note.startswith("overlays not written: the image is resampled") for note in notes)
    assert not list((tmp_path / "out").glob("*_overlay*"))


# --- 6. Siemens mosaics whose CSA header was stripped ---------------------------------------

MOSAIC = {"ImageType": ["ORIGINAL", "PRIMARY", "M", "MOSAIC"], "Manufacturer": "SIEMENS"}


def test_mosaic_without_csa_header_says_what_is_missing(tmp_path: Path, cli) -> None:
    stored = np.zeros((1, 8, 8), np.int16)
    write_series(tmp_path / "m", stored, regular_positions(1), modality="MR", extra=MOSAIC)
    out = cli("dicom2nii", tmp_path / "m", tmp_path / "out", "--json", check_code=4)
    reason = json.loads(out.stdout)["series"][0]["reason"]
    assert "without its CSA image header (0029,xx10)" in reason
    assert "the tile count (NumberOfImagesInMosaic)" in reason
    assert "the slice normal (SliceNormalVector)" in reason
    assert "an anonymiser probably removed it" in reason
    found = codes(audit_json(cli, tmp_path / "m"))
    assert "NumberOfImagesInMosaic" in found["series.unsupported"][0]["message"]


def test_mosaic_csa_header_without_tile_count_names_it(tmp_path: Path, cli) -> None:
    from test_diffusion import csa2_header

    stored = np.zeros((1, 8, 8), np.int16)
    path = write_series(tmp_path / "m", stored, regular_positions(1), modality="MR",
                        extra=MOSAIC)[0]
    from pydicom import dcmread

    ds = dcmread(path)
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", csa2_header([("SliceNormalVector", "FD", [0.0, 0.0, 1.0])]))
    ds.save_as(path)
    out = cli("dicom2nii", tmp_path / "m", tmp_path / "out", "--json", check_code=4)
    reason = json.loads(out.stdout)["series"][0]["reason"]
    assert "CSA image header lacks the tile count (NumberOfImagesInMosaic)," in reason
    assert "SliceNormalVector" not in reason


def test_scan_counts_every_file_once(tmp_path: Path) -> None:
    """Conflicts, duplicates, skipped screenshots and private objects are each one record."""
    paths = ct_series(tmp_path / "a")
    shutil.copy(paths[1], tmp_path / "copy.dcm")
    write_screenshot(tmp_path / "shot")
    write_private_object(tmp_path / "private", paths[0])
    scan = scan_folder(tmp_path)
    assert len(scan.files) == 8 and len({r.path for r in scan.files}) == 8
    assert scan.count("used") == 5 and scan.count("duplicate") == 1
    assert scan.count("skipped") == 2


def test_exam_with_screenshot_equals_dcm2niix(tmp_path: Path, cli, dcm2niix: str) -> None:
    """Beside a screenshot, the CT convkit writes equals dcm2niix's CT in world space (dcm2niix
    also writes the screenshot, with made-up geometry: convkit skips it)."""
    orientation = np.concatenate(rotation(0, 12, 0)[:, :2].T)
    stored = (np.arange(5 * 6 * 8).reshape(5, 6, 8) % 91).astype(np.int16)
    write_series(tmp_path / "exam" / "ct", stored, regular_positions(5, orientation, spacing=2),
                 orientation=orientation, series_number=2, series_description="ct")
    write_screenshot(tmp_path / "exam" / "dose" / "page1")
    cli("dicom2nii", tmp_path / "exam", tmp_path / "out", check_code=0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()
                  if p.name != ".convkit") == ["2_ct.json", "2_ct.nii.gz"]
    theirs = run_dcm2niix(dcm2niix, tmp_path / "exam", tmp_path / "d2n")
    ct = [path for path in theirs if nib.load(path).shape == (8, 6, 5)]
    assert len(theirs) == 2 and len(ct) == 1
    assert_same_world(tmp_path / "out" / "2_ct.nii.gz", ct[0])
