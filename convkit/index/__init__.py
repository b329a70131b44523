"""index: an embedded SQLite database of audited trees, for incremental audits and queries.

    from convkit.index import open_index, audit_indexed
    with open_index("archive.sqlite") as index:
        report = audit_indexed("/archive", index)     # reads only new and changed files
        report.index                                 # {'files_read': 12, 'files_from_index': ...}
        index.series("/archive")                     # the series rows of its last audit
        index.query("SELECT * FROM findings WHERE severity = 'error'")

The tables are described in convkit/index/db.py and in README.md ("Archive index").
"""

from __future__ import annotations

from convkit.index.audit import audit_indexed
from convkit.index.db import (
    SCHEMA_VERSION,
    Index,
    IndexBusyError,
    IndexFileError,
    open_index,
)

__all__ = ["SCHEMA_VERSION", "Index", "IndexBusyError", "IndexFileError", "audit_indexed",
           "open_index"]
