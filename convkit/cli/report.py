"""convkit report: one HTML page with a picture, the facts and the findings of every series."""

from __future__ import annotations

from pathlib import Path

import typer

from convkit.cli import render
from convkit.cli.progress import progress_bar


def report(
    path: Path = typer.Argument(..., help="DICOM tree, folder of volumes, or both."),
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE",
                                help="The page to write (NAME.html)."),
    assets: Path = typer.Option(None, "--assets", metavar="DIR",
                                help="Write the pictures into DIR beside the page instead of "
                                     "inside it."),
    show_identifiers: bool = typer.Option(False, "--show-identifiers",
                                          help="Show patient names and IDs on the page."),
    jobs: int = typer.Option(0, "--jobs", "-j",
                             help="Processes reading headers and drawing pictures (0: all "
                                  "cores)."),
    index_file: Path = typer.Option(None, "--index", metavar="FILE",
                                    help="SQLite archive index of the tree (created if "
                                         "missing, as `convkit audit --index`): only new "
                                         "and changed files are read."),
    as_json: bool = typer.Option(False, "--json", help="Print what the page shows as JSON."),
    force: bool = typer.Option(False, "--force", help="Overwrite the page and DIR."),
) -> None:
    """Write a self-contained QC page: one row per series and volume file, errors first.

    Thumbnails (three planes, the preview's window and orientation letters; full size on
    click), the key facts, the audit's findings, filters, sorting, and a pass/fail/unsure
    rating per row kept in the browser and exported as CSV or JSON. The page makes no
    network request and opens from file://.
    """
    from convkit.report import build_report

    labels = {"scan": "Scanning files", "volumes": "Reading volume headers",
              "pictures": "Drawing pictures"}
    with progress_bar(enabled=not as_json, labels=labels) as progress:
        result = build_report(path, output, assets=assets, show_identifiers=show_identifiers,
                              jobs=jobs, force=force, progress=progress, index=index_file)
    if as_json:
        render.print_json(result.to_json())
        return
    summary = result.summary()
    counts = ", ".join(f"{summary[s]} {s}" for s in ("error", "warning", "info", "ok"))
    where = f" (pictures in {result.assets})" if result.assets else ""
    render.console().print(
        f"written {result.output}{where}: {summary['series']} series, {summary['volumes']} "
        f"volume file(s); {counts}", highlight=False, soft_wrap=True)
