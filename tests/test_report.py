"""convkit report: the page's data, pictures, identifiers and outputs (the browser side is in
test_report_browser.py)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from convkit.formats import write_volume
from convkit.preview import PreviewOptions, draw_preview, plan_preview
from convkit.report import build_report
from convkit.report.model import STATUS_ORDER
from convkit.testing.synthetic import regular_positions, write_series
from convkit.volume import Volume

NO_IDENTIFIERS = {"PatientName": "", "PatientID": "", "PatientBirthDate": ""}
NAMED = {"PatientName": "Doe^Jane", "PatientID": "PID-4711", "PatientBirthDate": "19700101"}
ROWS, COLS, SLICES = 24, 32, 12


def marked_ct(n: int = SLICES) -> np.ndarray:
    """Stored values (HU + 1024): air, with bone (1000 HU) in the patient-left quarter
    (the highest columns: +x is patient left in LPS with orientation 1,0,0,0,1,0)."""
    stored = np.zeros((n, ROWS, COLS), dtype=np.int16)
    stored[:, :, COLS * 3 // 4:] = 2024
    return stored


def make_archive(root: Path, identifiers: dict | None = None) -> Path:
    """A small archive: a clean CT, a CT with a gap, a CT with a duplicate position, a
    4-slice MR, a one-slice MR, a NIfTI file, and a junk file named like DICOM."""
    ct = {"rescale_intercept": -1024.0, "rescale_slope": 1.0}
    write_series(root / "clean", marked_ct(), regular_positions(SLICES, spacing=2.0),
                 series_number=1, series_description="clean chest", seed=1,
                 extra=identifiers or NO_IDENTIFIERS, **ct)
    gap = np.delete(regular_positions(SLICES + 1, spacing=2.0), 6, axis=0)
    write_series(root / "gap", marked_ct(), gap, series_number=2,
                 series_description="gap <b>bold</b><script>alert(1)</script>", seed=2,
                 extra=NO_IDENTIFIERS, **ct)
    positions = regular_positions(5, spacing=2.0)
    write_series(root / "duplicate", marked_ct(6), np.vstack([positions, positions[2:3]]),
                 series_number=3, seed=3, extra=NO_IDENTIFIERS, **ct)
    write_series(root / "thin", marked_ct(4), regular_positions(4, spacing=4.0), modality="MR",
                 series_number=4, seed=4, extra=NO_IDENTIFIERS)
    write_series(root / "single", marked_ct(1), regular_positions(1), modality="MR",
                 series_number=5, seed=5, extra=NO_IDENTIFIERS)
    affine = np.diag([-1.5, -1.5, 3.0, 1.0])
    array = np.asfortranarray(np.arange(20 * 20 * 10, dtype=np.int16).reshape(20, 20, 10))
    (root / "volumes").mkdir()
    write_volume(Volume(array, affine), root / "volumes" / "brain.nii.gz")
    (root / "junk.dcm").write_bytes(b"not a dicom file at all" * 10)
    return root


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return make_archive(tmp_path_factory.mktemp("archive") / "in")


@pytest.fixture(scope="module")
def page(archive, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("page") / "qc.html"
    run_cli("report", archive, "-o", output, "--jobs", "2", check_code=0)
    return output, page_data(output)


def page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text,
                      re.S)
    assert found, "the page carries its data"
    return json.loads(found.group(1))


def decoded(address: str, page_path: Path) -> Image.Image:
    if address.startswith("data:"):
        header, payload = address.split(",", 1)
        assert header == "data:image/webp;base64"
        import base64

        return Image.open(io.BytesIO(base64.b64decode(payload)))
    return Image.open(page_path.parent / address)


def by_name(data: dict) -> dict[str, dict]:
    return {card["name"]: card for card in data["cards"]}


def test_one_card_per_series_and_volume_errors_first(page):
    _, data = page
    cards = by_name(data)
    assert {c["kind"] for c in data["cards"]} == {"series", "volume"}
    assert sorted(c["name"] for c in data["cards"] if c["kind"] == "volume") == [
        "volumes/brain.nii.gz"]
    assert len([c for c in data["cards"] if c["kind"] == "series"]) == 5
    ranks = [STATUS_ORDER.index(c["status"]) for c in data["cards"]]
    assert ranks == sorted(ranks), "errors first, then warnings, info, ok"
    gap = next(c for c in data["cards"] if c["description"].startswith("gap"))
    assert gap["status"] == "error"
    assert [f["code"] for f in gap["findings"]] == ["series.gap"]
    assert gap["shape"] == f"{COLS}x{ROWS}x{SLICES}"
    assert "resampled" in gap["picture_note"]
    clean = next(c for c in data["cards"] if c["description"] == "clean chest")
    assert (clean["status"], clean["modality"], clean["orientation"]) == ("ok", "CT", "LPS")
    assert clean["voxel_mm"] == "1x1x2"
    assert clean["dicom2nii"].startswith(f"3D {COLS}x{ROWS}x{SLICES}")
    assert cards["volumes/brain.nii.gz"]["shape"] == "20x20x10"
    assert cards["volumes/brain.nii.gz"]["orientation"] == "LPS"
    assert data["summary"]["series"] == 5 and data["summary"]["volumes"] == 1
    # findings on files (the junk file) are listed apart, not lost
    assert [f["code"] for f in data["loose"]] == ["file.not-dicom"]


def test_every_card_has_a_webp_thumbnail_of_its_stated_size(page):
    path, data = page
    for card in data["cards"]:
        for address, size in ((card["thumb"], card["thumb_size"]),
                              (card["full"], card["full_size"])):
            image = decoded(address, path)
            assert image.format == "WEBP"
            assert list(image.size) == size
        thumb_w, full_w = card["thumb_size"][0], card["full_size"][0]
        assert thumb_w < full_w or "no picture" in card["picture_note"]
    duplicate = next(c for c in data["cards"] if c["findings"] and c["findings"][0]["code"]
                     == "series.duplicate-position")
    assert duplicate["picture_note"].startswith("no picture:")
    assert data["summary"]["without picture"] == 1


def test_picture_is_the_preview_in_patient_orientation(page, archive):
    """The clean CT has bone in the patient-left quarter: radiological display puts it on
    the right of the axial tile (and the picture is the preview's own drawing)."""
    from convkit.preview import find_sources, load_for_preview

    path, data = page
    card = next(c for c in data["cards"] if c["description"] == "clean chest")
    picture = np.asarray(decoded(card["full"], path).convert("L"), dtype=float)
    source = find_sources(archive / "clean")[0]
    drawing = draw_preview(plan_preview(load_for_preview(source), PreviewOptions(view="ortho")))
    assert list(drawing.picture.size) == card["full_size"]
    axial = next(t for t in drawing.tiles if t.spec.plane == "axial")
    x, y, w, h = axial.box
    tile = picture[y:y + h, x:x + w]
    left, right = tile[:, : w // 2].mean(), tile[:, w - w // 5:].mean()
    # 'chest' in the description: the lung window (W 1500, L -600) shows air (-1024 HU) at
    # (-1024 - (-600 - 750)) / 1500 * 255 = 55 and bone (1000 HU) white
    assert right > 250 and abs(left - 326 / 1500 * 255) < 3, (left, right)


def test_thin_and_single_slice_series_show_their_slices(page):
    path, data = page
    thin = next(c for c in data["cards"] if c["shape"] == f"{COLS}x{ROWS}x4")
    single = next(c for c in data["cards"] if c["shape"] == f"{COLS}x{ROWS}x1")
    # 4 axial slices: a 2x2 mosaic (two rows of tiles with bone); one slice: one tile
    for card, rows_of_tiles in ((thin, 2), (single, 1)):
        image = np.asarray(decoded(card["full"], path).convert("L"))
        bone_rows = (image > 250).sum(axis=1) > 4  # text is at most 230
        starts = np.flatnonzero(np.diff(bone_rows.astype(int)) == 1)
        assert len(starts) == rows_of_tiles, card["name"]


def test_identifiers_hidden_unless_asked(tmp_path):
    archive = tmp_path / "in"
    write_series(archive / "named", marked_ct(), regular_positions(SLICES, spacing=2.0),
                 extra=NAMED, rescale_intercept=-1024.0)
    hidden, shown = tmp_path / "hidden.html", tmp_path / "shown.html"
    run_cli("report", archive, "-o", hidden, "-j", "1", check_code=0)
    run_cli("report", archive, "-o", shown, "-j", "1", "--show-identifiers", check_code=0)
    text = hidden.read_text(encoding="utf-8")
    assert "Doe^Jane" not in text and "PID-4711" not in text
    assert [c["patient"] for c in page_data(shown)["cards"]] == ["Doe^Jane PID-4711"]


def test_archive_text_cannot_become_markup(page):
    path, _ = page
    text = path.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<b>bold" not in text
    assert "gap \\u003cb>bold" in text  # kept as data, shown with textContent


def test_page_asks_for_nothing_outside_itself(page):
    path, _ = page
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert not re.search(r"https?://", text)
    assert "default-src 'none'" in text


def test_assets_folder_holds_the_pictures(archive, tmp_path):
    output, assets = tmp_path / "out" / "qc.html", tmp_path / "out" / "qc_files"
    result = run_cli("report", archive, "-o", output, "--assets", assets, "-j", "1",
                     "--json", check_code=0)
    assert json.loads(result.stdout)["assets"] == str(assets)
    data = page_data(output)
    assert "data:image" not in output.read_text(encoding="utf-8")
    files = set()
    for card in data["cards"]:
        for key in ("thumb", "full"):
            assert card[key].startswith("qc_files/")
            files.add(card[key].removeprefix("qc_files/"))
            assert decoded(card[key], output).format == "WEBP"
    assert files == {p.name for p in assets.iterdir()}
    assert output.stat().st_size < 200_000  # the pictures are beside it, not inside


def test_outputs_refused_before_any_work(archive, tmp_path):
    output = tmp_path / "qc.html"
    output.write_text("keep me")
    assert "--force" in run_cli("report", archive, "-o", output, check_code=5).stderr
    assert output.read_text() == "keep me"
    run_cli("report", archive, "-o", tmp_path / "qc.txt", check_code=2)
    run_cli("report", archive, "-o", archive / "qc.html", check_code=2)
    assert not (archive / "qc.html").exists()
    assets = tmp_path / "files"
    assets.mkdir()
    (assets / "x").write_text("x")
    run_cli("report", archive, "-o", tmp_path / "new.html", "--assets", assets, check_code=5)
    assert not (tmp_path / "new.html").exists()
    build_report(archive, output, force=True, jobs=1)
    assert output.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_corpus_volume_beside_its_series_gets_its_modality_and_findings(corpus, tmp_path):
    """dicom2nifti's ground truth beside a tilted series with a gap: the audit pairs them and
    finds the geometry differs; the volume's card carries that error and the CT modality."""
    case = corpus / "dicom" / "d2n" / "failing_sliceincrement_002"
    output = tmp_path / "case.html"
    run_cli("report", case, "-o", output, "-j", "1", check_code=0)
    cards = by_name(page_data(output))
    volume = cards["dicom2nifti_ground_truth.nii.gz"]
    assert volume["modality"] == "CT"
    assert volume["status"] == "error"
    assert "pair.geometry-mismatch" in {f["code"] for f in volume["findings"]}
    series = next(c for c in cards.values() if c["kind"] == "series")
    assert {"series.gap", "series.tilt"} <= {f["code"] for f in series["findings"]}


def test_progress_counts_every_picture(archive, tmp_path):
    calls: list[tuple[str, int, int]] = []
    result = build_report(archive, tmp_path / "qc.html", jobs=2,
                          progress=lambda stage, done, total: calls.append((stage, done, total)))
    pictures = [(done, total) for stage, done, total in calls if stage == "pictures"]
    assert pictures[0] == (0, len(result.cards)) and pictures[-1] == (len(result.cards),) * 2
    assert [done for done, _ in pictures] == sorted(done for done, _ in pictures)


def test_report_through_the_index_reads_only_what_changed(archive, tmp_path):
    """--index: the first page fills the index, the second reads no file, and both carry
    the same cards (data and pictures) as the page made without an index; after a series
    is added, only its files are read and it gets its card."""
    import shutil

    from convkit.index import audit_indexed, open_index

    tree, index = tmp_path / "tree", tmp_path / "archive.sqlite"
    shutil.copytree(archive, tree)
    build_report(tree, tmp_path / "plain.html")
    for name in ("a.html", "b.html"):
        build_report(tree, tmp_path / name, index=index)
        assert page_data(tmp_path / name)["cards"] == page_data(tmp_path / "plain.html")["cards"]
    with open_index(index) as db:
        counts = audit_indexed(tree, db, with_groups=True).index
    assert counts["files_read"] == 0 and counts["files_from_index"] > 0
    write_series(tree / "added", marked_ct(3), regular_positions(3, spacing=2.0),
                 series_number=9, series_description="added later", seed=9,
                 extra=NO_IDENTIFIERS)
    with open_index(index) as db:
        assert audit_indexed(tree, db, with_groups=True).index["files_read"] == 3
    result = build_report(tree, tmp_path / "c.html", index=index)
    cards = page_data(tmp_path / "c.html")["cards"]
    assert len(cards) == len(page_data(tmp_path / "plain.html")["cards"]) + 1
    assert any("added later" in json.dumps(card) for card in cards)
    assert len(result.cards) == len(cards)
