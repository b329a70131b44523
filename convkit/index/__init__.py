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

from convkit.lazy import lazy_api

#: The package's API, imported on first use: dicom2nii keeps its scan's facts in an index
#: (index.db, index.facts) and need not import the audit that audit_indexed brings.
_API = {"SCHEMA_VERSION": "convkit.index.db", "Index": "convkit.index.db",
        "IndexBusyError": "convkit.index.db", "IndexFileError": "convkit.index.db",
        "open_index": "convkit.index.db", "audit_indexed": "convkit.index.audit"}
__all__, __getattr__, __dir__ = lazy_api(__name__, _API)
