"""convkit audit: every file accounted for, every series and volume checked (headers only)."""

from __future__ import annotations

from pathlib import Path

import typer

from convkit.cli import render
from convkit.cli.progress import progress_bar

#: Findings listed per code in the tables (all of them in --json, --csv and with --all).
MAX_PER_CODE = 10
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
STATUS_STYLE = {"ok": "green", "refused": "yellow", "fails": "red", "volume": "green",
                "unreadable": "red", "skipped": "yellow"}


def audit(
    path: Path = typer.Argument(..., help="Folder (searched recursively) or a single file."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Processes reading headers (0: all cores)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="Print one JSON document: files, series, volumes, "
                                      "findings."),
    csv_dir: Path = typer.Option(None, "--csv", metavar="DIR",
                                 help="Write files.csv, series.csv, volumes.csv and findings.csv "
                                      "into DIR."),
    fail_on: str = typer.Option(None, "--fail-on",
                                help="Exit 1 when a finding at this level or above exists: "
                                     "warning | error (or info)."),
    show_identifiers: bool = typer.Option(False, "--show-identifiers",
                                          help="Show patient names, IDs and study/series UIDs."),
    show_all: bool = typer.Option(False, "--all",
                                  help=f"List every finding (default: {MAX_PER_CODE} per code)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing CSV files."),
) -> None:
    """Account for every file under PATH and check every series and volume, headers only.

    A single file prints its full header summary. Exit 0 after a successful audit, 1 with
    --fail-on when a finding at that level exists.
    """
    from convkit.audit import SEVERITIES, audit_path
    from convkit.errors import UsageError

    if fail_on is not None and fail_on not in SEVERITIES:
        raise UsageError(f"--fail-on must be one of {', '.join(SEVERITIES)}, not {fail_on!r}")
    if csv_dir is not None:  # refuse before a long scan, not after it
        from convkit.audit import TABLES
        from convkit.formats.output import check_targets

        check_targets([csv_dir / f"{table}.csv" for table in TABLES], force)
    labels = {"scan": "Scanning files", "volumes": "Reading volume headers"}
    with progress_bar(enabled=not as_json, labels=labels) as progress:
        report = audit_path(path, jobs=jobs, progress=progress,
                            show_identifiers=show_identifiers)
    if csv_dir is not None:
        written = report.write_csv(csv_dir, force=force)
        render.error_console().print(f"written {len(written)} CSV files to {csv_dir}",
                                     highlight=False)
    if as_json:
        render.print_json(report.to_json(fail_on))
    else:
        _print_report(report, Path(path), show_all)
    raise typer.Exit(report.exit_code(fail_on))


# ------------------------------------------------------------------------------------------
# Rendering (rich tables from the report's rows).


def _print_report(report, root: Path, show_all: bool) -> None:
    out = render.console()
    if report.header is not None:
        out.print(_header_table(report.header))
    counts = ", ".join(f"{n} {status}" for status, n in report.counts().items())
    count = len(report.files)
    out.print(f"{count} file{'s' if count != 1 else ''} in {root}: {counts}", soft_wrap=True)
    if report.series:
        out.print(_series_table(report, root))
    if report.volumes:
        out.print(_volume_table(report, root))
    identifying = _identifier_table(report, root)
    if identifying is not None:
        out.print(identifying)
    for severity in ("error", "warning", "info"):
        table = _finding_table(report, root, severity, show_all)
        if table is not None:
            out.print(table)
    totals = report.severity_counts()
    out.print(f"{totals['error']} error(s), {totals['warning']} warning(s), {totals['info']} info",
              highlight=False)


def _table(title: str, columns: list[str]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def _relative(path: str, root: Path) -> str:
    if not path:
        return ""
    try:
        relative = Path(path).relative_to(root)
    except ValueError:
        return path
    return str(relative) if str(relative) != "." else (root.name or str(root))


def _num(value, spec: str = ".4g") -> str:
    return "" if value is None else format(value, spec)


def _header_table(header: dict):
    table = _table(f"Header of {header.get('file', '')}", ["Field", "Value"])
    for key, value in header.items():
        if key == "file":
            continue
        text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        table.add_row(key, text)
    return table


def _series_table(report, root: Path):
    """One row per series; two-line cells keep it readable at 120 columns (all in --json)."""
    shown = any(row["patient_name"] or row["series_uid"] for row in report.series)
    columns = ["Series", "Modality", "Files", "Grid", "Voxel mm", "Steps mm", "Orient",
               "Tilt°", "Encoding", "Rescale", "dicom2nii"]
    if shown:
        columns[1:1] = ["Patient", "UIDs"]
    table = _table(f"{len(report.series)} DICOM series", columns)
    for row in report.series:
        slices, volumes = row["slices"], row["volumes"]
        grid = f"{row['columns']}x{row['rows']}"
        if slices is not None:
            grid += f"x{slices}" + (f"x{volumes}" if volumes and volumes > 1 else "")
        voxel = ""
        if row["pixel_spacing_row"] is not None:
            # i runs along a row (column spacing), j down a column (row spacing), then k.
            voxel = "x".join(_num(v) for v in (row["pixel_spacing_col"], row["pixel_spacing_row"],
                                                row["slice_spacing"]) if v is not None)
        steps = "/".join(_num(row[k]) for k in ("slice_spacing_min", "slice_spacing_median",
                                                 "slice_spacing_max")) \
            if row["slice_spacing_min"] is not None else ""
        orient = row["orientation"]
        if row["oblique_degrees"]:
            orient += f" ({row['oblique_degrees']:.1f}° obl)"
        tilt = _num(row["tilt_degrees"], ".2f") if row["tilt_degrees"] else ""
        if row["gantry_tilt"]:
            tilt += f"\n[dim]hdr {row['gantry_tilt']:g}[/]"
        bits = (f"{row['bits_stored']}/{row['bits_allocated']} bit"
                + (" signed" if row["signed"] else ""))
        if row["samples_per_pixel"] != 1:
            bits += f" x{row['samples_per_pixel']}"
        encoding = (row["transfer_syntax"] + (" [yellow](lossy)[/]" if row["lossy"] else "")
                    + f"\n[dim]{bits}[/]")
        rescale = (f"{row['rescale_slope']:g} / {row['rescale_intercept']:g}"
                   + ("\n[dim]varies[/]" if row["rescale_varies"] else ""))
        style = STATUS_STYLE.get(row["status"], "white")
        label = row["label"] + (f"\n[dim]{row['description']}[/]" if row["description"] else "")
        modality = row["modality"] + (f"\n[dim]{row['manufacturer']}[/]"
                                      if row["manufacturer"] else "")
        cells = [label, modality, str(row["files"]), grid, voxel, steps, orient, tilt, encoding,
                 rescale, f"[{style}]{row['dicom2nii']}[/]"]
        if shown:
            cells[1:1] = [f"{row['patient_name'] or ''}\n[dim]{row['patient_id'] or ''}[/]",
                          f"{row['study_uid'] or ''}\n[dim]{row['series_uid'] or ''}[/]"]
        table.add_row(*cells)
    return table


def _volume_table(report, root: Path):
    columns = ["File", "Format", "Shape", "Voxel mm", "Orient", "Scaling", "q/s code",
               "Size check", "Details", "Paired with"]
    count = len(report.volumes)
    table = _table(f"{count} volume file{'s' if count != 1 else ''}", columns)
    for row in report.volumes:
        scaling = "" if row["slope"] is None else f"{row['slope']:g} / {row['intercept'] or 0:g}"
        codes = ("" if row["qform_code"] is None
                 else f"{row['qform_code']}/{row['sform_code']}")
        units = "/".join(u for u in (row["spatial_unit"], row["time_unit"]) if u)
        details = "; ".join(
            f"{name}: {value}" for name, value in (
                ("units", units), ("intent", row["intent"]), ("descrip", row["descrip"]),
                ("ext", row["extensions"]), ("space", row["nrrd_space"]),
                ("encoding", row["nrrd_encoding"]), ("kinds", row["nrrd_kinds"]))
            if value and value != "none")
        paired = ""
        if row["paired_series"]:
            style = "green" if row["pair_result"] == "match" else "red"
            paired = (f"[{style}]{row['paired_series']}[/]\n[dim]{row['pair_method']}: "
                      f"{row['pair_result']}[/]")
        size_style = "green" if row["size_check"].startswith("ok") else (
            "yellow" if row["size_check"].startswith("unchecked") else "red")
        table.add_row(_relative(row["path"], root), row["format"],
                      f"{row['shape']}\n[dim]{row['dtype']}[/]", row["spacing"],
                      row["orientation"], scaling, codes,
                      f"[{size_style}]{row['size_check']}[/]", details, paired)
    return table


def _identifier_table(report, root: Path):
    rows = [(f"series {row['label']} ({_relative(row['folder'], root)})", row["identifiers"])
            for row in report.series if row["identifiers"]]
    rows += [(_relative(row["path"], root), row["identifiers"]) for row in report.volumes
             if row["identifiers"]]
    if not rows:
        return None
    table = _table("Identifying data (values not shown)", ["Where", "Carries"])
    for where, what in rows:
        table.add_row(where, what)
    return table


def _finding_table(report, root: Path, severity: str, show_all: bool):
    items = [f for f in report.findings if f.severity == severity]
    if not items:
        return None
    style = SEVERITY_STYLE[severity]
    plural = "s" if len(items) != 1 and severity != "info" else ""
    title = f"[{style}]{len(items)} {severity}{plural}[/]"
    table = _table(title, ["Code", "Where", "Message", "Hint"])
    per_code: dict[str, int] = {}
    for item in items:
        per_code[item.code] = per_code.get(item.code, 0) + 1
        if not show_all and per_code[item.code] > MAX_PER_CODE:
            continue
        where = item.series and f"series {item.series}"
        if item.path:
            where = f"{where} ({_relative(item.path, root)})" if where else _relative(item.path,
                                                                                      root)
        table.add_row(f"[{style}]{item.code}[/]", where, item.message, item.hint)
    for code, count in per_code.items():
        if not show_all and count > MAX_PER_CODE:
            table.add_row(f"[{style}]{code}[/]", "", f"... and {count - MAX_PER_CODE} more",
                          "--all, --json or --csv list every one")
    return table
