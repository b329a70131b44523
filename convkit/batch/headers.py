"""The scan's facts about each input file, kept beside the manifest in OUT/.convkit/index.sqlite
(an archive index, convkit.index) so that a rerun opens only the files that are new or whose
stat key (size, mtime_ns, inode, ctime_ns) changed: index.facts.FileFacts is the scan's
HeaderCache.

The file is a cache: it holds the files' facts only (not the audit's tables), is written in
one transaction after the scan, and may be lost at any moment (the files are read again);
a cache that cannot be read or written (a full disk, a busy or damaged file) never fails
the conversion.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from convkit.batch.manifest import HEADER_CACHE_NAME, MANIFEST_FOLDER
from convkit.batch.work import stat_now
from convkit.dicom.scan import ProgressCallback, ScanResult, Workers, scan_folder
from convkit.errors import ConvkitError
from convkit.index.db import FileRow, Index, RunRecord, now, open_index
from convkit.index.errors import IndexFileError
from convkit.index.facts import FileFacts, dump_facts

_TABLES: dict[str, list] = {"series": [], "volumes": [], "findings": []}


def index_path(out_dir: Path) -> Path:
    return out_dir / MANIFEST_FOLDER / HEADER_CACHE_NAME


class HeaderCache:
    """The facts of the files under in_dir known from the last run into out_dir (none when
    there was none, or the file is damaged: it is then made anew); scan() reads the tree
    with them, save() writes what the scan learned."""

    def __init__(self, in_dir: Path, out_dir: Path) -> None:
        self.in_dir = in_dir  # as given: the scan's paths are as the user wrote them
        self.root = os.path.abspath(in_dir)
        self.path = index_path(out_dir)
        self.started = now()
        self.facts = FileFacts({}, dict)
        self.damaged = False  # the file holds damaged facts: save() makes it anew

    def scan(self, progress: ProgressCallback | None, jobs: int,
             workers: Workers | None = None) -> ScanResult:
        """scan_folder of in_dir, opening only the files that are new or changed (every
        file when the cache holds damaged facts); workers: as scan_folder's."""
        index = self._open() if self.path.is_file() else None
        if index is not None:
            try:
                with index, index.snapshot():  # one consistent read
                    self.facts = FileFacts(index.stored_files(self.root),
                                           functools.partial(index.stored_facts, self.root))
                    return scan_folder(self.in_dir, progress, jobs=jobs, cache=self.facts,
                                       workers=workers)
            except IndexFileError:
                self.damaged = True
        self.facts = FileFacts({}, dict)
        return scan_folder(self.in_dir, progress, jobs=jobs, cache=self.facts, workers=workers)

    def stat_of(self, text: str) -> tuple[int, int] | None:
        """(size, mtime_ns) of a file as the scan found it before reading it (work.StatOf);
        the stat now for a file it did not stat."""
        entry = self.facts.entries.get(text)
        if entry is None or entry.key is None:
            return stat_now(text)
        return entry.key[0], entry.key[1]

    def save(self) -> None:
        """Write the files the scan read (and drop those gone), unless there is none: a
        rerun of an unchanged tree writes nothing. Call once OUT/.convkit exists."""
        rows = self._changed_rows()
        removed = self.facts.removed
        if not rows and not removed:
            return
        counts = {"files_read": self.facts.read, "files_from_index": self.facts.from_index,
                  "files_removed": len(removed)}
        index = self._open()
        if index is None:
            return
        with index:
            try:
                index.record(RunRecord(self.root, {"command": "dicom2nii"}, self.started,
                                       rows, removed, _TABLES, b"", counts,
                                       (len(self.facts.entries), 0, 0, 0)))
            except ConvkitError:  # a full disk, a busy file: the next run reads them again
                pass

    def _open(self) -> Index | None:
        """The index (made anew when damaged or foreign), or None when it cannot be opened
        or written: the scan reads every file, as without it."""
        try:
            try:
                return open_index(self.path, rebuild=self.damaged)
            except IndexFileError:
                return open_index(self.path, rebuild=True)
        except ConvkitError:
            return None

    def _changed_rows(self) -> list[FileRow]:
        rows = []
        stored = self.facts.stored
        for entry in self.facts.entries.values():
            before = stored.get(entry.path)
            if not entry.learned and before is not None and before.key == entry.key:
                continue
            keep = entry.key is not None and "scan" in entry.facts
            rows.append(FileRow(entry.path, entry.key, (None, None, None, None), True,
                                dump_facts(entry.facts) if keep else None,
                                was_stored=before is not None))
        return rows


__all__ = ["HeaderCache", "index_path"]
