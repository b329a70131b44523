"""A rerun of dicom2nii on an unchanged tree, answered without reading a DICOM file, grouping
series or importing numpy, pydicom or nibabel (standard library and convkit's light modules
only).

A complete run (every series written or up to date) leaves in the manifest (meta 'rerun') a
snapshot: the request that made it (folders, options, name template, selection), the stat key
(size, mtime_ns, inode, ctime_ns) of every file under the input folder taken BEFORE the scan
read them, each series' fingerprint, and the report that a rerun of the same request prints
when everything is up to date (made by dicom2nii from the manifest's rows, as the normal path
makes it). A rerun gives that report when: the same request and convkit version; every file
under the input folder with the same stat key, none added or removed, each key taken after
the file's last change (statkeys.trusted); every series recorded written with the same
fingerprint and options; every output there, a regular file with its recorded size and the
stat key it had when it was hashed (statkeys.unchanged_since_hashed). Anything else, or any
doubt (a link or a special file in the tree, an unreadable folder, a damaged manifest), is
the normal path. Any run forgets the snapshot before it changes anything (run.one_run).
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convkit import __version__
from convkit.batch.manifest import MANIFEST_FOLDER, MANIFEST_NAME, Row, open_manifest
from convkit.batch.report import ConversionReport, ReportedFile, SeriesResult
from convkit.batch.statkeys import stat_key, trusted, unchanged_since_hashed
from convkit.errors import ConvkitError
from convkit.outcomes import Outcome

#: The layout of the snapshot below; a snapshot of another layout is not used.
SNAPSHOT_LAYOUT = 1

#: One input file: [path relative to the input folder, size, mtime_ns, inode, ctime_ns].
TreeEntry = list[Any]


def options_text(fields: dict[str, Any], fmt: str, overlays: bool) -> str:
    """The options that shape a series' outputs, as text (work.options_key: the manifest's
    options column). fields: the ConvertOptions fields by name (dataclasses.asdict)."""
    return json.dumps({"options": fields, "format": fmt, "overlays": overlays},
                      sort_keys=True, default=str)


@dataclass
class Request:
    """What a dicom2nii run was asked: all that shapes its report."""

    in_dir: Path
    out_dir: Path
    options: str  # options_text
    name_template: str
    select: list[str] = field(default_factory=list)
    seg_overlap: str = "files"
    retry_failed: bool = False

    def key(self) -> str:
        """The request as text: folders as given and as absolute paths (the report shows
        them as given; the same relative path from elsewhere is another folder)."""
        return json.dumps({"input": str(self.in_dir), "output": str(self.out_dir),
                           "input_path": os.path.abspath(self.in_dir),
                           "output_path": os.path.abspath(self.out_dir),
                           "options": self.options, "name": self.name_template,
                           "select": list(self.select), "seg_overlap": self.seg_overlap,
                           "retry_failed": self.retry_failed}, sort_keys=True)


def tree_state(in_dir: Path) -> list[TreeEntry] | None:
    """Every file under in_dir (or in_dir itself, a file) with its stat key, sorted; None
    when there is any doubt: a link, a special file, an unreadable folder, or a file
    changed too recently for its key to tell a later change (statkeys.trusted)."""
    checked = time.time_ns()
    root = os.fspath(in_dir)
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            entry = _entry("", os.lstat(root), checked)
            return None if entry is None else [entry]
        files: list[TreeEntry] = []
        folders = [""]
        while folders:
            folder = folders.pop()
            with os.scandir(os.path.join(root, folder)) as entries:
                for item in entries:
                    name = os.path.join(folder, item.name)
                    if item.is_dir(follow_symlinks=False):
                        folders.append(name)
                        continue
                    entry = _entry(name, item.stat(follow_symlinks=False), checked)
                    if entry is None:
                        return None
                    files.append(entry)
    except OSError:
        return None
    files.sort()
    return files


def _entry(name: str, info: os.stat_result, checked: int) -> TreeEntry | None:
    if not stat.S_ISREG(info.st_mode) or not trusted(info.st_ctime_ns, checked):
        return None
    return [name, *stat_key(info)]


def snapshot_text(request: Request, tree: list[TreeEntry], fingerprints: dict[str, str],
                  report: dict[str, Any]) -> str:
    """The snapshot of a complete run (the manifest's meta 'rerun')."""
    return json.dumps({"layout": SNAPSHOT_LAYOUT, "convkit": __version__, "key": request.key(),
                       "tree": tree, "series": fingerprints, "report": report})


def unchanged_report(request: Request) -> ConversionReport | None:
    """The report of a rerun of request on an unchanged tree (every series up to date), or
    None: the normal path must run."""
    if not (request.out_dir / MANIFEST_FOLDER / MANIFEST_NAME).is_file():
        return None
    try:
        with open_manifest(request.out_dir) as manifest:
            text = manifest.rerun()
            if text is None:
                return None
            snapshot = json.loads(text)
            if (snapshot.get("layout"), snapshot.get("convkit"), snapshot.get("key")) != \
                    (SNAPSHOT_LAYOUT, __version__, request.key()):
                return None
            rows = manifest.rows()
        if not outputs_unchanged(snapshot["series"], rows, request):
            return None
        if tree_state(request.in_dir) != snapshot["tree"]:
            return None
        return report_from(snapshot["report"])
    except (ConvkitError, ValueError, KeyError, TypeError):  # damaged or foreign: no shortcut
        return None


def outputs_unchanged(fingerprints: dict[str, str], rows: dict[str, Row],
                      request: Request) -> bool:
    """Every series of the snapshot recorded written with its fingerprint, these options
    and this convkit, and its outputs as they were when they were hashed."""
    for label, print_ in fingerprints.items():
        row = rows.get(label)
        if row is None or (row.status, row.fingerprint, row.options, row.convkit_version) != \
                (Outcome.WRITTEN, print_, request.options, __version__) or not row.outputs:
            return False
        for output in row.outputs:
            try:
                info = os.lstat(request.out_dir / output.path)
            except OSError:
                return False
            if not stat.S_ISREG(info.st_mode) or info.st_size != output.size \
                    or not unchanged_since_hashed(output, info):
                return False
    return True


def report_from(document: dict[str, Any]) -> ConversionReport:
    """The ConversionReport whose to_json() is document (a report with no notes, nothing
    interrupted or failed: what a snapshot holds)."""
    series = [SeriesResult(**{**item, "status": Outcome(item["status"])})
              for item in document["series"]]
    files = [ReportedFile(Path(item["path"]), item["status"], item["reason"], item["series"])
             for item in document["files"]]
    return ConversionReport(document["input"], document["output"], series, files)


__all__ = ["Request", "options_text", "outputs_unchanged", "report_from", "snapshot_text",
           "tree_state", "unchanged_report"]
