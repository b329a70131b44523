"""The CLI end to end: exit codes, messages, output safety, --list/--json/--series."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from convkit.testing.synthetic import regular_positions, write_series


def make_ct(folder, n=5, rows=6, cols=7, seed=0, series_number=3, description="CT test"):
    stored = (np.arange(n * rows * cols, dtype=np.int16).reshape(n, rows, cols) * 3) + 100
    paths = write_series(folder, stored, regular_positions(n, spacing=2.0), rescale_intercept=-1024,
                         seed=seed, series_number=series_number, series_description=description,
                         pixel_spacing=(0.5, 0.8))
    return stored, paths


def listing(folder):
    """Every path under folder but dicom2nii's manifest (.convkit/manifest.sqlite)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if ".convkit" not in p.relative_to(folder).parts)


def test_version_and_help(cli_subprocess):
    # A real process: `python -m convkit` starts, imports its commands and exits (smoke test).
    cli = cli_subprocess
    assert cli("--version", check_code=0).stdout.startswith("convkit ")
    for command in ("dicom2nii",):
        out = cli(command, "--help", check_code=0).stdout
        assert "Usage" in out and "--format" in out


def test_bad_option_is_usage_error(cli, tmp_path):
    done = cli("dicom2nii", tmp_path, tmp_path / "out", "--format", "png", check_code=2)
    assert "unknown --format 'png'" in done.stderr and "Traceback" not in done.stderr
    done = cli("dicom2nii", tmp_path, "--bogus", check_code=2)
    assert "No such option" in done.stderr


def test_empty_folder_and_random_bytes_are_input_errors(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = cli("dicom2nii", empty, tmp_path / "out", check_code=3)
    assert "no DICOM images" in done.stderr and "Hint:" in done.stderr
    noise = tmp_path / "noise"
    noise.mkdir()
    (noise / "x.dcm").write_bytes(np.random.default_rng(1).bytes(4000))
    done = cli("dicom2nii", noise, tmp_path / "out", check_code=3)
    assert "1 not-dicom" in done.stderr
    assert not (tmp_path / "out").exists()


def test_truncated_file_fails_its_series_and_names_the_file(cli, tmp_path):
    _, paths = make_ct(tmp_path / "in")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-40])
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=3)
    report = json.loads(done.stdout)
    assert report["series"][0]["status"] == "failed"
    assert paths[2].name in report["series"][0]["reason"]
    assert "truncated pixel data" in report["series"][0]["reason"]
    fates = {r["path"]: r["status"] for r in report["files"]}
    assert fates[str(paths[2])] == "unreadable"
    assert sorted(fates.values()).count("skipped") == 4
    assert not list((tmp_path / "out").glob("*.nii.gz")) if (tmp_path / "out").exists() else True


def test_huge_header_is_refused_before_allocation(cli, tmp_path):
    _, paths = make_ct(tmp_path / "in", n=1)
    ds = pydicom.dcmread(paths[0])
    ds.Rows = ds.Columns = 65535
    ds.save_as(paths[0])
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=3)
    assert "truncated pixel data" in done.stderr and "8589672450" in done.stderr


def test_existing_output_needs_force_and_nothing_is_half_written(cli, tmp_path):
    stored, _ = make_ct(tmp_path / "in")
    out = tmp_path / "out"
    cli("dicom2nii", tmp_path / "in", out, check_code=0)
    before = (out / "3_CT_test.nii.gz").read_bytes()
    assert "up to date" in cli("dicom2nii", tmp_path / "in", out, check_code=0).stdout
    shutil.rmtree(out / ".convkit")  # outputs its manifest does not know: not replaced
    done = cli("dicom2nii", tmp_path / "in", out, check_code=5)
    assert "output exists" in done.stderr and "--force" in done.stderr
    assert (out / "3_CT_test.nii.gz").read_bytes() == before
    assert listing(out) == ["3_CT_test.json", "3_CT_test.nii.gz"]
    cli("dicom2nii", tmp_path / "in", out, "--force", check_code=0)
    assert listing(out) == ["3_CT_test.json", "3_CT_test.nii.gz"]


def test_refused_series_leaves_no_output_and_input_untouched(cli, tmp_path):
    _, paths = make_ct(tmp_path / "in", n=6)
    paths[3].unlink()  # a missing slice
    before = listing(tmp_path / "in")
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=4)
    assert "refused" in done.stdout
    assert "Refused: series 3_CT_test: uneven slice spacing" in done.stderr
    assert "Hint: --resample" in done.stderr
    assert not (tmp_path / "out").exists() or listing(tmp_path / "out") == []
    assert listing(tmp_path / "in") == before


def test_output_inside_input_is_refused(cli, tmp_path):
    make_ct(tmp_path / "in")
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "in" / "nifti", check_code=2)
    assert "inside the input folder" in done.stderr
    assert not (tmp_path / "in" / "nifti").exists()


def test_batch_with_one_refusal_is_partial(cli_subprocess, tmp_path):
    # A real process (smoke test): a conversion, its JSON on stdout, messages on stderr, exit 6.
    cli = cli_subprocess
    make_ct(tmp_path / "in" / "a", seed=1, series_number=1, description="good")
    _, paths = make_ct(tmp_path / "in" / "b", n=6, seed=2, series_number=2, description="gappy")
    paths[2].unlink()
    (tmp_path / "in" / "notes.txt").write_text("not an image\n")
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=6)
    report = json.loads(done.stdout)
    statuses = {s["label"]: s["status"] for s in report["series"]}
    assert statuses == {"1_good": "written", "2_gappy": "refused"}
    assert report["file_counts"] == {"used": 5, "refused": 5, "not-dicom": 1}
    assert len(report["files"]) == len([p for p in (tmp_path / "in").rglob("*") if p.is_file()])
    assert "Refused:" in done.stderr and "uneven slice spacing" in done.stderr
    assert listing(tmp_path / "out") == ["1_good.json", "1_good.nii.gz"]


def test_list_writes_nothing_and_series_selects(cli, tmp_path):
    make_ct(tmp_path / "in" / "a", seed=1, series_number=1, description="first")
    make_ct(tmp_path / "in" / "b", seed=2, series_number=7, description="second")
    done = cli("dicom2nii", "--list", tmp_path / "in", check_code=0)
    assert "1_first" in done.stdout and "7_second" in done.stdout
    assert not (tmp_path / "out").exists()
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--series", "7", check_code=0)
    assert listing(tmp_path / "out") == ["7_second.json", "7_second.nii.gz"]
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out2", "--series", "99", check_code=2)
    assert "matches no series" in done.stderr


def test_duplicate_files_count_once(cli, tmp_path):
    stored, paths = make_ct(tmp_path / "in")
    (tmp_path / "in" / "copy.dcm").write_bytes(paths[1].read_bytes())
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=0)
    report = json.loads(done.stdout)
    assert report["file_counts"] == {"used": 5, "duplicate": 1}
    image = nib.load(tmp_path / "out" / "3_CT_test.nii.gz")
    assert image.shape == (7, 6, 5)


def test_identifiers_stay_out_unless_asked(cli, tmp_path):
    make_ct(tmp_path / "in")
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    sidecar = json.loads((tmp_path / "out" / "3_CT_test.json").read_text())
    assert not {"PatientName", "PatientID", "PatientBirthDate"} & set(sidecar)
    raw = (tmp_path / "out" / "3_CT_test.json").read_text() + str(
        nib.load(tmp_path / "out" / "3_CT_test.nii.gz").header)
    assert "Synthetic" not in raw and "SYNTH001" not in raw and "19700101" not in raw
    cli("dicom2nii", tmp_path / "in", tmp_path / "kept", "--keep-identifiers", check_code=0)
    kept = json.loads((tmp_path / "kept" / "3_CT_test.json").read_text())
    assert kept["PatientID"] == "SYNTH001" and kept["PatientBirthDate"] == "19700101"


@pytest.mark.parametrize("fmt, files", [("nii", ["3_CT_test.json", "3_CT_test.nii"]),
                                        ("nhdr", ["3_CT_test.json", "3_CT_test.nhdr",
                                                  "3_CT_test.raw.gz"])])
def test_formats_write_complete_file_sets(cli, tmp_path, fmt, files):
    make_ct(tmp_path / "in")
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--format", fmt, "--json",
               check_code=0)
    assert listing(tmp_path / "out") == files
    assert json.loads(done.stdout)["series"][0]["outputs"] == [
        str(tmp_path / "out" / f) for f in (files[1:] + files[:1])]


def test_name_template_is_made_safe_and_unique(cli, tmp_path):
    make_ct(tmp_path / "in" / "a", seed=1, series_number=4, description="T1 / axial: post*")
    make_ct(tmp_path / "in" / "b", seed=2, series_number=4, description="T1 / axial: post*")
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--name", "{Modality}-{SeriesDescription}",
        check_code=0)
    assert listing(tmp_path / "out") == ["CT-T1_axial_post.json", "CT-T1_axial_post.nii.gz",
                                         "CT-T1_axial_post_2.json", "CT-T1_axial_post_2.nii.gz"]
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "o2", "--name", "{PatientSecret}",
               check_code=2)
    assert "unknown field" in done.stderr


def test_no_traceback_without_debug(cli_subprocess, tmp_path):
    # A real process: the error becomes the process's exit status, and no traceback reaches it.
    cli = cli_subprocess
    done = cli("dicom2nii", tmp_path / "missing", tmp_path / "out", check_code=3)
    assert "Traceback" not in done.stderr and done.stderr.startswith("Error:")


@pytest.mark.parametrize("syntax", [
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
])
def test_transfer_syntaxes_decode_to_the_stored_values(cli, tmp_path, syntax):
    # The JPEG 2000 encoder needs at least 32 pixels per side.
    stored = np.random.default_rng(5).integers(-1024, 3000, size=(3, 64, 48)).astype(np.int16)
    paths = write_series(tmp_path / "in", stored, regular_positions(3, spacing=2.0),
                         rescale_intercept=-1024, transfer_syntax=syntax)
    assert str(pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID) == syntax
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    image = nib.load(tmp_path / "out" / "1_synthetic.nii.gz")
    np.testing.assert_array_equal(np.asarray(image.dataobj.get_unscaled()),
                                  stored.transpose(2, 1, 0))


def test_the_progress_bar_starts_its_thread_at_its_first_update(monkeypatch):
    """Until the first update the command runs one thread (it may then fork its batch
    workers: processes.can_fork); the bar draws from then on, and its thread ends with it."""
    import io
    import threading

    from rich.console import Console

    from convkit.cli import progress as progress_module

    terminal = Console(file=io.StringIO(), force_terminal=True, width=80)
    monkeypatch.setattr(progress_module, "error_console", lambda: terminal)
    before = threading.active_count()
    with progress_module.progress_bar() as update:
        assert update is not None and threading.active_count() == before
        update("scan", 1, 4)
        assert threading.active_count() == before + 1  # the bar's redrawing thread
        update("scan", 4, 4)
    assert "Scanning headers" in terminal.file.getvalue()
    assert threading.active_count() == before  # its thread has ended with it
