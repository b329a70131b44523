"""convkit dicom2nii: every DICOM series under a folder -> NIfTI/NRRD + JSON sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from convkit.cli import render
from convkit.cli.progress import progress_bar

#: --format values, listed here so that --help needs no numpy (convkit.formats imports it);
#: tests/test_cli_help.py checks that they are convkit.formats.FORMATS.
FORMATS = ("nii.gz", "nii", "nrrd", "nhdr", "mha", "mhd")
#: Progress rows of series converted by workers (convkit.batch.run.BATCH_SERIES, BATCH_BYTES).
BATCH_LABELS = {"batch:series": "Series converted", "batch:bytes": "Source bytes converted"}


def dicom2nii(
    in_dir: Path = typer.Argument(..., help="Folder (searched recursively) or file with DICOM."),
    out_dir: Path = typer.Argument(None, help="Output folder (not needed with --list)."),
    fmt: str = typer.Option("nii.gz", "--format", "-f", help=" | ".join(FORMATS) + "."),
    name: str = typer.Option("{SeriesNumber}_{SeriesDescription}", "--name",
                             help="File name template over header fields."),
    series: list[str] = typer.Option(None, "--series", "-s",
                                     help="Convert only this series (number, label or UID); "
                                          "repeatable."),
    list_only: bool = typer.Option(False, "--list", help="Print the series table; write nothing."),
    tilt: str = typer.Option("resample", "--tilt", help="Gantry tilt: resample | refuse."),
    resample: bool = typer.Option(False, "--resample",
                                  help="Interpolate uneven spacing onto a regular grid."),
    dtype: str = typer.Option(None, "--dtype",
                              help="Write real-world values as this type (e.g. float32, int16)."),
    keep_identifiers: bool = typer.Option(False, "--keep-identifiers",
                                          help="Keep patient name, ID, birth date in the sidecar."),
    philips_precise: bool = typer.Option(
        False, "--philips-precise",
        help="Philips: precise floating-point values (private scale slope) for every image "
             "(same as --philips-scaling precise)."),
    philips_scaling: str = typer.Option(
        "auto", "--philips-scaling",
        help="Philips values: auto (precise for phase and field maps, display values for the "
             "others) | display | precise."),
    provenance: bool = typer.Option(
        False, "--provenance",
        help="Record in the sidecar (SourceImages) each output slice's SOPInstanceUID and "
             "file, per volume."),
    overlays: bool = typer.Option(False, "--overlays",
                                  help="Also write overlay planes (60xx,3000) as NAME_overlay, a "
                                       "label map on the image grid (bit n for group 60xx, "
                                       "n = xx/2)."),
    seg_overlap: str = typer.Option(
        "files", "--seg-overlap",
        help="SEG/RTSTRUCT whose segments overlap: files (one mask per segment) | stack "
             "(one 4D file) | split (one file per segment or ROI, overlapping or not)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs (and convert "
                                                      "series the manifest says are up to date)."),
    jobs: int = typer.Option(0, "--jobs", "-j",
                             help="Cores to use in all, as make -j (0: every core). With 1, "
                                  "everything runs on one core; with N, up to N series are "
                                  "converted at once in worker processes (for batches over "
                                  "64 MiB when 0; fewer when they would not fit in memory), "
                                  "and a series converted alone uses all N."),
    scheduler: str = typer.Option(None, "--scheduler", metavar="ADDRESS",
                                  help="Convert on a Dask cluster: its scheduler's address "
                                       "(tcp://host:8786), or 'local' for a LocalCluster "
                                       "(pip install 'convkit[dask]')."),
    retry_failed: bool = typer.Option(False, "--retry-failed",
                                      help="Convert again the series that failed in an earlier "
                                           "run into OUT_DIR (its manifest)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable report."),
) -> None:
    """Convert every DICOM series under IN_DIR to NIfTI (default) or NRRD in OUT_DIR."""
    from convkit.errors import UsageError

    scaling = {"auto": None, "display": False, "precise": True}
    if philips_scaling not in scaling or (philips_precise and philips_scaling == "display"):
        raise UsageError(f"--philips-scaling {philips_scaling!r}"
                         + (" contradicts --philips-precise" if philips_precise else ""),
                         "choose one of auto, display, precise")
    fields: dict[str, Any] = {"tilt": tilt, "resample": resample, "dtype": dtype,
              "keep_identifiers": keep_identifiers,
              "philips_precise": True if philips_precise else scaling[philips_scaling],
              "provenance": provenance}
    if out_dir is not None and not (list_only or force or scheduler) and jobs >= 0:
        # an unchanged tree: the report of the last run, without numpy or pydicom
        from convkit.batch.rerun import Request, options_text, unchanged_report

        unchanged = unchanged_report(Request(in_dir, out_dir, options_text(fields, fmt, overlays),
                                             name, list(series or []), seg_overlap,
                                             retry_failed))
        if unchanged is not None:
            _show(unchanged, as_json, list_only)
            raise typer.Exit(unchanged.exit_code)
    from convkit.dicom.plan import ConvertOptions
    from convkit.dicom2nii import BatchInterrupted, convert_folder

    options = ConvertOptions(**fields)
    try:
        with progress_bar(enabled=not as_json, labels=BATCH_LABELS) as progress:
            report = convert_folder(in_dir, out_dir, options=options, fmt=fmt,
                                    name_template=name, select=series, force=force,
                                    list_only=list_only, progress=progress,
                                    overlays=overlays, seg_overlap=seg_overlap, jobs=jobs,
                                    scheduler=scheduler, retry_failed=retry_failed)
    except BatchInterrupted as stop:  # what was done, then exit 130 (143 after SIGTERM)
        _show(stop.report, as_json, list_only)
        stop.shown = True
        raise
    _show(report, as_json, list_only)
    raise typer.Exit(report.exit_code)


def _show(report, as_json: bool, list_only: bool) -> None:
    """The series table (or JSON) on stdout, problems on stderr."""
    if as_json:
        render.print_json(report.to_json())
    else:
        out = render.console()
        out.print(render.series_table(report, listing=list_only, width=out.width))
        for line in render.series_notes(report) + render.file_notes(report):
            out.print(line, soft_wrap=True)
        out.print(render.file_summary(report))
    _report_problems(report)


def _report_problems(report) -> None:
    """Refused and failed series on stderr: one line with the reason, one with the hint."""
    err = render.error_console()
    for note in getattr(report, "notes", []):
        err.print(f"[yellow]Note:[/] {note}", highlight=False, soft_wrap=True)
    for result in report.series:
        if result.status in ("refused", "failed", "skipped"):
            err.print(f"[bold yellow]{result.status.capitalize()}:[/] {result.reason}",
                      highlight=False, soft_wrap=True)
            if result.hint:
                err.print(f"[yellow]Hint:[/] {result.hint}", highlight=False, soft_wrap=True)
    not_tried = getattr(report, "not_tried", [])
    if not_tried:
        err.print(f"[bold yellow]Interrupted:[/] {len(report.series)} series done, "
                  f"{len(not_tried)} not converted: {', '.join(not_tried)}",
                  highlight=False, soft_wrap=True)
