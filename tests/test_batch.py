"""Batch conversion (convkit.batch): parallel series, the resumable manifest, kill -9 at random
points, and a real Dask cluster (scheduler + two workers started here on 127.0.0.1).

The oracles: the stored synthetic pixels (each volume's voxels, read back with nibabel), and a
clean serial run (every other run's outputs must be byte-identical to it).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from convkit.testing.synthetic import regular_positions, write_series

ENV = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHONDONTWRITEBYTECODE": "1"}
TIMEOUT = 300
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="signals and /proc: Linux")


def make_tree(root: Path, count: int, slices: int = 6, size: int = 16) -> dict[str, np.ndarray]:
    """count CT series; {label: the stored pixels (slice, row, column)}."""
    stored = {}
    for number in range(1, count + 1):
        pixels = np.random.default_rng(number).integers(0, 3000, (slices, size, size),
                                                         dtype=np.int16)
        write_series(root / f"s{number}", pixels, regular_positions(slices, spacing=2.0),
                     rescale_intercept=-1024, seed=number, series_number=number,
                     series_description=f"s{number}")
        stored[f"{number}_s{number}"] = pixels
    return stored


def visible(folder: Path) -> dict[str, bytes]:
    """{name: content} of the files that are not hidden (no staging, no manifest)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if not p.name.startswith(".")} if folder.exists() else {}


def statuses(done: subprocess.CompletedProcess) -> dict[str, str]:
    return {s["label"]: s["status"] for s in json.loads(done.stdout)["series"]}


def check_voxels(out: Path, stored: dict[str, np.ndarray]) -> None:
    """Each volume holds its series' pixels in HU (stored + intercept -1024; i = column,
    j = row, k = slice)."""
    for label, pixels in stored.items():
        data = np.asarray(nib.load(out / f"{label}.nii.gz").get_fdata())
        assert np.array_equal(data, pixels.transpose(2, 1, 0).astype(np.int64) - 1024), label


# ================================================================== parallel

def test_jobs_1_and_2_write_identical_outputs(cli, tmp_path):
    stored = make_tree(tmp_path / "in", 4)
    one = cli("dicom2nii", tmp_path / "in", tmp_path / "one", "--jobs", "1", "--json",
              check_code=0)
    two = cli("dicom2nii", tmp_path / "in", tmp_path / "two", "--jobs", "2", "--json",
              check_code=0)
    assert visible(tmp_path / "one") == visible(tmp_path / "two")
    assert len(visible(tmp_path / "one")) == 8
    check_voxels(tmp_path / "two", stored)
    first, second = json.loads(one.stdout), json.loads(two.stdout)
    assert first["series_counts"] == second["series_counts"] == {"written": 4}
    for a, b in zip(first["series"], second["series"], strict=True):  # same order and rows
        assert {**a, "outputs": [], "seconds": 0} == {**b, "outputs": [], "seconds": 0}
        assert [Path(p).name for p in a["outputs"]] == [Path(p).name for p in b["outputs"]]
        assert b["seconds"] > 0


def test_jobs_lowered_when_the_series_would_not_fit_in_memory():
    from convkit.batch.work import jobs_that_fit

    gib = 2**30
    assert jobs_that_fit(8, 3 * gib, 10 * gib) == 3
    assert jobs_that_fit(8, 30 * gib, 10 * gib) == 1
    assert jobs_that_fit(2, gib, 10 * gib) == 2
    assert jobs_that_fit(4, gib, None) == 4  # unknown memory: as asked


#: convkit's command line, with the scan's header workers used for any tree of more than
#: four files (in chunks of four), which records to PIDS the process (and its parent) that
#: read each chunk of headers and that converted each series. argv: the command's.
RECORDING_WORKERS = """
import os, sys, threading
from convkit.cli.app import main  # first: it asks for one BLAS thread (no thread of numpy's)
from convkit import dicom2nii
from convkit.dicom import scan

def record(what):
    with open(os.environ["PIDS"], "a") as pids:
        pids.write(f"{what} {os.getpid()} {os.getppid()}\\n")

read_chunk, convert_task = scan._read_chunk, dicom2nii.convert_task

def _read_chunk(texts):
    record("read")
    return read_chunk(texts)

def convert(task, progress=None):
    record("convert")
    return convert_task(task, progress)

_read_chunk.__module__ = "convkit.dicom.scan"  # pickled by name: the patched function
convert.__module__, convert.__qualname__ = "convkit.dicom2nii", "convert_task"
scan._read_chunk, dicom2nii.convert_task = _read_chunk, convert
scan.PARALLEL_MIN_FILES, scan._CHUNK = 4, 4
if os.environ.get("WITH_A_THREAD"):  # a thread running: no fork
    threading.Thread(target=threading.Event().wait, daemon=True).start()
sys.exit(main(sys.argv[1:]))
"""


def _recorded(pids: Path) -> dict[str, list[tuple[int, int]]]:
    found: dict[str, list[tuple[int, int]]] = {"read": [], "convert": []}
    for line in pids.read_text().splitlines():
        what, pid, parent = line.split()
        found[what].append((int(pid), int(parent)))
    return found


@linux_only
@pytest.mark.subprocess
def test_parallel_run_forks_its_workers_which_read_the_headers_then_convert(cli, tmp_path):
    """--jobs 2 forks its two workers before the scan: the same two processes (children of
    the command's) read the tree's headers, then convert its series; with another thread
    running, the command forks nothing (forkserver workers) and reads the headers itself.
    Either way, the outputs are those of --jobs 1."""
    stored = make_tree(tmp_path / "in", 4, slices=8)
    cli("dicom2nii", tmp_path / "in", tmp_path / "one", "--jobs", "1", check_code=0)
    for case, extra in (("forked", {}), ("threaded", {"WITH_A_THREAD": "1"})):
        pids = tmp_path / f"{case}.pids"
        done = subprocess.Popen([sys.executable, "-c", RECORDING_WORKERS, "dicom2nii",
                                 str(tmp_path / "in"), str(tmp_path / case), "--jobs", "2"],
                                env={**ENV, **extra, "PIDS": str(pids)}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, stderr = done.communicate(timeout=TIMEOUT)
        assert done.returncode == 0, stderr
        assert visible(tmp_path / case) == visible(tmp_path / "one"), case
        if case == "threaded":  # headers read here; workers from a forkserver, which
            assert not pids.exists()  # imported convkit anew: they record nothing
            continue
        found = _recorded(pids)
        readers = {pid for pid, _ in found["read"]}
        converters = {pid for pid, _ in found["convert"]}
        assert len(found["read"]) == 8  # 32 files in chunks of 4, none read here
        assert len(found["convert"]) == 4
        assert readers and converters and len(readers | converters) <= 2  # one pool of two
        assert {parent for _, parent in found["read"] + found["convert"]} == {done.pid}
    check_voxels(tmp_path / "forked", stored)


def test_a_fork_that_fails_falls_back_to_the_forkserver_workers(cli, tmp_path, monkeypatch):
    """No fork now (a process limit, no memory): the run starts its workers as it would
    with a thread running, and writes what --jobs 1 writes; not an internal error."""
    import multiprocessing.popen_fork

    from convkit import processes
    from convkit.batch import executors

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    make_tree(tmp_path / "in", 3)
    cli("dicom2nii", tmp_path / "in", tmp_path / "one", "--jobs", "1", check_code=0)
    monkeypatch.setattr(processes, "can_fork", lambda: True)
    monkeypatch.setattr(multiprocessing.popen_fork.os, "fork", no_fork)
    assert executors.LocalPool.forked_now(2) is None
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "two", "--jobs", "2", "--json",
               check_code=0)
    assert statuses(done) == {f"{n}_s{n}": "written" for n in (1, 2, 3)}
    assert visible(tmp_path / "two") == visible(tmp_path / "one")


def test_a_file_changed_after_its_headers_were_read_is_converted_again(cli, tmp_path,
                                                                        monkeypatch):
    """The manifest's fingerprint holds each file's stat as the scan found it, before
    reading it: a file rewritten after that (its new content never converted) makes its
    series convert again on the next run, not 'up to date'."""
    from convkit import dicom2nii

    make_tree(tmp_path / "in", 2)
    changed = sorted((tmp_path / "in" / "s1").iterdir())[0]
    real = dicom2nii.name_series

    def rewritten_after_the_scan(series, template):
        info = changed.stat()
        os.utime(changed, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
        return real(series, template)

    monkeypatch.setattr(dicom2nii, "name_series", rewritten_after_the_scan)
    first = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=0)
    monkeypatch.undo()
    assert statuses(first) == {"1_s1": "written", "2_s2": "written"}
    again = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=0)
    assert statuses(again) == {"1_s1": "written", "2_s2": "up to date"}


def test_the_workers_forked_for_the_scan_convert_unless_fewer_fit_in_memory(monkeypatch):
    from types import SimpleNamespace

    from convkit.batch import run
    from convkit.batch.executors import LocalPool

    items = [SimpleNamespace(converts=True, group=None)] * 3
    monkeypatch.setattr(run, "peak_bytes", lambda group, options: 2**30)
    monkeypatch.setattr(run, "source_bytes", lambda group: 2**30)
    monkeypatch.setattr(run, "available_memory", lambda: 8 * 2**30)
    started, notes = LocalPool(4), []
    assert run.choose_executor(items, 4, None, None, notes, started) is started  # 3 series
    assert started.threads == 1 and notes == []
    monkeypatch.setattr(run, "available_memory", lambda: 2 * 2**30)
    other = run.choose_executor(items, 4, None, None, notes, started)
    assert isinstance(other, LocalPool) and other is not started and other.workers == 2
    assert notes == ["2 worker processes instead of 3: the largest series needs 1.0 GiB and "
                     "2.0 GiB of memory is available"]


# ================================================================== resumable

def test_rerun_is_up_to_date_and_verified(cli, tmp_path):
    make_tree(tmp_path / "in", 3)
    out = tmp_path / "out"
    cli("dicom2nii", tmp_path / "in", out, "--jobs", "1", check_code=0)
    clean = visible(out)
    inodes = {p.name: p.stat().st_ino for p in out.iterdir()}
    again = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=0)
    assert statuses(again) == dict.fromkeys(["1_s1", "2_s2", "3_s3"], "up to date")
    assert {p.name: p.stat().st_ino for p in out.iterdir()} == inodes  # nothing rewritten
    document = json.loads(again.stdout)
    assert document["series_counts"] == {"up to date": 3} and document["exit_code"] == 0
    assert {r["status"] for r in document["files"]} == {"used"}
    # an altered output and a missing one are converted again; the rest stays
    altered = out / "2_s2.nii.gz"
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    altered.write_bytes(bytes(data))
    (out / "3_s3.json").unlink()
    redo = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=0)
    assert statuses(redo) == {"1_s1": "up to date", "2_s2": "written", "3_s3": "written"}
    assert visible(out) == clean


def test_changed_series_and_changed_options_are_converted_again(cli, tmp_path):
    stored = make_tree(tmp_path / "in", 3)
    out = tmp_path / "out"
    cli("dicom2nii", tmp_path / "in", out, check_code=0)
    # series 2 exported again with other pixels (same UIDs, same file names)
    for path in (tmp_path / "in" / "s2").iterdir():
        path.unlink()
    pixels = stored["2_s2"] + 7
    write_series(tmp_path / "in" / "s2", pixels, regular_positions(6, spacing=2.0),
                 rescale_intercept=-1024, seed=2, series_number=2, series_description="s2")
    stored["2_s2"] = pixels
    done = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=0)
    assert statuses(done) == {"1_s1": "up to date", "2_s2": "written", "3_s3": "up to date"}
    check_voxels(out, stored)
    # other options: every series again (its outputs are convkit's own: no --force needed)
    done = cli("dicom2nii", tmp_path / "in", out, "--dtype", "float32", "--json", check_code=0)
    assert set(statuses(done).values()) == {"written"}
    assert nib.load(out / "1_s1.nii.gz").get_data_dtype() == np.float32
    # --force converts even what is up to date
    done = cli("dicom2nii", tmp_path / "in", out, "--dtype", "float32", "--force", "--json",
               check_code=0)
    assert set(statuses(done).values()) == {"written"}


def test_failed_series_is_retried_only_with_retry_failed(cli, tmp_path):
    make_tree(tmp_path / "in", 2, size=16)
    big = np.zeros((40, 64, 64), dtype=np.int16) + np.arange(64, dtype=np.int16)
    write_series(tmp_path / "in" / "big", big, regular_positions(40, spacing=2.0), seed=9,
                 series_number=9, series_description="big")
    out = tmp_path / "out"
    # 64 x 64 x 40 int16 is 320 KiB: over a 200K limit, so that series fails (exit 6)
    first = cli("--max-memory", "200K", "dicom2nii", tmp_path / "in", out, "--json",
                check_code=6)
    assert statuses(first) == {"1_s1": "written", "2_s2": "written", "9_big": "failed"}
    again = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=6)
    report = json.loads(again.stdout)
    assert statuses(again) == {"1_s1": "up to date", "2_s2": "up to date", "9_big": "skipped"}
    skipped = report["series"][2]
    assert skipped["reason"].startswith("failed in an earlier run: ")
    assert "would need" in skipped["reason"] and "--retry-failed" in skipped["hint"]
    assert not (out / "9_big.nii.gz").exists()
    retried = cli("dicom2nii", tmp_path / "in", out, "--retry-failed", "--json", check_code=0)
    assert statuses(retried) == {"1_s1": "up to date", "2_s2": "up to date", "9_big": "written"}
    data = np.asarray(nib.load(out / "9_big.nii.gz").dataobj)
    assert data.shape == (64, 64, 40) and np.array_equal(data[:, 3, 5], np.arange(64))


def test_manifest_records_fingerprints_options_and_digests(cli, tmp_path):
    import hashlib

    make_tree(tmp_path / "in", 2)
    out = tmp_path / "out"
    cli("dicom2nii", tmp_path / "in", out, "--jobs", "2", check_code=0)
    db = sqlite3.connect(out / ".convkit" / "manifest.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    rows = db.execute("SELECT label, status, convkit_version, options FROM series "
                      "ORDER BY label").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("1_s1", "written"), ("2_s2", "written")]
    assert json.loads(rows[0][3])["format"] == "nii.gz"
    outputs = db.execute("SELECT path, size, sha256 FROM outputs ORDER BY path").fetchall()
    assert [o[0] for o in outputs] == ["1_s1.json", "1_s1.nii.gz", "2_s2.json", "2_s2.nii.gz"]
    for path, size, digest in outputs:
        data = (out / path).read_bytes()
        assert size == len(data) and digest == hashlib.sha256(data).hexdigest()


def test_an_output_rewritten_with_its_size_and_mtime_restored_is_redone(cli, tmp_path):
    """A rerun hashes only outputs whose stat key changed: a same-size byte flip with the
    mtime set back keeps size, mtime and inode, but not the ctime (no user can set it)."""
    make_tree(tmp_path / "in", 2)
    out = tmp_path / "out"
    cli("dicom2nii", tmp_path / "in", out, "--jobs", "1", check_code=0)
    clean = visible(out)
    db = sqlite3.connect(out / ".convkit" / "manifest.sqlite")
    keys = db.execute("SELECT path, mtime_ns, inode, ctime_ns FROM outputs").fetchall()
    db.close()
    assert {path: (os.stat(out / path).st_mtime_ns, os.stat(out / path).st_ino,
                   os.stat(out / path).st_ctime_ns) for path, *_ in keys} == \
        {path: tuple(key) for path, *key in keys}
    altered = out / "2_s2.nii.gz"
    before = altered.stat()
    time.sleep(0.05)  # past the file system clock's tick
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(altered, "r+b") as handle:  # in place: the same inode
        handle.write(data)
    os.utime(altered, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = altered.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == \
        (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns
    redo = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=0)
    assert statuses(redo) == {"1_s1": "up to date", "2_s2": "written"}
    assert visible(out) == clean


def test_rerun_reads_only_new_and_changed_input_files(cli, tmp_path):
    """The scan's facts are kept in OUT/.convkit/index.sqlite: an unchanged file is not
    opened again, a touched or new one is (the index's runs count them)."""
    stored = make_tree(tmp_path / "in", 2)
    out = tmp_path / "out"
    cli("dicom2nii", tmp_path / "in", out, "--jobs", "1", check_code=0)
    index = out / ".convkit" / "index.sqlite"

    def runs() -> list[tuple]:
        db = sqlite3.connect(index)
        try:
            return db.execute("SELECT files, files_read, files_from_index FROM runs "
                              "ORDER BY id").fetchall()
        finally:
            db.close()

    assert runs() == [(12, 12, 0)]
    again = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=0)
    assert statuses(again) == {"1_s1": "up to date", "2_s2": "up to date"}
    assert runs() == [(12, 12, 0)]  # nothing new: nothing read, nothing written
    touched = sorted((tmp_path / "in" / "s2").iterdir())[0]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    stored.update(make_tree(tmp_path / "in" / "more", 3))  # s1..s3 again: take only s3
    for number in (1, 2):
        for path in (tmp_path / "in" / "more" / f"s{number}").iterdir():
            path.unlink()
    done = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=0)
    assert statuses(done)["2_s2"] == "written"  # its files changed (an mtime)
    assert statuses(done)["3_s3"] == "written"
    assert runs()[-1] == (18, 7, 11)  # the touched file and the new series' six
    check_voxels(out, {label: stored[label] for label in ("2_s2", "3_s3")})


def _garbage_over_the_file(index: Path) -> None:
    index.write_bytes(b"not a database" * 100)


def _one_facts_blob_damaged(index: Path) -> None:
    """One byte of a stored facts blob changed: its CRC-32 no longer matches."""
    db = sqlite3.connect(index)
    path, blob = db.execute("SELECT path, facts FROM files WHERE facts IS NOT NULL "
                            "LIMIT 1").fetchone()
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0x04
    db.execute("UPDATE files SET facts = ? WHERE path = ?", (bytes(damaged), path))
    db.commit()
    db.close()


@pytest.mark.parametrize("damage", [_garbage_over_the_file, _one_facts_blob_damaged],
                         ids=["file", "facts"])
def test_a_damaged_file_facts_cache_is_made_anew(cli, tmp_path, damage):
    """Damage to OUT/.convkit/index.sqlite (the whole file, or one facts blob) costs one
    full scan: the conversion goes on, and the cache is made anew."""
    stored = make_tree(tmp_path / "in", 2)
    out = tmp_path / "out"
    cli("dicom2nii", tmp_path / "in", out, check_code=0)
    index = out / ".convkit" / "index.sqlite"
    damage(index)
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")  # the tree changed: a scan runs
    again = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=0)
    assert statuses(again) == {"1_s1": "up to date", "2_s2": "up to date"}
    db = sqlite3.connect(index)
    assert db.execute("SELECT files, files_read FROM runs").fetchall() == [(13, 13)]
    db.close()
    check_voxels(out, stored)


def test_a_manifest_of_schema_1_is_upgraded_and_still_verified(cli, tmp_path):
    make_tree(tmp_path / "in", 2)
    out = tmp_path / "out"
    cli("dicom2nii", tmp_path / "in", out, check_code=0)
    db = sqlite3.connect(out / ".convkit" / "manifest.sqlite")
    for column in ("mtime_ns", "inode", "ctime_ns", "checked_ns"):
        db.execute(f"ALTER TABLE outputs DROP COLUMN {column}")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    altered = out / "1_s1.nii.gz"
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.write_bytes(bytes(data))
    again = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=0)
    assert statuses(again) == {"1_s1": "written", "2_s2": "up to date"}
    db = sqlite3.connect(out / ".convkit" / "manifest.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    keys = db.execute("SELECT path, mtime_ns, inode, ctime_ns FROM outputs").fetchall()
    db.close()
    # the rewritten series' new outputs, and the others' verified by their hash: every
    # output has its stat key now (the next run need not hash it)
    assert len(keys) == 4
    for path, *key in keys:
        info = os.stat(out / path)
        assert tuple(key) == (info.st_mtime_ns, info.st_ino, info.st_ctime_ns), path


def test_all_refused_leaves_no_manifest(cli, tmp_path):
    pixels = np.zeros((3, 8, 8), dtype=np.int16)
    positions = regular_positions(3, spacing=2.0)
    positions[2] += [0, 0, 4.0]  # a gap: refused without --resample
    write_series(tmp_path / "in", pixels, positions, seed=1)
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=4)
    assert not (tmp_path / "out").exists()


# ================================================================== kill -9

@linux_only
@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_kill_9_at_random_points_then_rerun_gives_the_clean_outputs(tmp_path, jobs):
    make_tree(tmp_path / "in", 6, slices=20, size=96)
    command = [sys.executable, "-m", "convkit", "dicom2nii", str(tmp_path / "in")]
    clean = subprocess.run([*command, str(tmp_path / "clean"), "--jobs", "1"], env=ENV,
                           capture_output=True, text=True, timeout=TIMEOUT)
    assert clean.returncode == 0, clean.stderr
    expected = visible(tmp_path / "clean")
    started = time.monotonic()
    subprocess.run([*command, str(tmp_path / "timing"), "--jobs", jobs], env=ENV,
                   capture_output=True, timeout=TIMEOUT, check=True)
    duration = time.monotonic() - started
    for seed in range(4):
        out = tmp_path / f"out{seed}"
        delay = random.Random(seed).uniform(0.1, duration)
        process = subprocess.Popen([*command, str(out), "--jobs", jobs], env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)  # convkit and its workers, wherever they are
        process.wait()
        partial = visible(out)
        assert set(partial) <= set(expected)  # never a name that is not a final output
        for name, data in partial.items():  # and every file there is complete
            assert data == expected[name], (seed, name)
        done = subprocess.run([*command, str(out), "--jobs", jobs, "--json"], env=ENV,
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, (seed, delay, done.stderr)
        assert visible(out) == expected, (seed, delay)
        assert set(statuses(done).values()) <= {"written", "up to date"}
        final = subprocess.run([*command, str(out), "--json"], env=ENV, capture_output=True,
                               text=True, timeout=TIMEOUT)
        assert set(statuses(final).values()) == {"up to date"}, (seed, delay)


# ================================================================== Dask

def _dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("Dask distributed is missing in CI: the test extras should install it")
        pytest.skip("Dask distributed is not installed (pip install 'convkit[dask]')")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dask_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("dask")), *args]


@pytest.fixture
def dask_cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker` processes (one thread each, no nanny:
    killing a worker kills it) on 127.0.0.1; stopped at teardown."""
    _dask()
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    processes = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(_dask_command(*args), stdout=log, stderr=subprocess.STDOUT,
                                   env=ENV, start_new_session=True)
        processes.append((process, log))
        return process

    start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port),
          "--no-dashboard")
    workers = [start(f"worker{n}", "worker", address, "--nthreads", "1", "--nworkers", "1",
                     "--no-nanny", "--host", "127.0.0.1", "--no-dashboard")
               for n in (1, 2)]
    import distributed

    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for process, log in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            log.close()


@linux_only
@pytest.mark.slow
@pytest.mark.subprocess
def test_dask_cluster_writes_what_the_serial_run_writes(cli, tmp_path, dask_cluster):
    address, _ = dask_cluster
    stored = make_tree(tmp_path / "in", 5)
    cli("dicom2nii", tmp_path / "in", tmp_path / "serial", "--jobs", "1", check_code=0)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "dask", "--scheduler", address,
               "--json", check_code=0)
    assert set(statuses(done).values()) == {"written"}
    assert visible(tmp_path / "dask") == visible(tmp_path / "serial")
    check_voxels(tmp_path / "dask", stored)
    again = cli("dicom2nii", tmp_path / "in", tmp_path / "dask", "--scheduler", address,
                "--json", check_code=0)
    assert set(statuses(again).values()) == {"up to date"}


def _writing(pid: int, name: str) -> bool:
    """Whether process pid has a file named name open (its staging copy of an output)."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.endswith("/" + name) and "/.convkit-" in link for link in links)


@linux_only
@pytest.mark.slow
@pytest.mark.subprocess
def test_dask_worker_killed_mid_series_the_task_runs_elsewhere(tmp_path, dask_cluster):
    address, workers = dask_cluster
    make_tree(tmp_path / "in", 3)
    big = np.random.default_rng(7).integers(0, 4000, (160, 256, 256), dtype=np.int16)
    write_series(tmp_path / "in" / "big", big, regular_positions(160, spacing=1.0), seed=7,
                 series_number=7, series_description="big")
    command = [sys.executable, "-m", "convkit", "dicom2nii", str(tmp_path / "in")]
    serial = subprocess.run([*command, str(tmp_path / "serial"), "--jobs", "1"], env=ENV,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert serial.returncode == 0, serial.stderr
    out = tmp_path / "dask"
    process = subprocess.Popen([*command, str(out), "--scheduler", address, "--json"],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    killed = None
    end = time.monotonic() + TIMEOUT
    while killed is None and process.poll() is None and time.monotonic() < end:
        for worker in workers:
            if _writing(worker.pid, "7_big.nii.gz"):
                os.killpg(worker.pid, signal.SIGKILL)  # mid-write of the big series
                killed = worker
                break
        time.sleep(0.005)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert killed is not None, f"no worker was seen writing the big series\n{stderr}"
    assert killed.wait(10) == -signal.SIGKILL
    assert process.returncode == 0, stderr
    assert {s["label"]: s["status"] for s in json.loads(stdout)["series"]} == {
        "1_s1": "written", "2_s2": "written", "3_s3": "written", "7_big": "written"}
    assert visible(out) == visible(tmp_path / "serial")
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".convkit-")]
    assert all(re.fullmatch(r"\.convkit-[0-9a-f]{12}", name) for name in leftovers)


def test_refused_series_is_reported_refused_again_without_reading_it(cli, tmp_path):
    make_tree(tmp_path / "in", 1)
    pixels = np.zeros((3, 8, 8), dtype=np.int16)
    positions = regular_positions(3, spacing=2.0)
    positions[2] += [0, 0, 4.0]  # a gap: refused without --resample
    write_series(tmp_path / "in" / "gap", pixels, positions, seed=5, series_number=5,
                 series_description="gap")
    out = tmp_path / "out"
    first = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=6)
    assert statuses(first) == {"1_s1": "written", "5_gap": "refused"}
    again = cli("dicom2nii", tmp_path / "in", out, "--json", check_code=6)
    assert statuses(again) == {"1_s1": "up to date", "5_gap": "refused"}
    before, after = (json.loads(d.stdout)["series"][1] for d in (first, again))
    assert after["reason"] == before["reason"] and "uneven slice spacing" in after["reason"]
    assert any("refused in an earlier run" in note for note in after["notes"])
    resampled = cli("dicom2nii", tmp_path / "in", out, "--resample", "--json", check_code=0)
    assert statuses(resampled) == {"1_s1": "written", "5_gap": "written"}  # other options


def test_a_damaged_manifest_is_an_output_error(cli, tmp_path):
    make_tree(tmp_path / "in", 1)
    manifest = tmp_path / "out" / ".convkit" / "manifest.sqlite"
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(b"not a database" * 100)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=5)
    assert "manifest" in done.stderr and "Traceback" not in done.stderr
    assert visible(tmp_path / "out") == {}


WORKER_TWICE_TERMINATED = """
import os, shutil, signal, sys, time
from pathlib import Path
from convkit.batch import executors
from convkit.formats import output

executors._worker_setup()
real = shutil.rmtree

def removal_interrupted(path, *args, **named):
    os.kill(os.getpid(), signal.SIGTERM)  # the pool's second terminate(), mid clean-up
    time.sleep(0.05)
    real(path, *args, **named)

shutil.rmtree = removal_interrupted

def convert(task):
    with output.staged_files(Path(sys.argv[1])) as staging:
        (staging / "1_s1.nii.gz").write_bytes(b"part of a volume")
        os.kill(os.getpid(), signal.SIGTERM)  # the first: while converting
        time.sleep(5)

executors._worker_call(convert, None)
"""


WORKER_ABSORBS_THE_INTERRUPT = """
import os, signal, time
from convkit.batch import executors

executors._worker_setup()

def convert(task):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except KeyboardInterrupt:  # code that swallows it, and returns
        return "converted"

print(executors._worker_call(convert, None))
"""


@linux_only
def test_a_terminated_worker_ends_even_when_its_task_absorbed_the_interrupt():
    done = subprocess.run([sys.executable, "-c", WORKER_ABSORBS_THE_INTERRUPT], env=ENV,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert (done.returncode, done.stdout) == (143, ""), done.stderr


@linux_only
def test_a_worker_terminated_twice_still_removes_its_staging_folder(tmp_path):
    """When one worker ends, the process pool terminates the others once more: a worker
    whose first SIGTERM is unwinding its staging folder must finish removing it."""
    done = subprocess.run([sys.executable, "-c", WORKER_TWICE_TERMINATED, str(tmp_path)],
                          env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 143, done.stderr
    assert list(tmp_path.iterdir()) == []  # no staging folder, nothing published


@linux_only
@pytest.mark.subprocess
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_during_a_parallel_run_cleans_up_and_the_rerun_finishes(tmp_path, signum,
                                                                      code):
    series = 8  # enough that the run is still going when the first staging file appears
    make_tree(tmp_path / "in", series, slices=60, size=256)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "convkit", "dicom2nii", str(tmp_path / "in"), str(out),
               "--jobs", "2"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    end = time.monotonic() + TIMEOUT
    while process.poll() is None and time.monotonic() < end and \
            not any(out.glob(".convkit-*/*")):
        time.sleep(0.002)
    assert process.poll() is None, "the run ended before the signal could be sent"
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)  # Ctrl-C: the whole process group
    else:
        process.send_signal(signum)  # kill: convkit alone, which stops its workers
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".convkit-")]  # no staging
    done = subprocess.run([c for c in command if c != "--jobs" and c != "2"] + ["--json"],
                          env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert set(statuses(done).values()) <= {"written", "up to date"}
    assert len(visible(out)) == 2 * series


@pytest.mark.slow
def test_scheduler_local_starts_a_local_cluster_with_the_same_outputs(cli, tmp_path):
    _dask()
    stored = make_tree(tmp_path / "in", 3)
    cli("dicom2nii", tmp_path / "in", tmp_path / "serial", "--jobs", "1", check_code=0)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "local", "--scheduler", "local",
               "--jobs", "2", "--json", check_code=0)
    assert set(statuses(done).values()) == {"written"}
    assert visible(tmp_path / "local") == visible(tmp_path / "serial")
    check_voxels(tmp_path / "local", stored)


@pytest.mark.slow  # the client waits DASK_CONNECT_SECONDS
def test_unreachable_scheduler_is_a_usage_error(cli, tmp_path):
    _dask()
    make_tree(tmp_path / "in", 1)
    port = _free_port()  # nobody listens there
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out",
               "--scheduler", f"tcp://127.0.0.1:{port}", check_code=2)
    assert "cannot reach the Dask scheduler" in done.stderr and "Traceback" not in done.stderr
    assert visible(tmp_path / "out") == {}
