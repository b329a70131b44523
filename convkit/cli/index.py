"""convkit index: build or update the SQLite index of a tree (an audit without its report)."""

from __future__ import annotations

from pathlib import Path

import typer

from convkit.cli import render
from convkit.cli.progress import progress_bar


def index(
    path: Path = typer.Argument(..., help="Folder (searched recursively) or a single file."),
    db: Path = typer.Option(..., "--db", metavar="FILE",
                            help="SQLite index file (created if missing)."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Processes reading headers (0: all cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Replace the index file with a new one."),
    wait: float = typer.Option(60.0, "--wait", metavar="SECONDS",
                               help="How long to wait while another convkit writes the index."),
) -> None:
    """Build or update the index of PATH in FILE: what `convkit audit PATH --index FILE` keeps.

    Only new and changed files are read; files that have gone are removed from it. Query it
    with the sqlite3 shell, pandas or DuckDB (tables: README.md, "Archive index").
    """
    from convkit.cli.audit import freeze_for_exit, indexed

    labels = {"scan": "Scanning files", "volumes": "Reading volume headers"}
    with progress_bar(enabled=not as_json, labels=labels) as progress:
        report = indexed(path, db, rebuild, wait, jobs=jobs, progress=progress)
    freeze_for_exit()
    counts = report.index or {}
    summary = {**counts, "files": len(report.files), "series": len(report.series),
               "volumes": len(report.volumes), "findings": report.severity_counts()}
    if as_json:
        render.print_json(summary)
        return
    found = summary["findings"]
    render.console().print(
        f"indexed {summary['files']} files in {path} into {db}: {counts.get('files_read', 0)} "
        f"read, {counts.get('files_from_index', 0)} from the index, "
        f"{counts.get('files_removed', 0)} gone; {summary['series']} series, "
        f"{summary['volumes']} volumes; {found['error']} error(s), {found['warning']} "
        f"warning(s), {found['info']} info", highlight=False, soft_wrap=True)
