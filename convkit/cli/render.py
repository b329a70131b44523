"""Rich rendering of library result objects; the same objects give --json."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"written": "green", "found": "cyan", "refused": "yellow", "failed": "red",
                "up to date": "green", "skipped": "red"}


#: Console width when stdout is a file or pipe and COLUMNS is unset: nothing ever wraps (a
#: pipe gets one line per table row; tables are as wide as their content, never padded).
PIPE_WIDTH = 100_000


def console() -> Console:
    """stdout: results only. Width can be pinned with COLUMNS (tests do)."""
    width = _width() or (None if sys.stdout.isatty() else PIPE_WIDTH)
    return Console(highlight=False, soft_wrap=False, width=width)


def one_line_width(width: int) -> bool:
    """True for a console that never wraps (a pipe or file): multi-line cells go on one line
    there too, so that each table row is one line."""
    return width >= PIPE_WIDTH


def stacked(first: str, second: str, one_line_rows: bool) -> str:
    """A cell with a dim second line (a terminal), or 'first (second)' on one line (a pipe)."""
    if not second:
        return first
    if one_line_rows:
        return f"{first} [dim]({second})[/]" if first else f"[dim]{second}[/]"
    return f"{first}\n[dim]{second}[/]"


# ------------------------------------------------------------------------------------------
# Tables that fit the terminal: columns chosen by width, names never folded.

#: A name is never cut below this width (nor below its header).
NAME_MIN = 16
#: Prose columns wrap (at spaces) down to this width before columns are dropped ...
PROSE_MIN = 24
#: ... and down to this one when nothing is left to drop, before a key is cut.
PROSE_FLOOR = 12


@dataclass(frozen=True)
class Col:
    """A table column and how it gives way when the terminal is narrower than the table.

    kind: "value" (short tokens such as 128x128x70: never wrapped, never cut), "name" (a file,
    series or code name: never wrapped; when space runs out, cut in the middle with an
    ellipsis, keeping the start and the suffix), "words" (names with spaces, such as
    'series 2_CT (ct/a)': wrap at spaces only, a word too long for the column is cut in the
    middle) or "prose" (messages: wrap at spaces).
    drop: 0 = always shown; otherwise dropped in ascending order (columns empty in every
    row first) until the table fits; each table says why it drops what it drops.
    key: a name that identifies the row: cut only when nothing is left to drop and prose is
    down to PROSE_FLOOR.
    """

    name: str
    kind: str = "value"
    drop: int = 0
    key: bool = False
    justify: Literal["default", "left", "center", "right", "full"] = "left"


def fit_table(title: str, columns: Sequence[Col], rows: Sequence[Sequence[Any]],
              width: int) -> Table:
    """A rich Table of `rows` (markup strings or Text) that fits in `width` columns.

    Every column gets its width here: nothing is dropped, cut or wrapped when the table fits
    (always, for a pipe: PIPE_WIDTH).
    """
    cells = _cells(rows)
    keep, widths = _fit(columns, cells, width)
    table = Table(title=title, title_justify="left")
    for i in keep:
        column = columns[i]
        wraps = column.kind in ("words", "prose")
        table.add_column(column.name, justify=column.justify, width=widths[i],
                         no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for row in cells:
        table.add_row(*(_shorten(row[i], columns[i].kind, widths[i]) for i in keep))
    return table


def fits(columns: Sequence[Col], rows: Sequence[Sequence[Any]], width: int) -> bool:
    """Whether all the columns fit in `width` with nothing dropped, no key cut and prose at
    PROSE_MIN or wider."""
    natural = _natural(columns, _cells(rows))
    return _total({i: _minimum(column, natural[i], 0)
                   for i, column in enumerate(columns)}) <= width


def _cells(rows: Sequence[Sequence[Any]]) -> list[list[Text]]:
    """Markup strings (or None) as Text, so that widths are measured without the markup."""
    return [[cell if isinstance(cell, Text) else Text.from_markup("" if cell is None else str(cell))
             for cell in row] for row in rows]


def _natural(columns: Sequence[Col], cells: list[list[Text]]) -> list[int]:
    widths = [len(column.name) for column in columns]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max([widths[i]] + [line.cell_len for line in
                                            cell.split("\n", allow_blank=True)])
    return widths


def _minimum(column: Col, natural: int, level: int) -> int:
    """The narrowest a column may get at squeeze `level`: 0 (while columns can be dropped),
    1 (prose down to PROSE_FLOOR) or 2 (keys cut too)."""
    if column.kind == "value" or (column.key and level < 2):
        return natural
    if column.kind == "prose":
        return min(natural, max(PROSE_MIN if level == 0 else PROSE_FLOOR, len(column.name)))
    return min(natural, max(NAME_MIN, len(column.name)))


def _total(widths: dict[int, int]) -> int:
    """Width of a rich table with the default box: one space of padding each side of a cell
    and a rule between and around the columns."""
    return sum(widths.values()) + 3 * len(widths) + 1


def _fit(columns: Sequence[Col], cells: list[list[Text]], width: int,
         ) -> tuple[list[int], dict]:
    """The columns kept and the width of each: drop columns (in their order) until the rest
    fits at its minimum (squeezing prose, then keys, when nothing is left to drop), then give
    the room left to the key, then share it evenly among the other names and prose."""
    natural = _natural(columns, cells)
    keep = list(range(len(columns)))

    def empty(i: int) -> bool:
        return all(not row[i].plain.strip() for row in cells)

    def minimum(level: int) -> dict[int, int]:
        return {i: _minimum(columns[i], natural[i], level) for i in keep}

    droppable = sorted((i for i in keep if columns[i].drop),
                       key=lambda i: (not empty(i), columns[i].drop))
    for i in droppable:
        if _total(minimum(0)) <= width:
            break
        keep.remove(i)
    level = next((level for level in (0, 1) if _total(minimum(level)) <= width), 2)
    widths = minimum(level)
    spare = width - _total(widths)
    for group in ([i for i in keep if columns[i].key],
                  [i for i in keep if columns[i].kind != "value" and not columns[i].key]):
        while spare > 0:  # the narrowest first: the room is shared evenly
            short = [i for i in group if widths[i] < natural[i]]
            if not short:
                break
            widths[min(short, key=lambda i: widths[i])] += 1
            spare -= 1
    return keep, widths


def _shorten(cell: Text, kind: str, width: int) -> Text:
    """A name cut in the middle to `width`; in "words" cells each word longer than `width`."""
    if kind == "name":
        return middle_ellipsis(cell, width)
    if kind != "words":
        return cell
    lines = []
    for line in cell.split("\n", allow_blank=True):
        pieces, start = [], 0
        for word in re.finditer(r"\S+", line.plain):
            if word.end() - word.start() > width:
                pieces += [line[start:word.start()],
                           middle_ellipsis(line[word.start():word.end()], width)]
                start = word.end()
        lines.append(Text("").join([*pieces, line[start:]]) if pieces else line)
    return Text("\n").join(lines)


def middle_ellipsis(cell: Text, width: int) -> Text:
    """Each line of `cell` cut to `width` cells by an ellipsis in its middle: 2_Chest…tic.nii.gz
    keeps the start and the suffix of a name, where folding would break it into fragments."""
    lines = cell.split("\n", allow_blank=True)
    if all(line.cell_len <= width for line in lines):
        return cell
    out = []
    for line in lines:
        if line.cell_len > width and width > 1:
            head = width // 2
            tail = width - 1 - head
            line = line[:head] + Text("…") + (line[len(line) - tail:] if tail else Text(""))
        out.append(line)
    return Text("\n").join(out)


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


#: dicom2nii's series table. Narrow terminals lose, in this order: Description and # (the
#: default label is {SeriesNumber}_{SeriesDescription}: both are in it), Output (named after
#: the label by default; cut in the middle before it goes), Mod, Files. Series, Status and
#: the geometry (Shape, Spacing, Orient) always stay: they are what the table is for.
SERIES_COLUMNS = (Col("Series", "name", key=True), Col("#", drop=2),
                  Col("Description", "words", drop=1), Col("Mod", drop=4), Col("Files", drop=5),
                  Col("Status"))
WRITTEN_COLUMNS = (Col("Shape"), Col("Spacing mm"), Col("Orient"),
                   Col("Output", "name", drop=3))


def series_table(report, listing: bool = False, width: int = PIPE_WIDTH) -> Table:
    """One row per series: what it is and what happened to it (details below the table)."""
    columns = list(SERIES_COLUMNS) + ([] if listing else list(WRITTEN_COLUMNS))
    rows = []
    for result in report.series:
        row = [Text(result.label),
               str(result.series_number if result.series_number is not None else ""),
               Text(result.description or ""), result.modality, str(result.files),
               f"[{STATUS_STYLE.get(result.status, 'white')}]{result.status}[/]"]
        if not listing:
            output = Path(result.outputs[0]).name if result.outputs else ""
            row += ["x".join(map(str, result.shape)),
                    " x ".join(f"{s:.4g}" for s in result.spacing), result.orientation,
                    Text(output)]
        rows.append(row)
    return fit_table(f"{len(report.series)} series in {report.input}", columns, rows, width)


def series_notes(report) -> list[str]:
    """What convkit did to written series (tilt corrected, resampled, 4D order)."""
    return [f"[cyan]{result.label}[/]: {note}" for result in report.series
            for note in ([f"split: {escape(result.split)}"] if getattr(result, "split", "")
                         else []) + result.notes]


#: File statuses worth a line of their own under the series table, and how many are listed.
NOTABLE_FILES = 10


def file_notes(report) -> list[str]:
    """Files the series table does not show but a user must know of: SOPInstanceUID
    conflicts and skipped screenshots or report pages (they may show identifiers)."""
    notable = [record for record in report.files if record.status == "conflict"
               or (record.status == "skipped" and _not_patient_image(record.reason))]
    lines = [f"[yellow]{record.status}[/] {escape(record.path.name)}: {escape(record.reason)}"
             for record in notable[:NOTABLE_FILES]]
    if len(notable) > NOTABLE_FILES:
        lines.append(f"... and {len(notable) - NOTABLE_FILES} more (--json lists every file)")
    return lines


def _not_patient_image(reason: str) -> bool:
    # imported only when a file was skipped: an unchanged rerun's table needs no numpy
    from convkit.dicom.header import NOT_PATIENT_IMAGE

    return reason.startswith(NOT_PATIENT_IMAGE)


def file_summary(report) -> str:
    """'12 files: 10 used, 1 duplicate, 1 not-dicom'."""
    counts: dict[str, int] = {}
    for record in report.files:
        counts[record.status] = counts.get(record.status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{len(report.files)} files: {parts}"


def interrupted_lines(report) -> list[str]:
    """What an interrupted batch (dicom2nii's or preview's report) did: one line per item
    done (its status and output or reason), then the items not tried."""
    items = report.series if hasattr(report, "series") else report.items
    lines = []
    for item in items:
        name = getattr(item, "label", None) or item.name
        outputs = getattr(item, "outputs", None) or ([item.output] if getattr(item, "output", "")
                                                     else [])
        what = ", ".join(outputs) if outputs else item.reason
        style = STATUS_STYLE.get(item.status, "white")
        lines.append(f"[{style}]{item.status}[/] {escape(name)}" + (f": {escape(what)}"
                                                                   if what else ""))
    if report.not_tried:
        lines.append(f"[bold yellow]Interrupted:[/] {len(items)} done, {len(report.not_tried)} "
                     f"not tried: {escape(', '.join(report.not_tried))}")
    return lines
