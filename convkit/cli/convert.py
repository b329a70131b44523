"""convkit convert: one image between NIfTI, NRRD and MetaImage (or from DICOM)."""

from __future__ import annotations

from pathlib import Path

import typer

from convkit.cli import render


def convert(
    source: Path = typer.Argument(..., help="Volume file or DICOM folder."),
    target: Path = typer.Argument(..., help="Output file: .nii, .nii.gz, .nrrd, .nhdr, .mha, "
                                            ".mhd."),
    series: str = typer.Option(None, "--series", "-s",
                               help="With a DICOM folder of several series: which one."),
    resample: bool = typer.Option(False, "--resample",
                                  help="Resample a sheared affine (gantry tilt) onto a regular "
                                       "grid instead of refusing."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
    allow_external_data: bool = typer.Option(
        False, "--allow-external-data",
        help="Read NRRD/MetaImage data files outside the header's folder (only for headers "
             "you trust)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable report."),
) -> None:
    """Convert SOURCE to TARGET, keeping world geometry and values exactly."""
    from convkit.convert import convert_file
    from convkit.formats.detached import allowing_external_data

    with allowing_external_data(allow_external_data):
        report = convert_file(source, target, force=force, resample_shear=resample,
                              series=series)
    err = render.error_console()
    for note in report["notes"]:
        err.print(f"[yellow]Note:[/] {note}", highlight=False, soft_wrap=True)
    if as_json:
        render.print_json(report)
        return
    shape = "x".join(map(str, report["shape"]))
    sidecar = f" + {report['sidecar']}" if report.get("sidecar") else ""
    render.console().print(f"[green]written[/] {target}{sidecar} ({shape}, "
                           f"{report['orientation']}, {report['dtype']})")
