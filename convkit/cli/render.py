"""Rich rendering of library result objects; the same objects give --json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {"written": "green", "found": "cyan", "refused": "yellow", "failed": "red"}


#: Table width when stdout is a file or pipe (rich would otherwise use 80 and fold cells).
PIPE_WIDTH = 120


def console() -> Console:
    """stdout: results only. Width can be pinned with COLUMNS (tests do)."""
    width = _width() or (None if sys.stdout.isatty() else PIPE_WIDTH)
    return Console(highlight=False, soft_wrap=False, width=width)


def error_console() -> Console:
    return Console(stderr=True, highlight=False, width=_width())


def _width() -> int | None:
    columns = os.environ.get("COLUMNS")
    return int(columns) if columns and columns.isdigit() else None


def print_json(data: Any) -> None:
    """Indented for a terminal; one compact line for a pipe or file, which json's C encoder
    writes several times faster (an audit of 20,000 files: 0.1 s instead of 0.7 s)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(data, indent=indent, default=str) + "\n")


def series_table(report, listing: bool = False) -> Table:
    """One row per series: what it is and what happened to it (details below the table)."""
    table = Table(title=f"{len(report.series)} series in {report.input}", title_justify="left")
    for name in ("Series", "#", "Description", "Mod", "Files", "Status"):
        table.add_column(name, overflow="fold")
    if not listing:
        for name in ("Shape", "Spacing mm", "Orient", "Output"):
            table.add_column(name, overflow="fold")
    for result in report.series:
        row = [result.label, str(result.series_number if result.series_number is not None else ""),
               result.description, result.modality, str(result.files),
               f"[{STATUS_STYLE.get(result.status, 'white')}]{result.status}[/]"]
        if not listing:
            output = Path(result.outputs[0]).name if result.outputs else ""
            row += ["x".join(map(str, result.shape)),
                    " x ".join(f"{s:.4g}" for s in result.spacing), result.orientation, output]
        table.add_row(*row)
    return table


def series_notes(report) -> list[str]:
    """What convkit did to written series (tilt corrected, resampled, 4D order)."""
    return [f"[cyan]{result.label}[/]: {note}" for result in report.series for note in result.notes]


def file_summary(report) -> str:
    """'12 files: 10 used, 1 duplicate, 1 not-dicom'."""
    counts: dict[str, int] = {}
    for record in report.files:
        counts[record.status] = counts.get(record.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{len(report.files)} files: {parts}"
