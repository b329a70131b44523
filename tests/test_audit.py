"""convkit audit end to end: the CLI (main(), see conftest), on the real corpus and on synthetic
trees with known problems, each giving exactly the expected finding codes.

The corpus is copied into tmp_path (with junk files added there), never changed in place.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, run_cli

from convkit.audit.findings import CODES
from convkit.audit.report import TABLES, csv_cell
from convkit.testing.synthetic import regular_positions, uid, write_series

SCHEMA = REPO / "convkit" / "schemas" / "audit.schema.json"
NO_IDENTIFIERS = {"PatientName": "", "PatientID": "", "PatientBirthDate": ""}


def audit_json(*args) -> tuple[dict, object]:
    done = run_cli("audit", *args, "--json")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return json.loads(done.stdout), done


def audit_many(*trees: Path) -> list[dict]:
    """Audit several trees, in turn (the CLI runs in this process: one stdout for all)."""
    return [audit_json(tree)[0] for tree in trees]


def codes(report: dict) -> set[str]:
    return {f["code"] for f in report["findings"]}


def by_code(report: dict, code: str) -> list[dict]:
    return [f for f in report["findings"] if f["code"] == code]


def files_on_disk(root: Path) -> list[Path]:
    return sorted(Path(folder, name) for folder, _, names in os.walk(root) for name in names)


def validate(document: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)


def stored_values(n: int, rows: int = 12, cols: int = 10) -> np.ndarray:
    return (np.arange(n * rows * cols, dtype=np.int16).reshape(n, rows, cols) % 200) + 10


# ------------------------------------------------------------------------------------------
# The real corpus, with junk added.

D2N = Path("d2n")
FAILING_CODES = {  # what each failing case gives when audited alone (exactly)
    "failing_gantrytilting_001": {"series.tilt", "identifiers.present"},
    "failing_notavolume_001": {"series.single-position", "identifiers.present"},
    "failing_slicecount_001": {"series.two-slices", "identifiers.present"},
    "failing_sliceincrement_001": {"series.gap", "identifiers.present"},
    "failing_sliceincrement_002": {"series.gap", "series.tilt", "pair.geometry-mismatch",
                                   "nifti.units-unknown", "identifiers.present"},
    "failing_sliceorientation_001": {"series.mixed-orientation", "series.two-slices",
                                     "identifiers.present"},
}


@pytest.fixture(scope="session")
def corpus_audit(corpus, tmp_path_factory):
    """../shared/data/dicom copied, junk added, audited once with --json and --csv."""
    root = tmp_path_factory.mktemp("audit_corpus") / "dicom"
    shutil.copytree(corpus / "dicom", root)
    junk = root / "junk"
    junk.mkdir()
    (junk / "empty.dcm").write_bytes(b"")
    rng = random.Random(5)
    (junk / "random.dcm").write_bytes(b"\x8f" + bytes(rng.getrandbits(8) for _ in range(4095)))
    source = root / D2N / "failing_gantrytilting_001" / "series" / "IM-0001-0001.dcm"
    data = source.read_bytes()
    (junk / "truncated.dcm").write_bytes(data[: len(data) - 1000])
    (junk / "notes.txt").write_text("exported by hand\n")
    (junk / "moved.dcm").symlink_to(junk / "no-such-file.dcm")  # a broken link
    csv_dir = tmp_path_factory.mktemp("audit_csv") / "tables"
    done = run_cli("audit", root, "--json", "--csv", csv_dir)
    assert done.returncode == 0, done.stderr
    return root, json.loads(done.stdout), csv_dir


def test_corpus_every_file_listed_exactly_once(corpus_audit):
    root, report, _ = corpus_audit
    on_disk = files_on_disk(root)
    listed = [Path(f["path"]) for f in report["files"]]
    assert len(listed) == len(on_disk) == report["summary"]["files"]
    assert sorted(listed) == on_disk
    statuses = {Path(f["path"]).relative_to(root).as_posix(): f for f in report["files"]}
    assert statuses["junk/empty.dcm"]["status"] == "not-image"
    assert statuses["junk/empty.dcm"]["kind"] == "empty"
    assert statuses["junk/random.dcm"]["status"] == "not-image"
    assert statuses["junk/notes.txt"]["status"] == "not-image"
    assert statuses["junk/truncated.dcm"]["status"] == "unreadable"
    assert statuses["junk/truncated.dcm"]["reason"].startswith("truncated pixel data")
    assert statuses["junk/moved.dcm"]["status"] == "unreadable"
    assert statuses["junk/moved.dcm"]["reason"] == "broken symbolic link"
    # Sizes (from the scan's own reads, or stat for the rest) are the sizes on disk.
    sizes = {name: row["bytes"] for name, row in statuses.items()}
    assert sizes == {name: (None if name == "junk/moved.dcm" else (root / name).stat().st_size)
                     for name in statuses}
    assert {row["status"] for row in statuses.values()} >= {"used", "duplicate", "unreadable"}
    # Volumes (ground truths and dcm2niix references) found by content, their JSON as sidecars.
    volumes = {p for p, f in statuses.items() if f["status"] == "volume"}
    assert volumes == {p for p in statuses if p.endswith(".nii.gz")}
    assert {p for p, f in statuses.items() if f["status"] == "sidecar"} == {
        f"dcm_qa/{case}/dcm2niix_ref.json" for case in ("axasc36", "cordesc35", "sagint36")}
    counts = {}
    for f in report["files"]:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    assert report["summary"]["file_status"] == counts
    # Duplicates: each file listed with its original, one finding per folder.
    copies = [p for p, f in statuses.items() if p.startswith("multiframe/")
              and f["status"] == "duplicate"]
    assert sorted(copies) == [f"multiframe/emri_small_{v}.dcm" for v in (
        "RLE", "big_endian", "jpeg_2k_lossless", "jpeg_ls_lossless")]
    assert all(statuses[p]["reason"] == "same SOPInstanceUID as multiframe/emri_small.dcm"
               for p in copies)
    duplicate = [f for f in by_code(report, "file.duplicate") if f["path"].endswith("multiframe")]
    assert len(duplicate) == 1 and duplicate[0]["message"].startswith("4 duplicate file(s)")
    # Junk findings at the junk paths; a text file is no problem.
    where = {(f["code"], Path(f["path"]).name) for f in report["findings"] if "junk" in f["path"]}
    assert where == {("file.empty", "empty.dcm"), ("file.not-dicom", "random.dcm"),
                     ("file.truncated", "truncated.dcm"), ("file.unreadable", "moved.dcm")}


def test_schema_lists_every_finding_code():
    schema = json.loads(SCHEMA.read_text())
    enum = schema["properties"]["findings"]["items"]["properties"]["code"]["enum"]
    assert enum == sorted(CODES)


def test_corpus_errors_are_exactly_the_known_problems(corpus_audit):
    root, report, _ = corpus_audit
    series = {s["label"]: s for s in report["series"]}

    def case_of(finding: dict) -> str:
        path = finding["path"] or series[finding["series"].split(", ")[0]]["folder"]
        parts = Path(path).relative_to(root).parts
        return parts[1] if parts[0] == "d2n" and len(parts) > 1 else parts[0]

    errors = sorted((f["code"], case_of(f)) for f in report["findings"]
                    if f["severity"] == "error")
    assert errors == sorted([
        ("file.truncated", "junk"),
        ("file.unreadable", "junk"),  # the broken link
        ("pair.geometry-mismatch", "failing_sliceincrement_002"),  # another converter's stretch
        ("series.gap", "failing_sliceincrement_001"),
        ("series.gap", "failing_sliceincrement_002"),
        ("series.incomplete", "failing_gantrytilting_001"),  # the truncated copy in junk/
        ("series.mixed-orientation", "failing_sliceorientation_001"),
        ("series.no-geometry", "multiframe"),  # JPEG-LL.dcm
        ("series.no-geometry", "multiframe"),  # emri_small.dcm
        ("series.single-position", "failing_notavolume_001"),
        ("series.single-position", "multiframe"),  # MR2_J2KR + MR2_UNCI: one image, twice
        ("series.tilt", "failing_gantrytilting_001"),
        ("series.tilt", "failing_sliceincrement_002"),
        # failing_slicecount_001 is not here: its two files are the first two of
        # generic_anatomical_001 (same UIDs), so in the whole tree they complete that series.
        ("series.two-slices", "failing_sliceorientation_001"),  # each orientation: two slices
        ("series.two-slices", "failing_sliceorientation_001"),
        ("series.two-slices", "multiframe"),  # eCT_Supplemental.dcm: a 3D CT of two frames
    ])
    # Only the failing cases (and the odd multiframe samples) have errors; the clean cases
    # have nothing at error level, and their ground truths match their series
    # (dicom2nifti's and dcm2niix's, reoriented to LAS or not: compared in world space).
    for volume in report["volumes"]:
        case = Path(volume["path"]).relative_to(root).parts[1]
        if case not in FAILING_CODES:
            assert volume["pair_result"] == "match", volume


def test_corpus_failing_cases_have_their_findings(corpus_audit):
    root, report, _ = corpus_audit
    series = {s["label"]: s for s in report["series"]}

    def in_case(finding: dict, case: str) -> bool:
        folders = [finding["path"]] + [series[label]["folder"] for label in
                                       finding["series"].split(", ") if label in series]
        return any(f"/{case}/" in f + "/" for f in folders if f)

    expected = {  # failing_slicecount_001 completes another series here: see below
        "failing_gantrytilting_001": {("series.tilt", "error")},
        "failing_notavolume_001": {("series.single-position", "error")},
        "failing_sliceincrement_001": {("series.gap", "error")},
        "failing_sliceincrement_002": {("series.gap", "error"), ("series.tilt", "error"),
                                       ("pair.geometry-mismatch", "error")},
        "failing_sliceorientation_001": {("series.mixed-orientation", "error"),
                                         ("series.two-slices", "error")},
    }
    for case, wanted in expected.items():
        found = {(f["code"], f["severity"]) for f in report["findings"] if in_case(f, case)}
        assert wanted <= found, (case, found)
    tilt = next(f for f in by_code(report, "series.tilt")
                if in_case(f, "failing_gantrytilting_001"))
    assert "14.00 degrees" in tilt["message"] and "512x512 -> 512x521" in tilt["message"]
    mismatch = by_code(report, "pair.geometry-mismatch")[0]
    assert mismatch["path"].endswith("failing_sliceincrement_002/dicom2nifti_ground_truth.nii.gz")
    assert "0.778 vs 0.5117x0.5117x0.7497 mm" in mismatch["message"]  # stretched along the tilt
    gantry = next(s for s in report["series"] if s["folder"].endswith(
        "failing_gantrytilting_001/series"))
    assert gantry["dicom2nii"] == "fails: 1 unreadable file(s)"  # the truncated copy
    assert gantry["tilt_degrees"] == pytest.approx(14.0, abs=0.01)
    assert gantry["rescale_intercept"] == -1024


def test_failing_cases_alone_give_exactly_their_codes(corpus, tmp_path):
    cases = sorted(FAILING_CODES)
    for case in cases:
        shutil.copytree(corpus / "dicom" / D2N / case, tmp_path / case)
    reports = audit_many(*(tmp_path / case for case in cases))
    for case, report in zip(cases, reports, strict=True):
        assert codes(report) == FAILING_CODES[case], case
        for item in report["findings"]:
            assert item["severity"] == CODES[item["code"]].severity
        assert report["summary"]["findings"]["error"] >= 1, case  # each has its error
    alone = by_code(reports[cases.index("failing_slicecount_001")], "series.two-slices")[0]
    assert alone["severity"] == "error" and "two slices (1 mm apart)" in alone["message"]
    slicecount = reports[cases.index("failing_slicecount_001")]
    assert slicecount["volumes"][0]["pair_result"] == "match"  # its ground truth, 2 slices


def test_corpus_ground_truths_pair_with_their_series(corpus_audit):
    root, report, _ = corpus_audit
    volumes = {Path(v["path"]).relative_to(root).as_posix(): v for v in report["volumes"]}
    hitachi = volumes["d2n/hitachi_anatomical_001/dicom2nifti_ground_truth.nii.gz"]
    assert (hitachi["pair_method"], hitachi["pair_result"]) == ("geometry", "match")
    assert hitachi["orientation"] == "PIL"  # reoriented by the other converter: same world
    series = {s["label"]: s for s in report["series"]}
    assert series[hitachi["paired_series"]]["folder"].endswith("hitachi_anatomical_001/series")
    reference = volumes["dcm_qa/sagint36/dcm2niix_ref.nii.gz"]
    assert reference["pair_result"] == "match"
    assert series[reference["paired_series"]]["description"] == "sag_int_36sl"
    # dcm2niix's sidecars carry the institution: reported, not shown.
    leaks = by_code(report, "identifiers.in-volume")
    assert sorted(Path(f["path"]).relative_to(root).as_posix() for f in leaks) == [
        f"dcm_qa/{case}/dcm2niix_ref.json" for case in ("axasc36", "cordesc35", "sagint36")]
    assert all("InstitutionName" in f["message"] and "USC" not in f["message"] for f in leaks)


def test_corpus_json_validates_and_csv_matches_json(corpus_audit):
    _, report, csv_dir = corpus_audit
    validate(report)
    assert sorted(p.name for p in csv_dir.iterdir()) == sorted(f"{t}.csv" for t in TABLES)
    for table, columns in TABLES.items():
        with open(csv_dir / f"{table}.csv", newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            assert tuple(reader.fieldnames) == columns
            rows = list(reader)
        assert len(rows) == len(report[table]) > 0
        for row, expected in zip(rows, report[table], strict=True):
            assert row == {key: csv_cell(expected[key]) for key in columns}
    # And pandas-style typing survives: numbers parse back to the JSON values.
    with open(csv_dir / "series.csv", newline="") as handle:
        first = next(csv.DictReader(handle))
    assert float(first["rescale_slope"]) == report["series"][0]["rescale_slope"]


def test_identifiers_hidden_unless_asked(corpus, tmp_path):
    case = tmp_path / "case"
    shutil.copytree(corpus / "dicom" / "dcm_qa" / "axasc36", case)
    plain, shown = audit_json(case)[0], audit_json(case, "--show-identifiers")[0]
    assert plain["series"][0]["patient_name"] is None and plain["series"][0]["series_uid"] is None
    assert shown["series"][0]["patient_name"] == "stc_test"
    assert shown["series"][0]["patient_id"] == "crlab"
    assert "stc_test" not in json.dumps(plain)
    table = run_cli("audit", case, check_code=0).stdout
    assert "stc_test" not in table and "PatientName, PatientID, PatientBirthDate" in table


# ------------------------------------------------------------------------------------------
# Synthetic trees with known problems: exactly the expected codes.


def make_trees(root: Path) -> dict[str, Path]:
    trees = {}

    def tree(name: str) -> Path:
        trees[name] = root / name
        return trees[name]

    n = 6
    write_series(tree("tilt") / "ct", stored_values(n),
                 regular_positions(n, spacing=2.0, step=(0.0, 0.6, 2.0)), extra=NO_IDENTIFIERS,
                 seed=11)
    gap = np.delete(regular_positions(7, spacing=3.0), 4, axis=0)
    write_series(tree("gap") / "ct", stored_values(6), gap, extra=NO_IDENTIFIERS, seed=12)
    positions = regular_positions(5, spacing=2.0)
    write_series(tree("duplicate") / "ct", stored_values(6), np.vstack([positions,
                                                                        positions[2:3]]),
                 extra=NO_IDENTIFIERS, seed=13)
    axial = tree("mixed") / "mr"
    write_series(axial, stored_values(4), regular_positions(4, spacing=4.0), modality="MR",
                 extra=NO_IDENTIFIERS, seed=14)
    sagittal = (0, 1, 0, 0, 0, -1)
    write_series(axial, stored_values(4), regular_positions(4, sagittal, spacing=4.0),
                 orientation=sagittal, modality="MR", seed=15,
                 extra={**NO_IDENTIFIERS, "SeriesInstanceUID": uid(14, 1, "series"),
                        "StudyInstanceUID": uid(14, "study")})
    both = tree("two_series") / "export"
    write_series(both, stored_values(4), regular_positions(4, spacing=2.0), series_number=1,
                 extra=NO_IDENTIFIERS, seed=16)
    write_series(both, stored_values(5), regular_positions(5, spacing=2.5), series_number=2,
                 extra=NO_IDENTIFIERS, seed=17)
    return trees


def test_synthetic_series_problems_give_exactly_their_codes(tmp_path):
    trees = make_trees(tmp_path)
    expected = {"tilt": {"series.tilt"}, "gap": {"series.gap"},
                "duplicate": {"series.duplicate-position"},
                "mixed": {"series.mixed-orientation"},
                "two_series": {"folder.multiple-series"}}
    reports = dict(zip(trees, audit_many(*trees.values()), strict=True))
    for name, report in reports.items():
        assert codes(report) == expected[name], (name, report["findings"])
        validate(report)
    tilt = reports["tilt"]["series"][0]
    assert tilt["tilt_degrees"] == pytest.approx(np.degrees(np.arctan2(0.6, 2.0)), abs=1e-3)
    assert tilt["status"] == "ok" and tilt["dicom2nii"].endswith("tilt-corrected")
    gap = reports["gap"]["series"][0]
    assert (gap["status"], gap["slice_spacing_min"], gap["slice_spacing_max"]) == ("refused",
                                                                                   3.0, 6.0)
    assert "--resample" in by_code(reports["gap"], "series.gap")[0]["hint"]
    assert reports["duplicate"]["series"][0]["dicom2nii"] == "refused (duplicate-position)"
    mixed = reports["mixed"]["series"]
    assert len(mixed) == 2 and {s["orientation"] for s in mixed} == {"LPS", "PIR"}
    two = by_code(reports["two_series"], "folder.multiple-series")[0]
    assert two["path"].endswith("two_series/export") and "2 series" in two["message"]


def nifti(path: Path, data: np.ndarray, affine: np.ndarray, qform: np.ndarray | None = None,
          descrip: bytes = b"") -> Path:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine if qform is None else qform, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = descrip
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def test_nifti_checked_against_its_source_series(tmp_path):
    from convkit.dicom2nii import convert_folder

    root = tmp_path / "study"
    write_series(root / "dicom", stored_values(5), regular_positions(5, spacing=2.5),
                 pixel_spacing=(0.8, 0.7), extra=NO_IDENTIFIERS, seed=21)
    convert_folder(root / "dicom", tmp_path / "converted")
    written = next((tmp_path / "converted").glob("*.nii.gz"))
    sidecar = written.with_name(written.name.replace(".nii.gz", ".json"))
    good = root / "nifti" / "good.nii.gz"
    good.parent.mkdir()
    shutil.copy(written, good)
    shutil.copy(sidecar, good.with_name("good.json"))
    image = nib.load(str(written))
    shifted = image.affine.copy()
    shifted[:3, 3] += [0.0, 3.0, 0.0]  # the affine of another image, or a mistake
    bad = nifti(root / "nifti" / "bad.nii.gz", np.asanyarray(image.dataobj), shifted)
    shutil.copy(sidecar, bad.with_name("bad.json"))
    flipped = image.affine.copy()
    flipped[:3, 0] *= -1  # an axis flipped in the affine (no sidecar: paired by geometry)
    nifti(root / "flipped.nii.gz", np.asanyarray(image.dataobj), flipped)
    reoriented = nib.as_closest_canonical(image)  # RAS: the same world, other array order
    nifti(root / "derived" / "ras.nii.gz", np.asanyarray(reoriented.dataobj), reoriented.affine)
    report = audit_json(root)[0]
    validate(report)
    assert codes(report) == {"pair.geometry-mismatch"}
    volumes = {Path(v["path"]).name: v for v in report["volumes"]}
    assert (volumes["good.nii.gz"]["pair_method"], volumes["good.nii.gz"]["pair_result"]) == (
        "sidecar", "match")
    assert (volumes["bad.nii.gz"]["pair_method"], volumes["bad.nii.gz"]["pair_result"]) == (
        "sidecar", "mismatch")
    assert volumes["flipped.nii.gz"]["pair_method"] == "geometry"
    assert volumes["flipped.nii.gz"]["pair_result"] == "mismatch"
    assert volumes["ras.nii.gz"]["pair_result"] == "match"
    assert volumes["ras.nii.gz"]["orientation"] == "RAS"
    mismatches = {Path(f["path"]).name: f["message"] for f in
                  by_code(report, "pair.geometry-mismatch")}
    assert set(mismatches) == {"bad.nii.gz", "flipped.nii.gz"}
    assert "first voxel 3 mm away" in mismatches["bad.nii.gz"]
    assert "first voxel 6.3 mm away" in mismatches["flipped.nii.gz"]  # mirrored in x
    assert {f["series"] for f in report["findings"]} == {report["series"][0]["label"]}


def test_volume_problems_give_exactly_their_codes(tmp_path):
    import nrrd

    data = np.arange(8 * 9 * 4, dtype=np.int16).reshape(8, 9, 4)
    affine = np.diag([0.9, 0.9, 2.0, 1.0])
    trees = {name: tmp_path / name for name in ("qs", "truncated", "sheared", "nogeo",
                                                "missing", "identifying")}
    qform = affine.copy()
    qform[:3, 3] = [4.0, 0.0, 0.0]
    nifti(trees["qs"] / "ambiguous.nii.gz", data, affine, qform=qform)
    full = nifti(trees["truncated"] / "cut.nii.gz", data, affine)
    raw = full.read_bytes()
    full.write_bytes(raw[: len(raw) // 2])
    sheared = affine.copy()
    sheared[1, 2] = 0.5  # slices drift along y: gantry tilt kept in the sform
    image = nib.Nifti1Image(data, sheared)
    image.set_sform(sheared, code=1)
    image.header.set_xyzt_units("mm", "sec")
    trees["sheared"].mkdir()
    nib.save(image, str(trees["sheared"] / "tilted.nii"))
    plain = nib.Nifti1Image(data, affine)
    plain.header.set_xyzt_units("mm")
    plain.set_qform(None, code=0)
    plain.set_sform(None, code=0)
    trees["nogeo"].mkdir()
    nib.save(plain, str(trees["nogeo"] / "volume.nii"))
    (trees["nogeo"] / "volume.nii").rename(trees["nogeo"] / "volume.bin")  # NIfTI by content
    trees["missing"].mkdir()
    (trees["missing"] / "detached.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 8 9 4\n"
        "space directions: (0.9,0,0) (0,0.9,0) (0,0,2)\nencoding: raw\nendian: little\n"
        "data file: detached.raw\n")
    write_series(trees["identifying"] / "dicom", stored_values(3), regular_positions(3), seed=31)
    nifti(trees["identifying"] / "named.nii.gz", data, affine, descrip=b"Doe^Jane 19800101")
    nrrd.write(str(trees["identifying"] / "keys.nrrd"), data,
               {"space": "left-posterior-superior", "space directions": affine[:3, :3],
                "space origin": np.zeros(3), "PatientName": "Doe^Jane"})
    reports = dict(zip(trees, audit_many(*trees.values()), strict=True))
    expected = {"qs": {"nifti.qform-sform-mismatch"}, "truncated": {"volume.truncated"},
                "sheared": {"nifti.sheared"}, "nogeo": {"volume.no-geometry"},
                "missing": {"volume.data-missing"},
                "identifying": {"identifiers.present", "identifiers.in-volume"}}
    for name, report in reports.items():
        assert codes(report) == expected[name], (name, report["findings"])
        validate(report)
    cut = reports["truncated"]["volumes"][0]
    assert cut["status"] == "unreadable" and cut["size_check"].startswith("truncated (")
    assert cut["expected_bytes"] == 352 + data.nbytes and 0 < cut["found_bytes"] < data.nbytes
    assert reports["truncated"]["files"][0]["status"] == "unreadable"
    ambiguous = by_code(reports["qs"], "nifti.qform-sform-mismatch")[0]
    assert "differ by up to 4 mm" in ambiguous["message"]
    nogeo = reports["nogeo"]["volumes"][0]
    assert (nogeo["format"], nogeo["shape"], nogeo["qform_code"]) == ("NIfTI-1", "8x9x4", 0)
    leaks = {Path(f["path"]).name: f["message"] for f in
             by_code(reports["identifying"], "identifiers.in-volume")}
    assert set(leaks) == {"named.nii.gz", "keys.nrrd"}
    assert "a person name" in leaks["named.nii.gz"] and "a date" in leaks["named.nii.gz"]
    assert "PatientName:=" in leaks["keys.nrrd"] and "Jane" not in json.dumps(
        reports["identifying"])
    present = by_code(reports["identifying"], "identifiers.present")[0]
    assert "PatientName, PatientID, PatientBirthDate" in present["message"]


# ------------------------------------------------------------------------------------------
# Exit codes, single-file mode, output safety.


def test_fail_on_and_exit_codes(tmp_path, cli):
    write_series(tmp_path / "tilt", stored_values(4),
                 regular_positions(4, spacing=2.0, step=(0.0, 0.5, 2.0)), extra=NO_IDENTIFIERS)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    qform = affine.copy()
    qform[:3, 3] = [4.0, 0.0, 0.0]
    nifti(tmp_path / "ambiguous" / "qs.nii.gz", np.zeros((4, 4, 3), np.int16), affine, qform)
    assert cli("audit", tmp_path / "tilt").returncode == 0  # findings alone never fail
    assert cli("audit", tmp_path / "tilt", "--fail-on", "error").returncode == 1  # series.tilt
    assert cli("audit", tmp_path / "ambiguous", "--fail-on", "error").returncode == 0  # warning
    assert cli("audit", tmp_path / "ambiguous", "--fail-on", "warning").returncode == 1
    assert cli("audit", tmp_path / "ambiguous", "--fail-on", "info").returncode == 1
    done = cli("audit", tmp_path / "tilt", "--fail-on", "bad", check_code=2)
    assert "--fail-on must be one of info, warning, error" in done.stderr
    done = cli("audit", tmp_path / "nowhere", check_code=3)
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "empty").mkdir()
    assert "holds no files" in cli("audit", tmp_path / "empty", check_code=3).stderr
    cli("audit", tmp_path / "tilt", "--csv", tmp_path / "tables", check_code=0)
    done = cli("audit", tmp_path / "tilt", "--csv", tmp_path / "tables", check_code=5)
    assert "use --force" in done.stderr
    cli("audit", tmp_path / "tilt", "--csv", tmp_path / "tables", "--force", check_code=0)
    help_text = cli("audit", "--help", check_code=0).stdout
    assert "--fail-on" in help_text and "--show-identifiers" in help_text


def test_single_file_prints_its_header(corpus, tmp_path, cli):
    source = corpus / "dicom" / D2N / "failing_gantrytilting_001" / "series" / "IM-0001-0001.dcm"
    done = cli("audit", source, check_code=0)
    assert "Header of" in done.stdout and "SOMATOM Definition AS" in done.stdout
    assert "(present, hidden: --show-identifiers)" in done.stdout
    assert "dicom2nifti" not in done.stdout  # the patient name of this file
    report, _ = audit_json(source)
    validate(report)
    assert report["mode"] == "file" and len(report["files"]) == 1
    assert report["header"]["RescaleIntercept"] == -1024.0
    assert report["header"]["orientation"] == "LPS"
    shown, _ = audit_json(source, "--show-identifiers")
    assert shown["header"]["PatientName"] == "dicom2nifti"
    volume = nifti(tmp_path / "v.nii.gz", np.zeros((4, 5, 6), np.int16), np.diag([1, 2, 3, 1.0]))
    report, _ = audit_json(volume)
    header = nib.load(str(volume)).header
    assert report["header"]["dim"] == [int(v) for v in header["dim"]]
    assert report["header"]["qform_code"] == 1 and report["header"]["sform_code"] == 1
    assert report["header"]["orientation"] == "RAS" and report["findings"] == []


def test_volume_size_checks(tmp_path):
    """The gzip trailer shortcut, and the full count when it disagrees (two members)."""
    from convkit.audit.volumes import data_size

    payload = bytes(range(256)) * 100
    whole = tmp_path / "one.gz"
    whole.write_bytes(gzip.compress(payload))
    assert data_size(whole, 0, len(payload), "gzip").status == "ok"
    two = tmp_path / "two.gz"
    two.write_bytes(gzip.compress(payload[:1000]) + gzip.compress(payload[1000:]))
    check = data_size(two, 0, len(payload), "gzip")
    assert (check.status, check.found) == ("ok", len(payload))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(payload)[:60])
    check = data_size(cut, 0, len(payload), "gzip")
    assert check.status == "truncated" and check.found < len(payload)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(payload[:100])
    assert data_size(raw, 0, 150, None).text == "truncated (100 of 150 bytes)"


@pytest.mark.subprocess
def test_a_named_pipe_is_accounted_for_and_never_opened(tmp_path):
    """Opening a FIFO waits for a writer forever: it is listed, reported, and skipped, and
    both audit and dicom2nii finish (they used to hang)."""
    # Real processes, on purpose: a regression is a hang, which only a subprocess's timeout
    # turns into a failure (in the test process it would hang the whole run).
    tree = tmp_path / "tree"
    write_series(tree, stored_values(3), regular_positions(3, spacing=2.0), extra=NO_IDENTIFIERS)
    os.mkfifo(tree / "pipe.dcm")
    command = [sys.executable, "-m", "convkit"]
    done = subprocess.run([*command, "audit", tree, "--json"], capture_output=True, text=True,
                          timeout=60)
    report = json.loads(done.stdout)
    (pipe,) = [row for row in report["files"] if row["path"].endswith("pipe.dcm")]
    assert (pipe["status"], pipe["bytes"]) == ("skipped", None)
    assert "not a regular file" in pipe["reason"]
    assert codes(report) == {"file.special"} and report["summary"]["files"] == 4
    validate(report)
    done = subprocess.run([*command, "dicom2nii", tree, tmp_path / "out", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    converted = json.loads(done.stdout)
    assert [s["status"] for s in converted["series"]] == ["written"]
    assert {f["path"].endswith("pipe.dcm") for f in converted["files"]
            if f["status"] == "not-dicom"} == {True}
