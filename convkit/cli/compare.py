"""convkit compare: two images side by side (headers) and voxel by voxel in world space."""

from __future__ import annotations

from pathlib import Path

import typer

from convkit.cli import render

#: Table styles per row status (the status text itself carries the meaning without colour).
STATUS_STYLE = {"same": "green", "different": "bold red", "encoding": "yellow",
                "layout": "yellow", "one-side": "dim", "info": "cyan"}
VERDICT_STYLE = {"identical": "bold green", "equal": "bold green", "different": "bold red"}


def compare(
    a: Path = typer.Argument(..., help="First image (the reference grid): NIfTI, NRRD, "
                             "MetaImage file, or a DICOM folder/file."),
    b: Path = typer.Argument(..., help="Second image, any of the same."),
    series: str = typer.Option(None, "--series", "-s",
                               help="DICOM series (number, label or UID) when a folder holds "
                                    "several; applies to both inputs."),
    series_b: str = typer.Option(None, "--series-b",
                                 help="DICOM series for B when it differs from --series."),
    atol_mm: float = typer.Option(None, "--atol-mm",
                                  help="Positions and spacing agree within this, in mm "
                                       "(default 0.001: POSITION_ATOL_MM)."),
    atol_dir: float = typer.Option(None, "--atol-dir",
                                   help="Direction cosines agree within this "
                                        "(default 1e-05: DIRECTION_ATOL)."),
    atol: float = typer.Option(None, "--atol",
                               help="Voxel values: absolute tolerance (default 0: VALUE_ATOL)."),
    rtol: float = typer.Option(None, "--rtol",
                               help="Voxel values: tolerance relative to A's value range "
                                    "(max - min) (default 1e-05: VALUE_RTOL)."),
    resample: bool = typer.Option(False, "--resample",
                                  help="When the grids differ, sample B at A's voxel centres "
                                       "and compare there."),
    interpolation: str = typer.Option("auto", "--interpolation",
                                      help="With --resample: auto (nearest for label maps, "
                                           "else linear) | linear | nearest."),
    labels: bool = typer.Option(None, "--labels/--no-labels",
                                help="Treat both as label maps (Dice per label) or not "
                                     "(default: detected, integer values with at most "
                                     "128 distinct: LABEL_MAX_VALUES)."),
    header_only: bool = typer.Option(False, "--header-only", help="Compare headers only."),
    allow_external_data: bool = typer.Option(
        False, "--allow-external-data",
        help="Read NRRD/MetaImage data files outside the header's folder (only for headers "
             "you trust)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable report."),
) -> None:
    """Compare two images: headers side by side, voxels in world space. Exit 0 equal, 1 not."""
    from convkit.compare import compare_files
    from convkit.formats.detached import allowing_external_data

    given = {"atol_mm": atol_mm, "atol_dir": atol_dir, "atol": atol, "rtol": rtol}
    options = {key: value for key, value in given.items() if value is not None}
    with allowing_external_data(allow_external_data):
        result = compare_files(a, b, series=series, series_b=series_b, resample=resample,
                               interpolation=interpolation, labels=labels,
                               header_only=header_only, **options)
    if as_json:
        render.print_json(result.to_json())
    else:
        _print(result)
    raise typer.Exit(result.exit_code)


#: Header table: every column stays (A and B side by side are the point); the field names
#: never wrap, the values and the status wrap at spaces.
HEADER_COLUMNS = (render.Col("Field", "name", key=True), render.Col("A", "prose"),
                  render.Col("B", "prose"), render.Col("Status", "prose"))


def _print(result) -> None:
    from rich.markup import escape

    from convkit.compare import format_value

    out = render.console()
    style = VERDICT_STYLE[result.verdict]
    summary = escape(result.summary[:1].upper() + result.summary[1:])  # header text may hold [..]
    out.print(f"[{style}]{summary}[/]", soft_wrap=True)
    out.print(f"A: {escape(result.a_name)}\nB: {escape(result.b_name)}", soft_wrap=True)
    rows = []
    for row in result.fields:
        if row.a is None and row.b is None:
            continue  # a field neither format has (kept in --json)
        row_style = STATUS_STYLE.get(row.status, "")
        if row.status == "different" and row.group in ("acquisition", "values"):
            row_style = "yellow"
        status = row.status + (f": {row.detail}" if row.detail else "")
        rows.append([escape(row.name), escape(row.text("a")), escape(row.text("b")),
                     f"[{row_style}]{escape(status)}[/]"])
    out.print(render.fit_table("Headers", list(HEADER_COLUMNS), rows, out.width))
    if result.voxels is not None:
        out.print(_voxel_table(result.voxels, format_value, out.width))
        if result.voxels.labels:
            out.print(_label_table(result.voxels.labels, format_value))
        if result.voxels.label_note:
            out.print(result.voxels.label_note, soft_wrap=True)
    else:
        out.print(f"Voxels not compared: {result.voxels_skipped}", soft_wrap=True)
    for side, notes in (("A", result.notes_a), ("B", result.notes_b)):
        for note in notes:
            out.print(f"[cyan]{side}[/]: {escape(note)}", soft_wrap=True)


def _voxel_table(v, format_value, width: int):
    rows = []
    method = v.method + (f": {v.mapping}" if v.mapping else "")
    rows.append(("compared", f"{v.compared:,} values ({method})"))
    if v.method == "resampled":
        rows.append(("outside B", f"{v.outside:,} A values outside B's grid (not compared)"))
    where = ""
    if v.max_at is not None:
        where = f" at voxel {tuple(v.max_at)}, RAS {format_value(list(v.max_at_ras))} mm"
    rows.append(("max |diff|", format_value(v.max_abs_diff) + where))
    rows.append(("mean |diff|", format_value(v.mean_abs_diff)))
    style = "bold red" if v.differing else "green"
    rows.append(("beyond tolerance",
                 f"[{style}]{v.differing:,} ({100 * v.fraction_differing:.4g}%)[/] "
                 f"with |diff| > {format_value(v.tolerance)} "
                 f"(range of A {format_value(v.value_range_a)})"))
    if v.nonfinite_mismatches:
        rows.append(("NaN/inf", f"[bold red]{v.nonfinite_mismatches:,}[/] values non-finite on "
                     "one side only"))
    rows.append(("exactly equal", "yes" if v.exact else f"no ({v.nonzero:,} values differ)"))
    rows.append(("correlation", "—" if v.correlation is None else f"{v.correlation:.6f}"))
    columns = [render.Col("Measure", "name", key=True), render.Col("Value", "prose")]
    return render.fit_table("Voxels (real-world values, A's grid)", columns, rows, width)


def _label_table(labels, format_value):
    from rich.table import Table

    table = Table(title="Labels (Dice = 2|A∩B| / (|A|+|B|))", title_justify="left")
    for name in ("Label", "Voxels A", "Voxels B", "Overlap", "Dice"):
        table.add_column(name, justify="right")
    for stats in labels:
        style = "green" if stats.dice == 1.0 else "bold red"
        table.add_row(format_value(stats.label), f"{stats.voxels_a:,}", f"{stats.voxels_b:,}",
                      f"{stats.overlap:,}", f"[{style}]{stats.dice:.6f}[/]")
    return table
