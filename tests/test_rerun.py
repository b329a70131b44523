"""An unchanged rerun (convkit.batch.rerun): the report of the normal path, printed without
numpy, pydicom or nibabel; any change, added or removed file, other option or doubt takes
the normal path.

The oracles: the normal path's own output for the same rerun (its snapshot removed from the
manifest, so that it runs), and which modules the real process imported: the normal path
needs numpy, the fast one must not load it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convkit.batch.manifest import open_manifest
from convkit.batch.run import one_run
from convkit.testing.synthetic import regular_positions, write_series

#: Every test runs the real command line in a fresh interpreter (what it imports is measured).
pytestmark = pytest.mark.subprocess

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
#: The real CLI in a fresh process; its last stderr line lists the heavy modules it loaded.
PROBE = """
import json, sys
from convkit.cli.app import main
code = main(sys.argv[1:])
heavy = ("numpy", "pydicom", "nibabel")
sys.stderr.write("\\nLOADED " + json.dumps(sorted(m for m in heavy if m in sys.modules)) + "\\n")
sys.exit(code)
"""


def convkit(*args: object) -> tuple[subprocess.CompletedProcess, list[str]]:
    """(the finished process, the heavy modules it imported)."""
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    loaded = json.loads(done.stderr.rsplit("LOADED ", 1)[1])
    return done, loaded


def make_tree(root: Path, count: int = 3) -> None:
    for number in range(1, count + 1):
        pixels = np.random.default_rng(number).integers(0, 3000, (5, 12, 12), dtype=np.int16)
        write_series(root / f"s{number}", pixels, regular_positions(5, spacing=2.0),
                     rescale_intercept=-1024, seed=number, series_number=number,
                     series_description=f"s{number}")
    (root / "README.txt").write_text("not DICOM")  # listed as a file of the report too


def forget_snapshot(out: Path) -> None:
    """What any run does first: the next rerun takes the normal path."""
    db = sqlite3.connect(out / ".convkit" / "manifest.sqlite")
    with db:
        db.execute("DELETE FROM meta WHERE key = 'rerun'")
    db.close()


def statuses(done: subprocess.CompletedProcess) -> dict[str, str]:
    return {s["label"]: s["status"] for s in json.loads(done.stdout)["series"]}


@pytest.fixture
def converted(tmp_path) -> tuple[Path, Path]:
    make_tree(tmp_path / "in")
    first, loaded = convkit("dicom2nii", tmp_path / "in", tmp_path / "out", "--jobs", "1")
    assert first.returncode == 0, first.stderr
    assert "numpy" in loaded  # the normal path: the probe sees what a conversion imports
    return tmp_path / "in", tmp_path / "out"


@pytest.mark.parametrize("form", [["--json"], []], ids=["json", "table"])
def test_unchanged_rerun_prints_the_normal_report_without_numpy(converted, form):
    tree, out = converted
    fast, loaded = convkit("dicom2nii", tree, out, *form)
    assert (fast.returncode, loaded) == (0, [])
    forget_snapshot(out)
    normal, loaded = convkit("dicom2nii", tree, out, *form)
    assert normal.returncode == 0 and "numpy" in loaded
    assert fast.stdout == normal.stdout  # seconds included: 0 for a series up to date
    if form:
        document = json.loads(fast.stdout)
        assert document["series_counts"] == {"up to date": 3}
        assert document["file_counts"] == {"used": 15, "not-dicom": 1}
        assert all(Path(p).is_file() for s in document["series"] for p in s["outputs"])
    # the normal path left a snapshot again: the next rerun is fast
    assert convkit("dicom2nii", tree, out, *form)[1] == []


def test_the_rerun_after_an_up_to_date_normal_run_is_fast_again(converted):
    tree, out = converted
    forget_snapshot(out)
    convkit("dicom2nii", tree, out)
    again, loaded = convkit("dicom2nii", tree, out, "--json")
    assert loaded == [] and statuses(again) == dict.fromkeys(("1_s1", "2_s2", "3_s3"),
                                                              "up to date")


def touch_input(tree: Path, out: Path) -> str:
    path = sorted((tree / "s2").iterdir())[0]
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    return "2_s2"


def rewrite_input_keeping_mtime(tree: Path, out: Path) -> str:
    """The same bytes written again and its mtime set back: only the ctime tells."""
    path = sorted((tree / "s3").iterdir())[0]
    info = path.stat()
    path.write_bytes(path.read_bytes())
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    return ""


def add_file(tree: Path, out: Path) -> str:
    (tree / "s1" / "notes.txt").write_text("added")
    return ""


def remove_file(tree: Path, out: Path) -> str:
    (tree / "README.txt").unlink()
    return ""


def remove_output(tree: Path, out: Path) -> str:
    (out / "1_s1.nii.gz").unlink()
    return "1_s1"


def rewrite_output_keeping_size_and_mtime(tree: Path, out: Path) -> str:
    path = out / "3_s3.json"
    info = path.stat()
    text = path.read_bytes()
    path.write_bytes(text[:-2] + b" \n" if text.endswith(b"\n") else text)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_size == info.st_size
    return "3_s3"


def link_in_tree(tree: Path, out: Path) -> str:
    (tree / "link.txt").symlink_to(tree / "README.txt")
    return ""


@pytest.mark.parametrize("change", [touch_input, rewrite_input_keeping_mtime, add_file,
                                    remove_file, remove_output,
                                    rewrite_output_keeping_size_and_mtime, link_in_tree])
def test_any_change_takes_the_normal_path(converted, change):
    tree, out = converted
    redone = change(tree, out)
    done, loaded = convkit("dicom2nii", tree, out, "--json")
    assert done.returncode == 0, done.stderr
    assert "numpy" in loaded
    expected = dict.fromkeys(("1_s1", "2_s2", "3_s3"), "up to date")
    if redone:
        expected[redone] = "written"
    assert statuses(done) == expected


@pytest.mark.parametrize("options", [["--format", "nii"], ["--dtype", "float32"],
                                     ["--name", "{SeriesNumber}"], ["--series", "2"],
                                     ["--retry-failed"], ["--force"]])
def test_other_options_take_the_normal_path(converted, options):
    tree, out = converted
    done, loaded = convkit("dicom2nii", tree, out, *options, "--json")
    assert done.returncode == 0, done.stderr
    assert "numpy" in loaded


def test_the_same_relative_paths_from_another_folder_are_another_request(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    make_tree(first / "in")
    make_tree(second / "in", 2)  # another tree under the same relative name
    (second / "out").symlink_to(first / "out")  # and the same output folder
    for cwd, expected in ((first, {"1_s1": "written", "2_s2": "written", "3_s3": "written"}),
                          (first, {"1_s1": "up to date", "2_s2": "up to date",
                                   "3_s3": "up to date"}),
                          (second, {"1_s1": "written", "2_s2": "written"})):
        done = subprocess.run([sys.executable, "-c", PROBE, "dicom2nii", "in", "out", "--json"],
                              env=ENV, capture_output=True, text=True, cwd=cwd, timeout=300)
        assert statuses(done) == expected, done.stderr
    # the last run: the normal path (numpy loaded): the second tree's files, two series
    assert "numpy" in json.loads(done.stderr.rsplit("LOADED ", 1)[1])


def test_a_run_forgets_the_snapshot_before_it_changes_anything(converted):
    tree, out = converted
    with open_manifest(out) as manifest:
        assert manifest.rerun() is not None
    with one_run(out) as manifest:
        assert manifest.rerun() is None
    with open_manifest(out) as manifest:
        assert manifest.rerun() is None


def test_a_run_with_a_refused_series_leaves_no_snapshot(tmp_path):
    make_tree(tmp_path / "in", 2)
    broken = sorted((tmp_path / "in" / "s2").iterdir())[2]
    broken.write_bytes(broken.read_bytes()[:400])  # cut: a slice missing from the series
    done, _ = convkit("dicom2nii", tmp_path / "in", tmp_path / "out", "--json")
    assert done.returncode == 6 and statuses(done) == {"1_s1": "written", "2_s2": "refused"}
    with open_manifest(tmp_path / "out") as manifest:
        assert manifest.rerun() is None
    assert convkit("dicom2nii", tmp_path / "in", tmp_path / "out", "--json")[1] != []
