"""The archive index (convkit audit --index, convkit index): same answers, fewer reads, safe.

The oracle is the audit without an index: an audit through a cold index, a warm index and
no index must give the same JSON and CSV (apart from the index counts), on the real corpus
and on synthetic trees after files are touched, rewritten, deleted and added. The counts
must name exactly the files that changed. Safety: kill -9 at random points of an indexing
run in a real process, two writers at once, corrupt / foreign / crafted / old index files.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from convkit.index.db import APPLICATION_ID, SCHEMA_VERSION
from convkit.testing.synthetic import regular_positions, write_series
from tests.conftest import CLI_ENV

README = Path(__file__).resolve().parents[1] / "README.md"
NO_IDENTIFIERS = {"PatientName": "", "PatientID": "", "PatientBirthDate": ""}


def stored_values(n: int, rows: int = 8, cols: int = 8) -> np.ndarray:
    return (np.arange(n * rows * cols, dtype=np.int16).reshape(n, rows, cols) % 500)


def audit_json(cli, path: Path, *extra: object) -> dict:
    done = cli("audit", path, "--json", *extra, check_code=0)
    return json.loads(done.stdout)


def without_counts(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "index"}


def csv_tables(cli, path: Path, folder: Path, *extra: object) -> dict[str, str]:
    cli("audit", path, "--json", "--csv", folder, *extra, check_code=0)
    return {name.name: name.read_text() for name in sorted(folder.iterdir())}


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and mtime: what 'nothing written there' means."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file()}


def synthetic_tree(root: Path) -> Path:
    """Two CT series, an MR series with a patient name, a NIfTI volume with its sidecar, a
    detached NRRD header with its data file, and a junk file."""
    write_series(root / "ct1", stored_values(6), regular_positions(6, spacing=2.0),
                 series_number=1, series_description="ct one", seed=1, extra=NO_IDENTIFIERS)
    write_series(root / "ct2", stored_values(5), regular_positions(5, spacing=3.0),
                 series_number=2, series_description="ct two", seed=2, extra=NO_IDENTIFIERS)
    write_series(root / "mr", stored_values(4), regular_positions(4, spacing=4.0),
                 modality="MR", series_number=3, series_description="mr", seed=3,
                 extra={"PatientName": "Doe^Jane", "PatientID": "123"})
    image = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]))
    image.header.set_xyzt_units("mm")
    (root / "vol").mkdir()
    nib.save(image, str(root / "vol" / "scan.nii.gz"))
    (root / "vol" / "scan.json").write_text(json.dumps({"SeriesDescription": "x"}))
    (root / "vol" / "detached.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 4 5 6\n"
        "space directions: (1,0,0) (0,1,0) (0,0,1)\nencoding: raw\nendian: little\n"
        "data file: detached.raw\n")
    (root / "vol" / "detached.raw").write_bytes(bytes(4 * 5 * 6 * 2))
    (root / "notes.txt").write_text("not an image\n")
    return root


def middle_slice(folder: Path) -> Path:
    """The file of the middle slice (names are shuffled): removing it leaves a gap."""
    import pydicom

    slices = sorted(folder.iterdir(), key=lambda p: float(
        pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    return slices[len(slices) // 2]


def same_with_index(cli, tree: Path, db: Path) -> dict:
    """The audit through the index equals the audit without one; returns the counts."""
    indexed = audit_json(cli, tree, "--index", db)
    plain = audit_json(cli, tree)
    assert without_counts(indexed) == plain
    return indexed["index"]


# ------------------------------------------------------------------------------------------
# Same answers


def test_corpus_cold_warm_and_no_index_agree(cli, corpus, tmp_path):
    root = corpus / "dicom"
    before = listing(root)
    db = tmp_path / "corpus.sqlite"
    plain = audit_json(cli, root)
    cold = audit_json(cli, root, "--index", db)
    warm = audit_json(cli, root, "--index", db)
    assert without_counts(cold) == plain and without_counts(warm) == plain
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[1] / "convkit" / "schemas" /
                         "audit.schema.json").read_text())
    for document in (cold, warm):
        jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    files = plain["summary"]["files"]
    assert cold["index"]["files_read"] == files and cold["index"]["files_from_index"] == 0
    assert warm["index"]["files_read"] == 0 and warm["index"]["files_from_index"] == files
    # CSV too, and the warm CSV comes from the stored report
    tables = [csv_tables(cli, root, tmp_path / name, *extra) for name, extra in
              (("plain", ()), ("warm", ("--index", db)))]
    assert tables[0] == tables[1]
    assert listing(root) == before  # nothing written into the audited tree
    with sqlite3.connect(db) as con:
        indexed = con.execute("SELECT count(*) FROM files WHERE path LIKE ?",
                              (f"{root}/%",)).fetchone()[0]
        images = con.execute("SELECT count(*) FROM headers").fetchone()[0]
    assert indexed == files
    assert images >= plain["summary"]["file_status"]["used"]


def headers_table(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT * FROM headers ORDER BY path, frame").fetchall()


def test_header_workers_give_the_index_what_a_serial_scan_gives(cli, tmp_path, monkeypatch):
    """A tree scanned by header worker processes is stored from the fields the workers sent
    (not made again from the headers): the same `headers` rows and the same facts as a scan
    in the process, and a warm audit from them equals the audit without an index."""
    from convkit.dicom import scan

    tree = synthetic_tree(tmp_path / "tree")
    write_series(tree / "ct1_copy", stored_values(6), regular_positions(6, spacing=2.0),
                 series_number=1, series_description="ct one", seed=1, extra=NO_IDENTIFIERS)
    plain = audit_json(cli, tree)
    serial, parallel = tmp_path / "serial.sqlite", tmp_path / "parallel.sqlite"
    assert without_counts(audit_json(cli, tree, "--index", serial, "--jobs", "1")) == plain
    monkeypatch.setattr(scan, "PARALLEL_MIN_FILES", 4)  # workers even for this small tree
    received = []  # what the workers sent back (the parallel path only)
    real = scan._received
    monkeypatch.setattr(scan, "_received", lambda chunk, sent: received.extend(sent) or
                        real(chunk, sent))
    cold = audit_json(cli, tree, "--index", parallel, "--jobs", "2")
    assert len(received) == len(listing(tree))
    assert without_counts(cold) == plain and cold["index"]["files_read"] == len(listing(tree))
    assert headers_table(parallel) == headers_table(serial) != []
    with sqlite3.connect(serial) as one, sqlite3.connect(parallel) as other:
        facts = [dict(con.execute("SELECT path, facts FROM files")) for con in (one, other)]
    from convkit.index.facts import load_facts

    assert facts[0].keys() == facts[1].keys()
    loaded = [load_facts([blobs[path] for path in sorted(facts[0])]) for blobs in facts]
    assert [sorted(item) for item in loaded[0]] == [sorted(item) for item in loaded[1]]
    assert [item["scan"] for item in loaded[0]] == [item["scan"] for item in loaded[1]]
    (tree / "notes.txt").write_text("changed\n")  # not the stored report: facts are loaded
    warm = audit_json(cli, tree, "--index", parallel, "--jobs", "2")
    assert without_counts(warm) == audit_json(cli, tree)
    assert warm["index"]["files_read"] == 1
    for path in (tree / "ct1").iterdir():  # read again by the workers: rows replaced, once
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    received.clear()
    again = audit_json(cli, tree, "--index", parallel, "--jobs", "2")
    assert len(received) == 6 and again["index"]["files_read"] == 6
    assert without_counts(again) == audit_json(cli, tree)
    fresh = tmp_path / "fresh.sqlite"
    audit_json(cli, tree, "--index", fresh, "--jobs", "1")
    assert headers_table(parallel) == headers_table(fresh)


def test_a_new_index_has_16_kib_pages_an_older_file_keeps_its_own(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    new, old = tmp_path / "new.sqlite", tmp_path / "old.sqlite"
    with sqlite3.connect(old) as con:  # an empty file made with SQLite's default pages
        con.execute("PRAGMA page_size = 4096")
        con.execute("VACUUM")
    for db in (new, old):
        assert same_with_index(cli, tree, db)["files_read"] == len(listing(tree))
        assert same_with_index(cli, tree, db)["files_read"] == 0
    sizes = []
    for db in (new, old):
        with sqlite3.connect(db) as con:
            sizes.append(con.execute("PRAGMA page_size").fetchone()[0])
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sizes == [16384, 4096]
    assert headers_table(new) == headers_table(old)


def test_changes_are_found_and_only_they_are_read(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    total = len(listing(tree))
    counts = same_with_index(cli, tree, db)
    assert counts == {"path": str(db), "files_read": total, "files_from_index": 0,
                      "files_removed": 0}
    assert same_with_index(cli, tree, db)["files_read"] == 0

    ct1 = sorted((tree / "ct1").iterdir())
    os.utime(ct1[0])  # touched: read again, same answer
    counts = same_with_index(cli, tree, db)
    assert (counts["files_read"], counts["files_from_index"]) == (1, total - 1)

    middle_slice(tree / "ct1").unlink()  # a slice gone: a gap in ct1
    counts = same_with_index(cli, tree, db)
    assert (counts["files_read"], counts["files_removed"]) == (0, 1)
    assert "series.gap" in {f["code"] for f in audit_json(cli, tree)["findings"]}

    write_series(tree / "new", stored_values(3), regular_positions(3), series_number=9,
                 series_description="added", seed=9, extra=NO_IDENTIFIERS)
    (tree / "vol" / "detached.raw").write_bytes(bytes(10))  # the NRRD's data cut short
    counts = same_with_index(cli, tree, db)
    assert counts["files_read"] == 4  # three new slices and the data file
    report = audit_json(cli, tree)
    assert "volume.truncated" in {f["code"] for f in report["findings"]}
    assert any(row["description"] == "added" for row in report["series"])


def test_same_size_rewrite_with_restored_mtime_is_found(cli, tmp_path):
    """A rewrite that keeps size and mtime (a copy tool restoring times) changes ctime."""
    tree = tmp_path / "tree"
    write_series(tree, stored_values(4), regular_positions(4), seed=5, extra=NO_IDENTIFIERS)
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    target = sorted(tree.iterdir())[0]
    status = target.stat()
    data = bytearray(target.read_bytes())
    description = data.find(b"synthetic")
    data[description:description + 9] = b"SYNTHETIC"
    time.sleep(0.01)
    target.write_bytes(bytes(data))
    os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert target.stat().st_size == status.st_size
    counts = same_with_index(cli, tree, db)
    assert counts["files_read"] == 1


def test_json_sidecar_and_nifti_changes(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    (tree / "vol" / "scan.json").write_text(json.dumps({"PatientName": "Doe^John"}))
    same_with_index(cli, tree, db)
    codes = {f["code"] for f in audit_json(cli, tree)["findings"]}
    assert "identifiers.in-volume" in codes
    (tree / "vol" / "scan.json").unlink()
    same_with_index(cli, tree, db)


def test_single_file_and_relative_root(cli, tmp_path, monkeypatch):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    one = sorted((tree / "ct1").iterdir())[0]
    same_with_index(cli, one, db)
    same_with_index(cli, one, db)
    monkeypatch.chdir(tmp_path)
    same_with_index(cli, Path("tree"), db)
    assert same_with_index(cli, Path("tree"), db)["files_read"] == 0
    assert same_with_index(cli, tree, db)["files_read"] == 0  # absolute: the same files


def test_one_index_for_a_tree_and_a_folder_inside_it(cli, tmp_path):
    """A change seen by the audit of an inner folder (a file gone) is not hidden from the
    next audit of the whole tree by the whole tree's stored report."""
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    middle_slice(tree / "ct1").unlink()
    assert same_with_index(cli, tree / "ct1", db)["files_removed"] == 1
    counts = same_with_index(cli, tree, db)  # every file unchanged since the inner audit
    assert counts["files_read"] == 0
    assert same_with_index(cli, tree, db)["files_read"] == 0


def test_index_command_builds_what_audit_reuses(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    done = cli("index", tree, "--db", db, "--json", check_code=0)
    counts = json.loads(done.stdout)
    total = len(listing(tree))
    assert counts["files_read"] == total and counts["files"] == total
    assert same_with_index(cli, tree, db)["files_read"] == 0
    text = cli("index", tree, "--db", db, check_code=0).stdout
    assert f"0 read, {total} from the index" in text


# ------------------------------------------------------------------------------------------
# Safe


def test_corrupt_and_foreign_files_are_refused_with_a_hint(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    done = cli("audit", tree, "--index", corrupt, check_code=5)
    assert "cannot be read" in done.stderr and "--rebuild" in done.stderr
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE patients (name TEXT)")
    before = foreign.read_bytes()
    done = cli("audit", tree, "--index", foreign, check_code=5)
    assert "not a convkit index" in done.stderr and "--rebuild" in done.stderr
    assert foreign.read_bytes() == before  # refused files are left alone
    rebuilt = audit_json(cli, tree, "--index", corrupt, "--rebuild")
    assert without_counts(rebuilt) == audit_json(cli, tree)
    assert same_with_index(cli, tree, corrupt)["files_read"] == 0


def test_damaged_index_pages_are_an_error_not_a_wrong_answer(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the file's page size (its header says)
    assert page == 16384
    for start in range(page, len(data), page):  # every page after the first
        data[start:start + 64] = os.urandom(64)
    db.write_bytes(bytes(data))
    done = cli("audit", tree, "--index", db, "--json")
    assert done.returncode == 5, done.stderr
    assert "--rebuild" in done.stderr


def test_crafted_pickle_is_refused_and_never_run(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    from convkit.index.facts import seal

    crafted = pickle.dumps(Payload(), 3)
    # sealed as convkit seals facts, the unpickler refuses it; without the seal, the seal does
    for blob, why in ((seal(crafted), "is not a class the index stores"), (crafted, "CRC-32")):
        with sqlite3.connect(db) as con:
            con.execute("UPDATE files SET facts = ?", (blob,))
            con.execute("DELETE FROM reports")
        done = cli("audit", tree, "--index", db, check_code=5)
        assert "damaged file facts" in done.stderr and "--rebuild" in done.stderr
        assert why in done.stderr, done.stderr
        assert not marker.exists()


def test_a_byte_damaged_in_stored_facts_is_an_error_never_another_answer(cli, tmp_path):
    """SQLite checks its pages' structure, not the values in them: one byte of a stored
    position changed on disk would be read as another geometry. Each facts blob carries
    its CRC-32: the audit refuses the index (exit 5, --rebuild), and --rebuild gives the
    audit without an index again."""
    import dataclasses
    import struct

    from convkit.dicom.header import SliceHeader
    from convkit.index.facts import load_facts

    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    with sqlite3.connect(db) as con:
        path, blob = con.execute("SELECT path, facts FROM files WHERE path LIKE ? LIMIT 1",
                                 (f"{tree}/ct1/%",)).fetchone()
    at = [f.name for f in dataclasses.fields(SliceHeader)][1:].index("position")
    z = load_facts([blob])[0]["scan"][0][at][2]
    damaged = bytearray(blob)
    start = bytes(damaged).index(struct.pack(">d", z))  # pickle stores floats big-endian
    damaged[start + 1] ^= 0x01  # one bit of the slice position
    unsealed = pickle.loads(bytes(damaged[:-4]))  # read without the seal: another position
    assert unsealed["scan"][0][at][2] != z
    with sqlite3.connect(db) as con:
        con.execute("UPDATE files SET facts = ? WHERE path = ?", (bytes(damaged), path))
    (tree / "notes.txt").write_text("changed\n")  # not the stored report: facts are loaded
    done = cli("audit", tree, "--index", db, "--json", check_code=5)
    assert "damaged file facts" in done.stderr and "--rebuild" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    rebuilt = audit_json(cli, tree, "--index", db, "--rebuild")
    assert without_counts(rebuilt) == audit_json(cli, tree)


def test_a_damaged_stored_report_is_an_error_with_a_hint(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    with sqlite3.connect(db) as con:
        report = bytearray(con.execute("SELECT report FROM reports").fetchone()[0])
        report[len(report) // 2] ^= 0x40
        con.execute("UPDATE reports SET report = ?", (bytes(report),))
    done = cli("audit", tree, "--index", db, "--json", check_code=5)  # unchanged: the report
    assert "damaged report" in done.stderr and "--rebuild" in done.stderr
    assert "Traceback" not in done.stderr


def test_older_schema_is_rebuilt_newer_refused(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    with sqlite3.connect(db) as con:  # an older layout of the same application
        con.execute("DROP TABLE headers")
        con.execute("CREATE TABLE headers (path TEXT, something_else TEXT)")
        con.execute("PRAGMA user_version = 0")
    counts = same_with_index(cli, tree, db)
    assert counts["files_read"] == len(listing(tree))  # rebuilt, every file read again
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        columns = {row[1] for row in con.execute("PRAGMA table_info(headers)")}
        assert "sop_instance_uid" in columns and "something_else" not in columns
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    done = cli("audit", tree, "--index", db, check_code=5)
    assert "newer convkit" in done.stderr


def test_facts_of_another_convkit_are_read_again(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value = '0.0.1:old' WHERE key = 'facts'")
    assert same_with_index(cli, tree, db)["files_read"] == len(listing(tree))
    assert same_with_index(cli, tree, db)["files_read"] == 0


def test_a_second_writer_waits_then_fails_with_exit_5(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    os.utime(sorted((tree / "ct2").iterdir())[0])  # something to write
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer, mid-transaction
    try:
        done = cli("audit", tree, "--index", db, "--wait", "0.2", check_code=5)
        assert "busy" in done.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert same_with_index(cli, tree, db)["files_read"] == 1


@pytest.mark.slow
def test_two_audits_at_once_never_corrupt(tmp_path, cli_subprocess):
    tree = synthetic_tree(tmp_path / "tree")
    for number in range(4):
        write_series(tree / f"more{number}", stored_values(40), regular_positions(40),
                     series_number=20 + number, seed=20 + number, extra=NO_IDENTIFIERS)
    db = tmp_path / "index.sqlite"
    env = {**os.environ, **CLI_ENV}
    command = [sys.executable, "-m", "convkit", "audit", str(tree), "--json", "--index", str(db)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    plain = json.loads(cli_subprocess("audit", tree, "--json", check_code=0).stdout)
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode in (0, 5), err
        if run.returncode == 0:
            assert without_counts(json.loads(out)) == plain
        else:
            assert "busy" in err
    assert 0 in [run.returncode for run in runs]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    indexed = json.loads(cli_subprocess("audit", tree, "--json", "--index", db,
                                        check_code=0).stdout)
    assert without_counts(indexed) == plain and indexed["index"]["files_read"] == 0


@pytest.mark.slow
def test_kill_9_at_random_points_leaves_a_consistent_index(tmp_path, cli_subprocess):
    """An indexing run killed anywhere leaves the previous index: the next audit through it
    gives the same answer as a clean audit, and the database passes integrity_check."""
    tree = synthetic_tree(tmp_path / "tree")
    for number in range(6):
        write_series(tree / f"bulk{number}", stored_values(60), regular_positions(60),
                     series_number=30 + number, seed=30 + number, extra=NO_IDENTIFIERS)
    db = tmp_path / "index.sqlite"
    env = {**os.environ, **CLI_ENV}
    command = [sys.executable, "-m", "convkit", "index", str(tree), "--db", str(db), "--json"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    full = time.perf_counter() - started
    rng = random.Random(13)
    files = sorted(p for p in tree.rglob("*") if p.is_file() and p.parent.name.startswith("bulk"))
    killed = 0
    for _ in range(8):
        for path in rng.sample(files, 25):  # changes for the killed run to find
            os.utime(path)
        (tree / "bulk0" / f"extra{rng.randrange(10**6)}.txt").write_text("x")
        with sqlite3.connect(db) as con:  # facts of "another convkit": every file is read
            con.execute("UPDATE meta SET value = 'old' WHERE key = 'facts'")  # and rewritten
        run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 1.1) * full)
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            killed += 1
        run.wait(timeout=300)
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert killed >= 3  # most runs were really interrupted
    plain = json.loads(cli_subprocess("audit", tree, "--json", check_code=0).stdout)
    indexed = json.loads(cli_subprocess("audit", tree, "--json", "--index", db,
                                        check_code=0).stdout)
    assert without_counts(indexed) == plain


def test_never_writes_inside_the_tree(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    before = listing(tree)
    folders_before = sorted(str(p) for p in tree.rglob("*"))
    db = tmp_path / "elsewhere" / "index.sqlite"
    db.parent.mkdir()
    same_with_index(cli, tree, db)
    same_with_index(cli, tree, db)
    assert listing(tree) == before
    assert sorted(str(p) for p in tree.rglob("*")) == folders_before


# ------------------------------------------------------------------------------------------
# Queryable: the README's queries, run as a data manager would


def readme_queries() -> dict[str, str]:
    """The SQL blocks of README.md's "Archive index" section, by the heading above each."""
    text = README.read_text()
    section = text[text.index("## Archive index"):]
    section = section[:section.index("\n## ", 5)]
    found = re.findall(r"\*\*(.+?)\*\*.*?```sql\n(.*?)```", section, re.DOTALL)
    return {title: sql for title, sql in found}


def test_readme_queries_answer_the_questions(cli, tmp_path):
    tree = synthetic_tree(tmp_path / "tree")
    middle_slice(tree / "ct1").unlink()  # a gap: an error in "ct one"
    db = tmp_path / "index.sqlite"
    report = audit_json(cli, tree, "--index", db)
    queries = readme_queries()
    assert len(queries) == 3, queries
    results = {}
    with sqlite3.connect(db) as con:
        for title, sql in queries.items():
            results[title] = con.execute(sql).fetchall()
    by_modality, with_errors, identifying = results.values()
    expected: dict[tuple, int] = {}
    for row in report["series"]:
        key = (row["modality"], row["manufacturer"])
        expected[key] = expected.get(key, 0) + 1
    assert {(row[0], row[1]): row[2] for row in by_modality} == expected
    error_series = {f["series"] for f in report["findings"] if f["severity"] == "error"
                    and f["series"]}
    assert {row[1] for row in with_errors} == error_series
    assert any("ct one" in row[2] for row in with_errors)
    mr_files = {str(p) for p in (tree / "mr").iterdir()}
    assert {row[0] for row in identifying} == mr_files
    shell = shutil.which("sqlite3")
    if shell:  # the same queries in the sqlite3 shell
        for sql in queries.values():
            done = subprocess.run([shell, str(db)], input=sql, capture_output=True, text=True,
                                  check=True)
            assert done.stderr == ""


# ------------------------------------------------------------------------------------------
# Same answers where the index keeps results across files (duplicates, series, sidecars)


def rewrite(path: Path, target: Path | None = None, **changes: object) -> Path:
    """path's dataset with attributes changed (keyword=value; PixelOffset adds to every
    stored value) written to target (default: in place, a new inode and new times)."""
    import pydicom

    dataset = pydicom.dcmread(path)
    offset = changes.pop("PixelOffset", None)
    for keyword, value in changes.items():
        setattr(dataset, keyword, value)
    if offset is not None:
        dataset.PixelData = (dataset.pixel_array + offset).astype(
            dataset.pixel_array.dtype).tobytes()
    target = target or path
    fresh = target.with_name(target.name + ".new")
    dataset.save_as(fresh)
    time.sleep(0.01)  # a new ctime even on coarse clocks
    os.replace(fresh, target)
    return target


def status_of(document: dict, path: Path) -> tuple[str, str]:
    row = next(row for row in document["files"] if row["path"] == str(path))
    return row["status"], row["reason"]


def test_corpus_partial_reaudit_agrees(cli, corpus, tmp_path):
    """A re-audit that reads a few files and takes the rest (every kind of header the corpus
    holds: diffusion, mosaic, multi-frame, compressed copies of one instance) from the index."""
    tree = tmp_path / "dicom"
    shutil.copytree(corpus / "dicom", tree)
    db = tmp_path / "corpus.sqlite"
    same_with_index(cli, tree, db)
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    for path in random.Random(13).sample(files, 12):
        os.utime(path, ns=(time.time_ns(), time.time_ns()))
    counts = same_with_index(cli, tree, db)
    assert (counts["files_read"], counts["files_from_index"]) == (12, len(files) - 12)
    files[0].unlink()
    assert same_with_index(cli, tree, db)["files_removed"] == 1


def test_duplicates_and_conflicts_follow_every_change(cli, tmp_path):
    """Which copy of a SOPInstanceUID is kept and whether copies differ depends on other
    files: a new copy, a changed original under an unchanged copy, the kept copy deleted."""
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    original = sorted((tree / "ct1").iterdir())[0]
    (tree / "zz").mkdir()
    copy = tree / "zz" / original.name
    shutil.copyfile(original, copy)  # a new file with an instance the index knows
    assert same_with_index(cli, tree, db)["files_read"] == 1
    assert status_of(audit_json(cli, tree), copy)[0] == "duplicate"

    rewrite(original, PixelOffset=1)  # the kept copy changed, its copy did not
    assert same_with_index(cli, tree, db)["files_read"] == 1
    assert status_of(audit_json(cli, tree), copy)[0] == "conflict"
    rewrite(original, PixelOffset=-1)  # the same pixels again: a copy again
    same_with_index(cli, tree, db)
    assert status_of(audit_json(cli, tree), copy)[0] == "duplicate"

    rewrite(copy, PixelOffset=1)  # now the copy differs, the original is unchanged
    same_with_index(cli, tree, db)
    assert status_of(audit_json(cli, tree), original)[0] == "conflict"
    original.unlink()  # the kept version gone: the other one is the series' slice
    counts = same_with_index(cli, tree, db)
    assert (counts["files_read"], counts["files_removed"]) == (0, 1)
    assert status_of(audit_json(cli, tree), copy)[0] == "used"


def test_a_file_that_moves_to_another_series(cli, tmp_path):
    """A slice rewritten with another series' UID (and back): both series change."""
    tree = synthetic_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    import pydicom

    other = pydicom.dcmread(next((tree / "ct2").iterdir()), stop_before_pixels=True)
    moved = middle_slice(tree / "ct1")
    uid = pydicom.dcmread(moved, stop_before_pixels=True).SeriesInstanceUID
    rewrite(moved, SeriesInstanceUID=other.SeriesInstanceUID, SeriesNumber=2,
            SeriesDescription="ct two")
    assert same_with_index(cli, tree, db)["files_read"] == 1
    rewrite(moved, SeriesInstanceUID=uid, SeriesNumber=1, SeriesDescription="ct one")
    same_with_index(cli, tree, db)
    (tree / "vol" / "scan.json").write_text(json.dumps({"SeriesInstanceUID": uid}))
    same_with_index(cli, tree, db)  # a sidecar edited beside an unchanged volume


# ------------------------------------------------------------------------------------------
# A re-audit settles the copies of untouched instances from the last report (they are not
# loaded): each way a change reaches other files must still give the audit's answer.


def copied_tree(root: Path) -> Path:
    """synthetic_tree plus a copy of ct1 and of ct2 in zz/ (later in path order: the copies
    are the duplicates)."""
    synthetic_tree(root)
    for name in ("ct1", "ct2"):
        shutil.copytree(root / name, root / "zz" / name)
    return root


def duplicates(document: dict) -> dict[str, str]:
    return {row["path"]: row["reason"] for row in document["files"]
            if row["status"] == "duplicate"}


def codes_of(document: dict) -> set[str]:
    return {item["code"] for item in document["findings"]}


def series_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def test_untouched_copies_are_settled_without_loading_their_facts(cli, tmp_path):
    """The facts of a copy whose instance no change touches are never loaded (a damaged
    blob there goes unnoticed); a change to its original makes them needed (and read)."""
    tree = copied_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    copy = sorted((tree / "zz" / "ct1").iterdir())[0]
    original = tree / "ct1" / copy.name
    with sqlite3.connect(db) as con:
        con.execute("UPDATE files SET facts = ? WHERE path = ?", (b"\x00damaged", str(copy)))
    os.utime(sorted((tree / "ct2").iterdir())[0])  # another instance changed
    counts = same_with_index(cli, tree, db)
    assert (counts["files_read"], counts["files_from_index"]) == (1, len(listing(tree)) - 1)
    os.utime(original)  # the copy's own instance: its facts are loaded now
    done = cli("audit", tree, "--json", "--index", db, check_code=None)
    assert done.returncode != 0 and "damaged" in done.stderr
    assert "--rebuild" in done.stderr


def test_a_slice_moved_to_another_series_turns_its_copy_into_a_conflict(cli, tmp_path):
    tree = copied_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    plain = audit_json(cli, tree)
    assert len(duplicates(plain)) == 11  # 6 + 5 copies
    same_with_index(cli, tree, db)
    moved = middle_slice(tree / "ct1")
    rewrite(moved, SeriesInstanceUID=series_uid(next((tree / "ct2").iterdir())),
            SeriesNumber=2, SeriesDescription="ct two")
    assert same_with_index(cli, tree, db)["files_read"] == 1
    document = audit_json(cli, tree)
    copy = tree / "zz" / "ct1" / moved.name
    assert status_of(document, copy)[0] == "conflict"
    assert status_of(document, moved)[0] == "conflict"
    assert len(duplicates(document)) == 10


def test_a_new_file_with_an_instance_of_another_series(cli, tmp_path):
    """A new file holding the SOPInstanceUID of a ct2 slice (whose copy is settled) but the
    MR's SeriesInstanceUID: every file of that instance is a conflict now."""
    tree = copied_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    source = sorted((tree / "ct2").iterdir())[0]
    (tree / "extra").mkdir()
    new = rewrite(source, tree / "extra" / "x.dcm",
                  SeriesInstanceUID=series_uid(next((tree / "mr").iterdir())))
    assert same_with_index(cli, tree, db)["files_read"] == 1
    document = audit_json(cli, tree)
    copy = tree / "zz" / "ct2" / source.name
    assert status_of(document, source)[0] == status_of(document, new)[0] == "conflict"
    assert status_of(document, copy) == ("duplicate",
                                         f"same SOPInstanceUID as ct2/{source.name}")
    new.unlink()  # gone again: the first file is used, its copy a copy
    same_with_index(cli, tree, db)
    document = audit_json(cli, tree)
    assert status_of(document, source)[0] == "used"
    assert status_of(document, copy)[0] == "duplicate"
    (tree / "aa").mkdir()  # a new copy first in path order: the one the others copy
    shutil.copyfile(source, tree / "aa" / source.name)
    assert same_with_index(cli, tree, db)["files_read"] == 1
    document = audit_json(cli, tree)
    assert status_of(document, copy) == ("duplicate", f"same SOPInstanceUID as aa/{source.name}")
    assert status_of(document, source)[0] == "duplicate"


def test_the_first_copy_deleted_leaves_the_next_one_used(cli, tmp_path):
    tree = copied_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    first = sorted((tree / "ct1").iterdir())[0]
    first.unlink()
    counts = same_with_index(cli, tree, db)
    assert (counts["files_read"], counts["files_removed"]) == (0, 1)
    assert status_of(audit_json(cli, tree), tree / "zz" / "ct1" / first.name)[0] == "used"


def test_a_new_sop_instance_uid_leaves_the_old_copy_alone(cli, tmp_path):
    """The first file of an instance rewritten with a new SOPInstanceUID: its copy is the
    only file of the old instance now (used), although the copy itself is unchanged."""
    tree = copied_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    first = sorted((tree / "ct1").iterdir())[0]
    rewrite(first, SOPInstanceUID="1.2.826.0.1.3680043.8.498.999")
    assert same_with_index(cli, tree, db)["files_read"] == 1
    document = audit_json(cli, tree)
    assert status_of(document, tree / "zz" / "ct1" / first.name)[0] == "used"
    assert status_of(document, first)[0] == "used"


def test_a_deleted_file_removes_a_split(cli, tmp_path):
    """A slice of ct2 at another orientation splits the series; deleting it (and its copy)
    makes ct2 one volume again."""
    tree = copied_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    tilted = sorted((tree / "ct2").iterdir())[0]
    rewrite(tilted, ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    (tree / "zz" / "ct2" / tilted.name).unlink()
    assert "series.mixed-orientation" in codes_of(audit_json(cli, tree))
    same_with_index(cli, tree, db)
    tilted.unlink()
    counts = same_with_index(cli, tree, db)
    assert (counts["files_read"], counts["files_removed"]) == (0, 1)
    assert "series.mixed-orientation" not in codes_of(audit_json(cli, tree))


def test_a_new_volume_beside_an_unchanged_series_is_paired(cli, tmp_path):
    tree = copied_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    out = tmp_path / "out"
    cli("dicom2nii", tree / "ct1", out, check_code=0)
    volume = next(out.glob("*.nii.gz"))
    shutil.copyfile(volume, tree / "ct1" / volume.name)
    assert same_with_index(cli, tree, db)["files_read"] == 1
    row = next(row for row in audit_json(cli, tree)["volumes"]
               if row["path"] == str(tree / "ct1" / volume.name))
    assert (row["pair_method"], row["pair_result"]) == ("geometry", "match")
    assert row["paired_series"] == volume.name.removesuffix(".nii.gz")


def test_a_renamed_folder_renames_the_original_of_its_copies(cli, tmp_path):
    tree = copied_tree(tmp_path / "tree")
    db = tmp_path / "index.sqlite"
    same_with_index(cli, tree, db)
    (tree / "ct1").rename(tree / "ct1b")
    counts = same_with_index(cli, tree, db)
    assert (counts["files_read"], counts["files_removed"]) == (6, 6)
    reasons = [reason for path, reason in duplicates(audit_json(cli, tree)).items()
               if "/zz/ct1/" in path]
    assert len(reasons) == 6 and all("ct1b/" in reason for reason in reasons)


def test_a_changed_seg_reference(cli, tmp_path):
    """A SEG beside copies of its series, pointed at a series that is not there: dangling."""
    import pydicom

    from convkit.formats import write_volume
    from convkit.testing.segmentations import blob_labels, write_ct
    from convkit.volume import Volume

    tree = tmp_path / "tree"
    ct = write_ct(tree / "ct")
    shutil.copytree(tree / "ct", tree / "copy")
    write_volume(Volume(blob_labels(ct.shape), ct.affine), tmp_path / "mask.nii.gz")
    seg = tree / "mask.seg.dcm"
    cli("nii2dicom", tmp_path / "mask.nii.gz", seg, "--seg", "--reference", ct.folder,
        check_code=0)
    db = tmp_path / "index.sqlite"
    assert "seg.paired" in codes_of(same_with_index(cli, tree, db) and audit_json(cli, tree))
    dataset = pydicom.dcmread(seg)
    dataset.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4.5.6.7.8.9"
    dataset.save_as(seg)
    assert same_with_index(cli, tree, db)["files_read"] == 1
    assert "seg.dangling" in codes_of(audit_json(cli, tree))


def test_report_text_is_the_json_modules(tmp_path):
    """The compact line `--json` prints and the stored report share the tables' text: both
    must be what json.dumps gives for the whole document."""
    import zlib

    from convkit.audit import audit_path
    from convkit.index import audit_indexed, open_index

    tree = copied_tree(tmp_path / "tree")
    report = audit_path(tree)
    for fail_on in (None, "warning"):
        assert report.json_text(fail_on) == json.dumps(report.to_json(fail_on), default=str)
    with open_index(tmp_path / "index.sqlite") as index:
        indexed = audit_indexed(tree, index)
        (blob,) = index.connection.execute("SELECT report FROM reports").fetchone()
    stored = json.loads(zlib.decompress(blob))
    assert stored == {"input": str(tree), "mode": "folder", **report.tables()}
    assert indexed.json_text() == json.dumps(indexed.to_json(), default=str)
