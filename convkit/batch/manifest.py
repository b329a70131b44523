"""The manifest of an output folder: OUT/.convkit/manifest.sqlite (standard library sqlite3,
WAL mode), what makes dicom2nii resumable.

Tables (documented for users in README.md, "Batch conversion"):

- ``meta(key, value)``: 'application' = 'convkit-manifest'; 'rerun' = the snapshot of the
  last complete run (JSON, batch.rerun: the input tree's stat keys and the report of a
  rerun), removed before any run changes anything.
- ``series``: one row per output label: the SeriesInstanceUID, the fingerprint of its source
  files (work.fingerprint), the options key (work.options_key), the convkit version, the
  status (pending, written, refused, failed) with its reason, the series result as JSON and
  the seconds its conversion took.
- ``outputs``: the files of a series, relative to OUT, with size and sha256 (NULL while the
  series is pending: the names it is about to write), and the file's stat key when it was
  hashed (mtime_ns, inode, ctime_ns; checked_ns: the clock then), so that a rerun hashes
  only an output whose key changed (work.outputs_intact).

Every update is one transaction (BEGIN IMMEDIATE ... COMMIT). A series is marked pending
before its conversion starts and recorded after its outputs are published (atomically, by
formats.output), so a run killed at any moment leaves rows that tell the next run what to
redo: the outputs of a pending series are convkit's own, to be replaced. The conventions
(schema version in PRAGMA user_version, application_id, busy and damaged files) are those
of the archive index (convkit/index/db.py).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convkit import __version__, sqlite_files
from convkit.batch.errors import ManifestBusyError, ManifestFileError
from convkit.errors import ConvkitError, OutputError

#: The manifest's place in an output folder.
MANIFEST_FOLDER = ".convkit"
MANIFEST_NAME = "manifest.sqlite"
#: The scan's facts about the input files, beside the manifest (batch.headers).
HEADER_CACHE_NAME = "index.sqlite"
#: PRAGMA user_version of the tables below; bump when they change.
SCHEMA_VERSION = 2
#: PRAGMA application_id: 'ckmf'. Tells a convkit manifest from any other SQLite file.
APPLICATION_ID = 0x636B6D66
#: How sqlite_files checks a manifest (FULL: a recorded series survives a power loss).
MANIFEST_FILE = sqlite_files.FileKind("manifest", APPLICATION_ID, SCHEMA_VERSION, "FULL",
                                      "use that convkit, or remove the folder .convkit",
                                      ManifestFileError, ManifestBusyError)
#: Seconds a second writer waits for the first to finish.
BUSY_TIMEOUT_S = 60.0
#: Status of a series whose conversion started and was not recorded yet.
PENDING = "pending"
#: The meta key of the snapshot of the last complete run (batch.rerun).
RERUN_KEY = "rerun"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE series (
    label TEXT PRIMARY KEY, series_uid TEXT NOT NULL, fingerprint TEXT NOT NULL,
    options TEXT NOT NULL, convkit_version TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL, result TEXT NOT NULL, seconds REAL, updated TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE outputs (
    label TEXT NOT NULL, path TEXT NOT NULL, size INTEGER, sha256 TEXT,
    mtime_ns INTEGER, inode INTEGER, ctime_ns INTEGER, checked_ns INTEGER,
    PRIMARY KEY (label, path)) WITHOUT ROWID;
"""
#: Schema 1 -> 2: the outputs' stat keys (NULL for outputs recorded before: hashed).
_UPGRADE_1 = [f"ALTER TABLE outputs ADD COLUMN {name} INTEGER"
              for name in ("mtime_ns", "inode", "ctime_ns", "checked_ns")]


@dataclass
class Output:
    """One file of a series: path relative to OUT; size and sha256 None while pending.
    stat: (mtime_ns, inode, ctime_ns, checked_ns) when it was hashed (None: unknown)."""

    path: str
    size: int | None = None
    sha256: str | None = None
    stat: tuple[int, int, int, int] | None = None


@dataclass
class Row:
    """What the manifest holds about one output label."""

    label: str
    series_uid: str
    fingerprint: str
    options: str
    convkit_version: str
    status: str
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    outputs: list[Output] = field(default_factory=list)
    #: an output's stat key was taken again in this run (work.outputs_intact): to record
    refreshed: bool = False


class Manifest:
    """The manifest of one output folder. Use open_manifest(); a context manager. The file
    is created with the first write, so that a run that writes nothing leaves nothing."""

    def __init__(self, path: Path, timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout
        self.connection: sqlite3.Connection | None = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    # -- reading -------------------------------------------------------------------------

    def rows(self) -> dict[str, Row]:
        """{label: Row} of every series recorded (empty for a new output folder)."""
        if self.connection is None and not self.path.exists():
            return {}
        db = self._connect()
        try:
            with self._snapshot(db):
                series = db.execute("SELECT label, series_uid, fingerprint, options, "
                                    "convkit_version, status, reason, result, seconds "
                                    "FROM series").fetchall()
                outputs = db.execute("SELECT label, path, size, sha256, mtime_ns, inode, "
                                     "ctime_ns, checked_ns FROM outputs "
                                     "ORDER BY label, path").fetchall()
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from exc
        rows = {item[0]: Row(label=item[0], series_uid=item[1], fingerprint=item[2],
                             options=item[3], convkit_version=item[4], status=item[5],
                             reason=item[6], result=json.loads(item[7]), seconds=item[8])
                for item in series}
        for label, path, size, sha256, *stat in outputs:
            if label in rows:
                key = tuple(stat) if None not in stat else None
                rows[label].outputs.append(Output(path, size, sha256, key))
        return rows

    def rerun(self) -> str | None:
        """The snapshot of the last complete run (meta 'rerun': batch.rerun), or None."""
        if self.connection is None and not self.path.exists():
            return None
        try:
            found = self._connect().execute("SELECT value FROM meta WHERE key = ?",
                                            (RERUN_KEY,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from exc
        return found[0] if found else None

    # -- writing -------------------------------------------------------------------------

    def set_rerun(self, snapshot: str | None) -> None:
        """Record the snapshot of a complete run (None: forget it, before a run changes
        anything: batch.rerun trusts it only while nothing was written since)."""
        if snapshot is None and self.rerun() is None:
            return  # nothing to forget (and no manifest file made for it)
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = ?", (RERUN_KEY,))
            if snapshot is not None:
                db.execute("INSERT INTO meta VALUES (?, ?)", (RERUN_KEY, snapshot))

    def begin(self, row: Row) -> None:
        """Mark a series pending (its outputs: the names it is about to write)."""
        row.status, row.reason = PENDING, "conversion started"
        self.record(row)

    def record(self, row: Row) -> None:
        """Write one series' row and its outputs in one transaction."""
        values = (row.label, row.series_uid, row.fingerprint, row.options, row.convkit_version,
                  row.status, row.reason, json.dumps(row.result, sort_keys=True), row.seconds,
                  _now())
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO series VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       values)
            db.execute("DELETE FROM outputs WHERE label = ?", (row.label,))
            db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(row.label, out.path, out.size, out.sha256,
                             *(out.stat or (None,) * 4)) for out in row.outputs])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error); waits for another writer."""
        db = self._connect(create=True)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise ManifestBusyError(
                    f"the manifest {self.path} is busy: another convkit is writing it",
                    "wait for it to finish and run again") from exc
            raise _damaged(self.path, exc) from exc
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from exc
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        try:
            db.commit()
        except sqlite3.DatabaseError as exc:
            db.rollback()
            raise _damaged(self.path, exc) from exc

    def drop_if_nothing_written(self) -> None:
        """Remove the manifest (and its folder, when empty) if no series in it was written
        or is pending: a run that wrote no output leaves the output folder as it was."""
        if self.path.exists() and any(row.status in ("written", PENDING)
                                      for row in self.rows().values()):
            return
        self.close()
        cache = self.path.with_name(HEADER_CACHE_NAME)  # the scan's facts (batch.headers)
        for path in (self.path, cache):
            for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                name.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:  # something else is there
            pass

    # -- opening -------------------------------------------------------------------------

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        if self.connection is not None:
            return self.connection
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create the manifest {self.path}: "
                                  f"{exc.strerror or exc}", "check the output folder's "
                                  "permissions") from exc
        try:
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise OutputError(f"cannot open the manifest {self.path}: {exc}",
                              "check the path and its permissions") from exc
        self.connection = db
        try:
            _prepare(db, self.path)
        except BaseException:
            self.close()
            raise
        return db

    @staticmethod
    @contextmanager
    def _snapshot(db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN")
        try:
            yield
        finally:
            db.rollback()


def open_manifest(out_dir: Path | str, timeout: float = BUSY_TIMEOUT_S) -> Manifest:
    """The manifest of out_dir (OUT/.convkit/manifest.sqlite), opened lazily: reading a missing
    one gives no rows, the first write creates it."""
    manifest = Manifest(Path(out_dir) / MANIFEST_FOLDER / MANIFEST_NAME, timeout)
    if manifest.path.exists():
        manifest._connect()  # a foreign or damaged file is refused before any work
    return manifest


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Check that the file is a convkit manifest of this schema, or make it one."""
    version, tables = sqlite_files.prepare(db, path, MANIFEST_FILE)
    if version < SCHEMA_VERSION or tables == 0:
        _create(db, path)


def _create(db: sqlite3.Connection, path: Path) -> None:
    """The tables of this schema, or those of schema 1 upgraded (its rows kept)."""
    try:
        db.execute("BEGIN IMMEDIATE")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            db.rollback()  # another process made it meanwhile
            return
        if version == 1:
            for statement in _UPGRADE_1:
                db.execute(statement)
        else:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO meta VALUES ('application', 'convkit-manifest')")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.commit()
    except sqlite3.DatabaseError as exc:
        db.rollback()
        raise _damaged(path, exc) from exc


def _damaged(path: Path, exc: BaseException) -> ConvkitError:
    return sqlite_files.damaged(path, MANIFEST_FILE, exc)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


__all__ = ["MANIFEST_FOLDER", "Manifest", "Output", "PENDING", "RERUN_KEY", "Row",
           "open_manifest", "__version__"]
