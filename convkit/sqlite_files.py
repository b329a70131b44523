"""The SQLite files convkit keeps (the archive index, the batch manifest): one check that a
file is one of ours, of a schema this convkit reads, in WAL mode."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from convkit.errors import ConvkitError


@dataclass(frozen=True)
class FileKind:
    """What a kind of convkit SQLite file is called and marked with, and its errors."""

    name: str  # 'index', 'manifest': in messages
    application_id: int  # PRAGMA application_id: tells our file from any other SQLite file
    schema_version: int  # PRAGMA user_version of the tables this convkit writes
    synchronous: str  # 'NORMAL' for a cache, 'FULL' for a record that must survive power loss
    newer_hint: str  # what to do with a file of a newer convkit
    file_error: type[ConvkitError]  # (message, hint='') -> the file cannot be used
    busy_error: type[ConvkitError]  # another convkit holds it
    #: bytes per page of a new file (SQLite's default, 4096, suits small rows; fixed once the
    #: file is in WAL mode)
    page_size: int = 4096


def prepare(db: sqlite3.Connection, path: Path, kind: FileKind) -> tuple[int, int]:
    """(schema version, schema objects) of an open file, once it is known to be of this kind
    (or empty), not newer than this convkit, and in WAL mode. Raises kind.file_error for a
    damaged, foreign or newer file, kind.busy_error while another process changes its mode.
    The caller creates or upgrades the tables when the version is older or nothing is there."""
    try:
        db.execute("BEGIN")  # one read: another process may be creating the tables
        try:
            application, version, tables = (db.execute(query).fetchone()[0] for query in (
                "PRAGMA application_id", "PRAGMA user_version",
                "SELECT count(*) FROM sqlite_master"))
        finally:
            db.rollback()
    except sqlite3.DatabaseError as exc:
        raise damaged(path, kind, exc) from exc
    if application not in (0, kind.application_id) or (application == 0 and tables):
        raise kind.file_error(f"{path} is an SQLite database but not a convkit {kind.name}")
    if version > kind.schema_version:
        raise kind.file_error(f"the {kind.name} {path} was written by a newer convkit (schema "
                              f"{version}; this one reads {kind.schema_version})",
                              kind.newer_hint)
    try:
        if not tables:  # a new file: its page size is set before WAL mode fixes it
            db.execute(f"PRAGMA page_size={kind.page_size}")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        db.execute(f"PRAGMA synchronous={kind.synchronous}")
    except sqlite3.OperationalError as exc:  # locked while another process changes the mode
        raise kind.busy_error(f"the {kind.name} {path} is busy: {exc}",
                              "wait for the other convkit to finish") from exc
    if str(mode).lower() != "wal":
        raise kind.file_error(f"the {kind.name} {path} cannot use WAL mode ({mode})")
    return version, tables


def damaged(path: Path, kind: FileKind, exc: BaseException) -> ConvkitError:
    return kind.file_error(f"the {kind.name} {path} cannot be read: {exc}")
