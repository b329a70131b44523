"""audit_indexed: audit_path through an index, reading only the files that changed.

1. The files under the root are walked and stat'ed; the index gives the facts of every
   file whose stat key is unchanged (facts.FileFacts).
2. A tree exactly as the index last saw it, audited with the same options, gets the
   stored report (nothing is read, nothing re-checked).
3. Otherwise audit_path runs on the facts: new and changed files are read, every series
   is grouped and checked again from the headers (cheap: no file is opened), so that
   checks across series (splits, duplicates, names) see the whole tree. The duplicates
   of instances that no new, changed or gone file holds keep their row from the last
   report of the root (facts.Copies): their facts are not even loaded.
4. One transaction writes the run, the changed files and the report's tables.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import os
import zlib
from pathlib import Path
from typing import Any

from convkit import collector
from convkit.audit.core import Progress, audit_path
from convkit.audit.findings import Finding, Severity
from convkit.audit.report import AuditReport
from convkit.dicom.header import SliceHeader
from convkit.dicom.scan import iter_file_texts
from convkit.index.db import HEADER_COLUMNS, FileRow, Index, RunRecord, now
from convkit.index.facts import Copies, FileFacts, dump_facts
from convkit.volume import max_volume_bytes

#: Where each `headers` column is in a SliceHeader's field tuple (scan.outcome_fields).
_FIELDS = tuple(item.name for item in dataclasses.fields(SliceHeader))[1:]
_COLUMN_AT = tuple(_FIELDS.index(name) for name in HEADER_COLUMNS)
_FRAME_AT, _DIFFUSION_AT = _FIELDS.index("frame"), _FIELDS.index("diffusion")
#: Columns holding tuples (stored as backslash-joined text, as DICOM writes them).
_TUPLE_COLUMNS = tuple(HEADER_COLUMNS.index(name) for name in
                       ("image_type", "orientation", "position", "pixel_spacing"))
_columns_of = operator.itemgetter(*_COLUMN_AT)


def audit_indexed(path: Path | str, index: Index, *, jobs: int = 0,
                  progress: Progress | None = None, show_identifiers: bool = False,
                  with_groups: bool = False) -> AuditReport:
    """audit_path(path, ...) with the index: the same report, plus report.index (counts:
    files_read, files_from_index, files_removed); the index is updated in one transaction.

    with_groups: the caller needs report.groups (the SeriesGroups, e.g. for pictures), which
    a stored report of an unchanged tree does not hold: the series are then grouped again
    from the stored headers (no file is read)."""
    with collector.paused():
        return _audit_indexed(Path(path), index, jobs, progress, show_identifiers,
                              with_groups)


def _audit_indexed(root: Path, index: Index, jobs: int, progress: Progress | None,
                   show_identifiers: bool, with_groups: bool) -> AuditReport:
    started = now()
    absolute = os.path.abspath(root)
    whole_tree = root.is_dir()
    options = {"input": str(root), "show_identifiers": show_identifiers,
               "max_volume_bytes": max_volume_bytes()}
    with index.snapshot():  # what the index holds, as one consistent read
        facts = FileFacts(index.stored_files(absolute, whole_tree),
                          functools.partial(index.stored_facts, absolute, whole_tree),
                          whole_folders=whole_tree)
        unchanged = bool(facts.stored) and facts.survey(iter_file_texts(root),
                                                        absolute=str(root) == absolute)
        last = index.stored_report(absolute, options) if facts.stored and whole_tree else None
        stored = last if unchanged and not with_groups else None
        if stored is None:
            if last is not None:
                facts.copies = _copies(last, index, absolute, whole_tree)
            report = audit_path(root, jobs=jobs, progress=progress,
                                show_identifiers=show_identifiers, facts=facts)
    if stored is not None:
        report = _report_from(stored)
        counts = {"files_read": 0, "files_from_index": len(report.files), "files_removed": 0}
        index.record(_run(absolute, options, started, [], [], report, counts, None))
    else:
        removed = facts.removed
        counts = {"files_read": facts.read, "files_from_index": facts.from_index,
                  "files_removed": len(removed)}
        blob = _report_blob(report) if whole_tree else b""
        index.record(_run(absolute, options, started, _file_rows(report, facts), removed,
                          report, counts, blob))
    report.index = {"path": str(index.path), **counts}
    return report


def _copies(last: dict[str, Any], index: Index, root: str, whole_tree: bool) -> Copies:
    """The duplicates of the last report of this root, and its conflicts (their instances
    are worked out again: which copy belongs to which version is not kept)."""
    rows = {row["path"]: (row["reason"], row["bytes"]) for row in last["files"]
            if row["status"] == "duplicate" and row["series"] == "" and row["kind"] == "dicom"
            and row["bytes"] is not None}
    conflicts = [os.path.abspath(row["path"]) for row in last["files"]
                 if row["status"] == "conflict"]
    return Copies(rows, conflicts, index.instances_of,
                  functools.partial(index.holding, root, whole_tree), index.facts_of)


def _run(root: str, options: dict[str, Any], started: str, files: list[FileRow],
         removed: list[str], report: AuditReport, counts: dict[str, int],
         blob: bytes | None) -> RunRecord:
    """The run to record; blob None: the tree was unchanged (only the run is written)."""
    return RunRecord(root, options, started, files, removed,
                     report.tables() if blob is not None else None, blob or b"", counts,
                     (len(report.files), len(report.series), len(report.volumes),
                      len(report.findings)))


def _report_blob(report: AuditReport) -> bytes:
    """{"input", "mode", files, series, volumes, findings} as compressed JSON (the tables'
    text is the one the printed report uses)."""
    head = json.dumps({"input": report.input, "mode": report.mode})[:-1]
    tables = ", ".join(f"{json.dumps(name)}: {text}"
                       for name, text in report.table_texts().items())
    return zlib.compress(f"{head}, {tables}}}".encode(), 1)


def _report_from(stored: dict[str, Any]) -> AuditReport:
    report = AuditReport(stored["input"], stored["mode"], stored["files"], stored["series"],
                         stored["volumes"])
    report.findings = [Finding(Severity(item["severity"]), item["code"], item["path"],
                               item["series"], item["message"], item["hint"])
                       for item in stored["findings"]]
    return report


def _file_rows(report: AuditReport, facts: FileFacts) -> list[FileRow]:
    """The files to write: those with new facts or a new key, and those whose row in the
    audit's files table changed (an unchanged file with the same row is left as it is)."""
    rows = []
    entries, stored_files = facts.entries, facts.stored
    texts: dict[tuple, str] = {}  # the text of each tuple value (a series' share most)
    for row in report.files:
        entry = entries.get(row["path"]) or facts.entry(Path(row["path"]))
        cells = (row["kind"], row["status"], row["reason"], row["series"])
        stored = stored_files.get(entry.path)
        changed = entry.learned or stored is None or stored.key != entry.key
        if not changed and stored is not None and stored.row == cells:
            continue
        keep = changed and entry.key is not None and "scan" in entry.facts
        rows.append(FileRow(entry.path, entry.key, cells, changed,
                            dump_facts(entry.facts) if keep else None,
                            _header_rows(entry.path, entry.facts.get("scan"), texts) if changed
                            else None,
                            row_changed=stored is None or stored.row != cells,
                            was_stored=stored is not None))
    return rows


def _header_rows(path: str, scan: Any, texts: dict[tuple, str]) -> list[tuple]:
    """`headers` rows of one file from its scan outcome (as scan.outcome_fields gives it).
    texts: the backslash-joined text of tuples met before (its values are floats or text,
    so equal tuples have equal text)."""
    if not isinstance(scan, list):
        return []
    rows = []
    for fields in scan:
        cells = list(_columns_of(fields))
        for i in _TUPLE_COLUMNS:
            value = cells[i]
            if value is not None:
                text = texts.get(value)
                if text is None:
                    text = texts[value] = "\\".join(map(str, value))
                cells[i] = text
        diffusion = fields[_DIFFUSION_AT]
        rows.append((path, fields[_FRAME_AT], *cells,
                     None if diffusion is None else float(diffusion.bvalue)))
    return rows
