"""convkit audit: every file accounted for, every series and volume checked (headers only)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

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
    index_file: Path = typer.Option(None, "--index", metavar="FILE",
                                    help="SQLite index of the tree (created if missing): only "
                                         "new and changed files are read."),
    rebuild: bool = typer.Option(False, "--rebuild",
                                 help="With --index: replace the index file with a new one."),
    wait: float = typer.Option(60.0, "--wait", metavar="SECONDS",
                               help="With --index: how long to wait while another convkit "
                                    "writes it."),
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
    if rebuild and index_file is None:
        raise UsageError("--rebuild needs --index FILE")
    labels = {"scan": "Scanning files", "volumes": "Reading volume headers"}
    with progress_bar(enabled=not as_json, labels=labels) as progress:
        if index_file is None:
            report = audit_path(path, jobs=jobs, progress=progress,
                                show_identifiers=show_identifiers)
        else:
            report = indexed(path, index_file, rebuild, wait, jobs=jobs, progress=progress,
                             show_identifiers=show_identifiers)
    freeze_for_exit()
    if csv_dir is not None:
        written = report.write_csv(csv_dir, force=force)
        render.error_console().print(f"written {len(written)} CSV files to {csv_dir}",
                                     highlight=False)
    if as_json and sys.stdout.isatty():
        render.print_json(report.to_json(fail_on))
    elif as_json:  # one compact line, as print_json writes it for a pipe or file
        sys.stdout.write(report.json_text(fail_on) + "\n")
    else:
        _print_report(report, Path(path), show_all)
    raise typer.Exit(report.exit_code(fail_on))


def freeze_for_exit() -> None:
    """The report is all that is left to print before the process ends: its objects (and
    the headers behind them) are kept out of the collector's passes, the last one at exit
    included (a quarter second of CPU after an audit of 20,000 files)."""
    import gc

    gc.freeze()


def indexed(path: Path, index_file: Path, rebuild: bool, wait: float, **options):
    """audit_indexed with the index file opened (and closed) here."""
    from convkit.errors import InputError, UsageError
    from convkit.index import audit_indexed, open_index

    if wait < 0:
        raise UsageError(f"--wait must be 0 or more seconds, not {wait}")
    if not path.exists():  # before the index file is made
        raise InputError(f"{path} does not exist", "check the path")
    with open_index(index_file, rebuild=rebuild, timeout=wait) as index:
        return audit_indexed(path, index, **options)


# ------------------------------------------------------------------------------------------
# Rendering (rich tables from the report's rows).


def _print_report(report, root: Path, show_all: bool) -> None:
    out = render.console()
    width = out.width
    if report.header is not None:
        out.print(_header_table(report.header, width))
    counts = ", ".join(f"{n} {status}" for status, n in report.counts().items())
    count = len(report.files)
    out.print(f"{count} file{'s' if count != 1 else ''} in {root}: {counts}", soft_wrap=True)
    if report.series:
        out.print(_series_table(report, root, width))
    if report.volumes:
        out.print(_volume_table(report, root, width))
    identifying = _identifier_table(report, root, width)
    if identifying is not None:
        out.print(identifying)
    for severity in ("error", "warning", "info"):
        table = _finding_table(report, root, severity, show_all, width)
        if table is not None:
            out.print(table)
    totals = report.severity_counts()
    out.print(f"{totals['error']} error(s), {totals['warning']} warning(s), {totals['info']} info",
              highlight=False)


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


def _header_table(header: dict, width: int):
    from rich.text import Text

    rows = []
    for key, value in header.items():
        if key == "file":
            continue
        text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
        rows.append([Text(key), Text(text)])
    columns = [render.Col("Field", "name", key=True), render.Col("Value", "prose")]
    return render.fit_table(f"Header of {header.get('file', '')}", columns, rows, width)


#: The series table. Narrow terminals lose, in this order (columns empty in every row first):
#: UIDs (long, and in --json/--csv), Encoding and Rescale (how pixels are stored, not where
#: they are), Patient, Modality (with the manufacturer), Steps mm (uneven steps are also a
#: series.gap finding), Files, Tilt° (also a series.tilt finding). Series, Grid, Voxel mm,
#: Orient and the dicom2nii verdict always stay.
SERIES_COLUMNS = {"Series": render.Col("Series", "name", key=True),
                  "Patient": render.Col("Patient", "name", drop=4),
                  "UIDs": render.Col("UIDs", "name", drop=1),
                  "Modality": render.Col("Modality", drop=5), "Files": render.Col("Files", drop=7),
                  "Grid": render.Col("Grid"), "Voxel mm": render.Col("Voxel mm"),
                  "Steps mm": render.Col("Steps mm", drop=6), "Orient": render.Col("Orient"),
                  "Tilt°": render.Col("Tilt°", drop=8), "Encoding": render.Col("Encoding", drop=2),
                  "Rescale": render.Col("Rescale", drop=3), "dicom2nii": render.Col("dicom2nii")}


def _series_table(report, root: Path, width: int):
    """One row per series; two-line cells on a terminal, one line per row in a pipe (all
    in --json)."""
    one_line = render.one_line_width(width)
    shown = any(row["patient_name"] or row["series_uid"] for row in report.series)
    names = ["Series", "Modality", "Files", "Grid", "Voxel mm", "Steps mm", "Orient",
             "Tilt°", "Encoding", "Rescale", "dicom2nii"]
    if shown:
        names[1:1] = ["Patient", "UIDs"]
    rows = []
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
            tilt = render.stacked(tilt, f"hdr {row['gantry_tilt']:g}", one_line)
        bits = (f"{row['bits_stored']}/{row['bits_allocated']} bit"
                + (" signed" if row["signed"] else ""))
        if row["samples_per_pixel"] != 1:
            bits += f" x{row['samples_per_pixel']}"
        encoding = render.stacked(
            row["transfer_syntax"] + (" [yellow](lossy)[/]" if row["lossy"] else ""), bits,
            one_line)
        rescale = render.stacked(f"{row['rescale_slope']:g} / {row['rescale_intercept']:g}",
                                 "varies" if row["rescale_varies"] else "", one_line)
        style = STATUS_STYLE.get(row["status"], "white")
        label = render.stacked(escape(row["label"]), escape(row["description"] or ""), one_line)
        modality = render.stacked(row["modality"], escape(row["manufacturer"] or ""), one_line)
        cells = [label, modality, str(row["files"]), grid, voxel, steps, orient, tilt, encoding,
                 rescale, f"[{style}]{row['dicom2nii']}[/]"]
        if shown:
            cells[1:1] = [render.stacked(escape(row["patient_name"] or ""),
                                         escape(row["patient_id"] or ""), one_line),
                          render.stacked(row["study_uid"] or "", row["series_uid"] or "",
                                         one_line)]
        rows.append(cells)
    return render.fit_table(f"{len(report.series)} DICOM series",
                            [SERIES_COLUMNS[name] for name in names], rows, width)


#: The volume table. Narrow terminals lose, in this order (columns empty in every row first):
#: Details (free text: units, descrip, extensions), q/s code, Scaling and Format (how it is
#: stored), Size check (a bad size is also a finding), Paired with. File, Shape, Voxel mm and
#: Orient always stay.
VOLUME_COLUMNS = (render.Col("File", "name", key=True), render.Col("Format", drop=4),
                  render.Col("Shape"), render.Col("Voxel mm"), render.Col("Orient"),
                  render.Col("Scaling", drop=3), render.Col("q/s code", drop=2),
                  render.Col("Size check", drop=5), render.Col("Details", "prose", drop=1),
                  render.Col("Paired with", "name", drop=6))


def _volume_table(report, root: Path, width: int):
    one_line = render.one_line_width(width)
    count = len(report.volumes)
    rows = []
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
            paired = render.stacked(f"[{style}]{escape(row['paired_series'])}[/]",
                                    f"{row['pair_method']}: {row['pair_result']}", one_line)
        size_style = "green" if row["size_check"].startswith("ok") else (
            "yellow" if row["size_check"].startswith("unchecked") else "red")
        rows.append([escape(_relative(row["path"], root)), row["format"],
                     render.stacked(str(row["shape"]), str(row["dtype"]), one_line),
                     row["spacing"], row["orientation"], scaling, codes,
                     f"[{size_style}]{row['size_check']}[/]", escape(details), paired])
    return render.fit_table(f"{count} volume file{'s' if count != 1 else ''}",
                            list(VOLUME_COLUMNS), rows, width)


def _identifier_table(report, root: Path, width: int):
    rows = [(f"series {row['label']} ({_relative(row['folder'], root)})", row["identifiers"])
            for row in report.series if row["identifiers"]]
    rows += [(_relative(row["path"], root), row["identifiers"]) for row in report.volumes
             if row["identifiers"]]
    if not rows:
        return None
    columns = [render.Col("Where", "words", key=True), render.Col("Carries", "prose")]
    return render.fit_table("Identifying data (values not shown)", columns,
                            [[escape(where), escape(what)] for where, what in rows], width)


#: Finding tables: Code is a name (never folded), Where wraps between its words only;
#: Message and Hint wrap. When both prose columns cannot get
#: render.PROSE_MIN columns, the hint goes under the message in one cell: nothing is dropped.
FINDING_COLUMNS = (render.Col("Code", "name", key=True), render.Col("Where", "words"),
                   render.Col("Message", "prose"), render.Col("Hint", "prose"))


def _finding_table(report, root: Path, severity: str, show_all: bool, width: int):
    items = [f for f in report.findings if f.severity == severity]
    if not items:
        return None
    style = SEVERITY_STYLE[severity]
    plural = "s" if len(items) != 1 and severity != "info" else ""
    title = f"[{style}]{len(items)} {severity}{plural}[/]"
    rows = []
    per_code: dict[str, int] = {}
    for item in items:
        per_code[item.code] = per_code.get(item.code, 0) + 1
        if not show_all and per_code[item.code] > MAX_PER_CODE:
            continue
        where = item.series and f"series {item.series}"
        if item.path:
            where = f"{where} ({_relative(item.path, root)})" if where else _relative(item.path,
                                                                                      root)
        rows.append([f"[{style}]{item.code}[/]", escape(where or ""), escape(item.message),
                     escape(item.hint or "")])
    for code, count in per_code.items():
        if not show_all and count > MAX_PER_CODE:
            rows.append([f"[{style}]{code}[/]", "", f"... and {count - MAX_PER_CODE} more",
                         "--all, --json or --csv list every one"])
    columns = list(FINDING_COLUMNS)
    if not render.fits(columns, rows, width):
        columns = columns[:3]
        rows = [[code, where, message + (f"\n[dim]Hint: {hint}[/]" if hint else "")]
                for code, where, message, hint in rows]
    return render.fit_table(title, columns, rows, width)
