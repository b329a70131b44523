"""The index file: an SQLite database (standard library sqlite3, WAL mode) of audited trees.

Tables (documented for users in README.md, "Archive index"):

- ``meta(key, value)``: 'application' = 'convkit-index', 'facts' = the convkit that wrote
  the file facts (facts.facts_version).
- ``runs``: one row per indexed audit: when, convkit version, root, options, counts.
- ``files``: every file seen (absolute path), its stat key (size, mtime_ns, inode,
  ctime_ns), its kind, status, reason and series as the last audit gave them, and
  ``facts`` (what reading it gave, a pickle only convkit reads).
- ``headers``: one row per image (file, frame) with the SliceHeader fields.
- ``series``, ``volumes``, ``findings``: the audit's tables (the columns of `--csv`) per
  root, paths absolute.
- ``reports``: per root, the last audit's report (for an unchanged tree).

Every update is one transaction (BEGIN IMMEDIATE ... COMMIT): a run killed at any
moment leaves the previous index. A second writer waits up to `timeout` seconds, then
fails (IndexBusyError, exit 5). The schema version is PRAGMA user_version: an older
index is rebuilt (it is a cache of the files), a newer or foreign one refused.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convkit import __version__, sqlite_files
from convkit.audit.report import FILE_COLUMNS, FINDING_COLUMNS, SERIES_COLUMNS, VOLUME_COLUMNS
from convkit.errors import ConvkitError, OutputError, exception_reason
from convkit.index.errors import IndexBusyError, IndexFileError
from convkit.index.facts import Stored, facts_version

#: PRAGMA user_version of the tables below; bump when they change (older files are rebuilt).
SCHEMA_VERSION = 2
#: PRAGMA application_id: 'ckix'. Tells a convkit index from any other SQLite file.
APPLICATION_ID = 0x636B6978
#: How sqlite_files checks an index file (a cache: synchronous NORMAL is enough under WAL).
#: Pages of 16 KiB: rows of headers and file facts are ~1 KB; a first audit of 20,000 files
#: writes (and checkpoints) 37 MB 15 % faster than with 4 KiB pages.
INDEX_FILE = sqlite_files.FileKind("index", APPLICATION_ID, SCHEMA_VERSION, "NORMAL",
                                   "use that convkit, or --rebuild to replace it",
                                   IndexFileError, IndexBusyError, page_size=16384)
#: Seconds a second writer waits for the first to finish.
BUSY_TIMEOUT_S = 60.0
#: SliceHeader fields stored as columns of `headers` (tuples as backslash-joined text).
HEADER_COLUMNS = (
    "sop_instance_uid", "series_instance_uid", "study_instance_uid", "series_number",
    "series_description", "modality", "manufacturer", "sop_class_uid", "transfer_syntax",
    "rows", "columns", "samples_per_pixel", "bits_allocated", "bits_stored",
    "pixel_representation", "photometric", "number_of_frames", "image_type", "orientation",
    "position", "pixel_spacing", "slice_thickness", "spacing_between_slices",
    "instance_number", "acquisition_number", "acquisition_time", "content_time",
    "trigger_time", "temporal_position", "echo_number", "echo_time", "rescale_slope",
    "rescale_intercept", "gantry_tilt", "stack_id", "philips_scale_slope", "problem",
    "slice_time", "file_size",
)
_PATH_COLUMNS = ("path", "folder", "sidecar")
#: Rowid tables (rows of ~1 KB: WITHOUT ROWID suits small rows); the headers' index is
#: built after the rows when the table was empty (a first audit: one sorted build).
_HEADERS_INDEX = "CREATE INDEX headers_path ON headers (path, frame)"
_STORED = ("path, size, mtime_ns, inode, ctime_ns, kind, status, reason, series, "
           "facts IS NOT NULL")
_UNDER = "path >= ? AND path <= ?"


def _under(root: str, whole_tree: bool) -> tuple[str, str]:
    """(low, high) of the paths under root (a folder), or of root itself."""
    if not whole_tree:
        return root, root
    low = os.path.join(root, "")
    return low, low[:-1] + chr(ord(low[-1]) + 1)


#: Values bound in one `IN (...)` (below SQLite's oldest limit of 999 variables).
_CHUNK = 900


def _chunks(values: list[str]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(placeholders, values) for `IN (...)` of at most _CHUNK values each."""
    for start in range(0, len(values), _CHUNK):
        part = tuple(values[start:start + _CHUNK])
        yield ", ".join("?" * len(part)), part


def _columns(names: tuple[str, ...]) -> str:
    return ", ".join(f'"{name}"' for name in names)


SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, started TEXT NOT NULL, finished TEXT NOT NULL,
    convkit_version TEXT NOT NULL, root TEXT NOT NULL, options TEXT NOT NULL,
    files INTEGER, files_read INTEGER, files_from_index INTEGER, files_removed INTEGER,
    series INTEGER, volumes INTEGER, findings INTEGER);
CREATE TABLE files (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, inode INTEGER, ctime_ns INTEGER,
    kind TEXT, status TEXT, reason TEXT, series TEXT, run INTEGER, facts BLOB);
CREATE TABLE headers (
    path TEXT NOT NULL, frame INTEGER NOT NULL, {_columns(HEADER_COLUMNS)}, b_value REAL);
{_HEADERS_INDEX};
CREATE TABLE series (root TEXT NOT NULL, {_columns(SERIES_COLUMNS)});
CREATE TABLE volumes (root TEXT NOT NULL, {_columns(VOLUME_COLUMNS)});
CREATE TABLE findings (root TEXT NOT NULL, {_columns(FINDING_COLUMNS)});
CREATE TABLE reports (root TEXT PRIMARY KEY, options TEXT NOT NULL, run INTEGER,
                      report BLOB NOT NULL);
CREATE INDEX series_root ON series (root);
CREATE INDEX volumes_root ON volumes (root);
CREATE INDEX findings_root ON findings (root);
"""
_TABLES = ("meta", "runs", "files", "headers", "series", "volumes", "findings", "reports")


@dataclass
class FileRow:
    """One file to write: its key, its row in the audit's files table, its facts."""

    path: str  # absolute
    key: tuple[int, int, int, int] | None
    row: tuple  # (kind, status, reason, series) in the audit's files table
    changed: bool  # new facts (or a new key): the whole row and its headers are written
    facts: bytes | None = None  # what reading it gave (None: nothing kept, no key)
    headers: list[tuple] | None = None  # rows of `headers`
    row_changed: bool = True  # the table row differs from the stored one
    was_stored: bool = True  # the index held the file before (its old headers go)


@dataclass
class RunRecord:
    """What one indexed audit writes (one transaction)."""

    root: str  # absolute
    options: dict[str, Any]
    started: str
    files: list[FileRow]
    removed: list[str]
    tables: dict[str, list[dict[str, Any]]] | None  # the report's tables (None: unchanged)
    report: bytes  # the report as given, compressed JSON (b'': not kept, e.g. one file)
    counts: dict[str, int]  # files_read, files_from_index, files_removed
    summary: tuple[int, int, int, int]  # files, series, volumes, findings


class Index:
    """An open index file. Use open_index(); a context manager (closes the connection)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path
        self.seen_run = -1  # the last run when the files were read (stored_files)

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    # -- reading -------------------------------------------------------------------------

    def stored_files(self, root: str, whole_tree: bool = True) -> dict[str, Stored]:
        """{absolute path: Stored} of the files under root (or root itself); the facts of
        a file written by another convkit are not trusted (its key is None: read again)."""
        current = self.meta("facts") == facts_version()
        self.seen_run = self._last_run()
        rows = self._query(f"SELECT {_STORED} FROM files WHERE {_UNDER}", _under(root, whole_tree))
        return {row[0]: Stored(row[1:5] if row[9] and current else None, row[5:9])
                for row in rows}

    def stored_facts(self, root: str, whole_tree: bool = True) -> dict[str, bytes]:
        """{absolute path: facts} of the files under root (or root itself)."""
        return dict(self._query(f"SELECT path, facts FROM files WHERE {_UNDER} AND "
                                "facts IS NOT NULL", _under(root, whole_tree)))

    def facts_of(self, paths: list[str]) -> dict[str, bytes]:
        """{absolute path: facts} of these files (those with facts)."""
        found: dict[str, bytes] = {}
        for marks, values in _chunks(paths):
            found.update(self._query(f"SELECT path, facts FROM files WHERE path IN ({marks}) "
                                     "AND facts IS NOT NULL", values))
        return found

    def instances_of(self, paths: list[str]) -> set[str]:
        """The SOPInstanceUIDs of the stored images of these files (absolute paths)."""
        found: set[str] = set()
        for marks, values in _chunks(paths):
            found.update(row[0] for row in self._query(
                f"SELECT DISTINCT sop_instance_uid FROM headers WHERE path IN ({marks})",
                values))
        return found

    def holding(self, root: str, whole_tree: bool, uids: set[str]) -> set[str]:
        """The files under root (absolute paths) with a stored image of one of these UIDs
        (one pass over the headers per chunk of UIDs)."""
        found: set[str] = set()
        for marks, values in _chunks(sorted(uids)):
            found.update(row[0] for row in self._query(
                f"SELECT DISTINCT path FROM headers WHERE {_UNDER} AND sop_instance_uid IN "
                f"({marks})", (*_under(root, whole_tree), *values)))
        return found

    def stored_report(self, root: str, options: dict[str, Any]) -> dict[str, Any] | None:
        """The last report of root, if it was made with these options by this convkit."""
        rows = self._query("SELECT options, report, run FROM reports WHERE root = ?", (root,))
        if not rows or json.loads(rows[0][0]) != options or \
                self.meta("facts") != facts_version():
            return None
        if rows[0][2] < int(self.meta("files_run") or 0):  # files changed since, by the audit
            return None  # of another root of the index (a folder inside this one)
        try:  # zlib checks what it inflates (Adler-32): a damaged report is not read
            return json.loads(zlib.decompress(rows[0][1]))
        except (zlib.error, ValueError) as exc:
            raise IndexFileError(f"the index {self.path} holds a damaged report of {root} "
                                 f"({exception_reason(exc)})") from exc

    def _last_run(self) -> int:
        return int(self._query("SELECT coalesce(max(id), 0) FROM runs")[0][0])

    def meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def query(self, sql: str, parameters: tuple = ()) -> list[dict[str, Any]]:
        """Rows of any SELECT as dicts (for later commands: batch conversion, reports)."""
        cursor = self._execute(sql, parameters)
        names = [item[0] for item in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def series(self, root: str | None = None) -> list[dict[str, Any]]:
        """The series rows of the last audit of root (of every root when None)."""
        if root is None:
            return self.query("SELECT * FROM series")
        return self.query("SELECT * FROM series WHERE root = ?", (os.path.abspath(root),))

    def _query(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        return self._execute(sql, parameters).fetchall()

    def _execute(self, sql: str, parameters: tuple = ()) -> sqlite3.Cursor:
        try:
            return self.connection.execute(sql, parameters)
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from exc

    # -- writing -------------------------------------------------------------------------

    def record(self, run: RunRecord) -> int:
        """Write one indexed audit in one transaction; returns the run's id."""
        with self.transaction() as db:
            if self.meta("facts") != facts_version():  # facts of another convkit: dropped
                db.execute("DELETE FROM files")
                db.execute("DELETE FROM headers")
                db.execute("DELETE FROM reports")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('facts', ?)", (facts_version(),))
            another = self._last_run() != self.seen_run  # a run written since we read
            run_id = _insert_run(db, run)
            if run.tables is not None:
                if _write_files(db, run, run_id, another):
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('files_run', ?)",
                               (str(run_id),))
                _write_tables(db, run.root, run.tables)
                db.execute("DELETE FROM reports WHERE root = ?", (run.root,))
                if run.report and not another:  # over files another run may have rewritten:
                    # not kept (the next audit of this root is a whole one)
                    db.execute("INSERT INTO reports VALUES (?, ?, ?, ?)",
                               (run.root, json.dumps(run.options, sort_keys=True), run_id,
                                run.report))
        return run_id

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every query inside sees the same committed index."""
        self._execute("BEGIN")
        try:
            yield
        finally:
            self.connection.rollback()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error); waits for another writer."""
        try:
            self.connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise IndexBusyError(
                    f"the index {self.path} is busy: another convkit is writing it",
                    "wait for it to finish and run again (or use another --index file)",
                ) from exc
            raise _damaged(self.path, exc) from exc
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from exc
        try:
            yield self.connection
        except BaseException:
            self.connection.rollback()
            raise
        try:
            self.connection.commit()
        except sqlite3.DatabaseError as exc:
            self.connection.rollback()
            raise _damaged(self.path, exc) from exc


def _insert_run(db: sqlite3.Connection, run: RunRecord) -> int:
    counts = run.counts
    cursor = db.execute(
        "INSERT INTO runs (started, finished, convkit_version, root, options, files, "
        "files_read, files_from_index, files_removed, series, volumes, findings) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (run.started, now(), __version__, run.root, json.dumps(run.options, sort_keys=True),
         run.summary[0], counts["files_read"], counts["files_from_index"],
         counts["files_removed"], *run.summary[1:]))
    return int(cursor.lastrowid or 0)


def _write_files(db: sqlite3.Connection, run: RunRecord, run_id: int, another: bool) -> bool:
    """Changed files replaced (facts and headers), unchanged ones given this run's row.

    another: a run was written since this one read the index (two audits at once): any
    changed file may have headers now, not only those this run saw stored. Returns whether
    a file's key or facts changed, or a file went."""
    changed: list[tuple] = []
    unchanged: list[tuple] = []
    headers: list[tuple] = []
    for item in run.files:
        cells = (*item.row, run_id)
        if not item.changed:
            if item.row_changed:
                unchanged.append((*cells, item.path))
            continue
        key = item.key or (None, None, None, None)
        changed.append((item.path, *key, *cells, item.facts))
        headers.extend(item.headers or ())
    gone = [(path,) for path in run.removed]
    steps = [("DELETE FROM files WHERE path = ?", gone),
             ("DELETE FROM headers WHERE path = ?",
              gone + [(item.path,) for item in run.files
                      if item.changed and (item.was_stored or another)]),
             ("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", changed),
             ("UPDATE files SET kind = ?, status = ?, reason = ?, series = ?, run = ? "
              "WHERE path = ?", unchanged),
             (f"INSERT INTO headers VALUES ({', '.join('?' * (len(HEADER_COLUMNS) + 3))})",
              headers)]
    bulk = bool(headers) and db.execute("SELECT 1 FROM headers LIMIT 1").fetchone() is None
    if bulk:
        db.execute("DROP INDEX headers_path")
    for sql, rows in steps:
        if rows:
            db.executemany(sql, rows)
    if bulk:
        db.execute(_HEADERS_INDEX)
    return bool(changed or gone)


def _write_tables(db: sqlite3.Connection, root: str,
                  tables: dict[str, list[dict[str, Any]]]) -> None:
    """The report's series, volumes and findings of this root, in place of the last ones."""
    for table in ("series", "volumes", "findings"):
        db.execute(f"DELETE FROM {table} WHERE root = ?", (root,))  # noqa: S608
        columns = {"series": SERIES_COLUMNS, "volumes": VOLUME_COLUMNS,
                   "findings": FINDING_COLUMNS}[table]
        marks = ", ".join("?" * (len(columns) + 1))
        db.executemany(f"INSERT INTO {table} VALUES ({marks})",  # noqa: S608
                       [(root, *(_cell(column, row.get(column)) for column in columns))
                        for row in tables[table]])


def _cell(column: str, value: Any) -> Any:
    """A report value as SQLite stores it: paths absolute, lists as text."""
    if column in _PATH_COLUMNS and isinstance(value, str) and value:
        return os.path.abspath(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ------------------------------------------------------------------------------------------
# Opening


def open_index(path: Path | str, *, rebuild: bool = False,
               timeout: float = BUSY_TIMEOUT_S) -> Index:
    """Open (or create) the index file at path.

    rebuild: replace the file with an empty index first (a corrupt or foreign file too).
    timeout: seconds to wait for another writer. Raises IndexFileError for a file that is
    no convkit index (or a damaged one, or one from a newer convkit), with the hint
    --rebuild; an index of an older schema is rebuilt (it is a cache of the files).
    """
    path = Path(path)
    if path.is_dir():
        raise IndexFileError(f"--index {path} is a folder", "give a file name, e.g. index.sqlite")
    if rebuild:
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
            name.unlink(missing_ok=True)
    if not path.parent.is_dir():
        raise OutputError(f"cannot create the index {path}: {path.parent} does not exist",
                          "create the folder first")
    try:
        connection = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise OutputError(f"cannot open the index {path}: {exc}",
                          "check the path and its permissions") from exc
    connection.isolation_level = None  # transactions are explicit (Index.transaction)
    index = Index(connection, path)
    try:
        _prepare(index)
    except BaseException:
        connection.close()
        raise
    return index


def _prepare(index: Index) -> None:
    """Check that the file is a convkit index of this schema, or make it one."""
    version, tables = sqlite_files.prepare(index.connection, index.path, INDEX_FILE)
    if version < SCHEMA_VERSION or tables == 0:
        _create(index)


def _create(index: Index) -> None:
    """The tables of this schema (an older schema's tables dropped: the index is a cache)."""
    with index.transaction() as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:  # another process made it meanwhile
            return
        old = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        for table in old:
            db.execute(f'DROP TABLE "{table}"')
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('application', 'convkit-index')")
        db.execute("INSERT INTO meta VALUES ('facts', ?)", (facts_version(),))
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _damaged(path: Path, exc: BaseException) -> ConvkitError:
    return sqlite_files.damaged(path, INDEX_FILE, exc)


__all__ = ["APPLICATION_ID", "FILE_COLUMNS", "SCHEMA_VERSION", "FileRow", "Index",
           "IndexBusyError", "IndexFileError", "RunRecord", "open_index"]
