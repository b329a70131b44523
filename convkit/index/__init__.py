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

from importlib import import_module
from typing import Any

#: The package's API, imported on first use: dicom2nii keeps its scan's facts in an index
#: (index.db, index.facts) and need not import the audit that audit_indexed brings.
_API = {"SCHEMA_VERSION": "convkit.index.db", "Index": "convkit.index.db",
        "IndexBusyError": "convkit.index.db", "IndexFileError": "convkit.index.db",
        "open_index": "convkit.index.db", "audit_indexed": "convkit.index.audit"}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'convkit.index' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
