"""convkit nii2dicom: a NIfTI/NRRD/MetaImage volume -> a valid DICOM series."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from convkit.cli import render


def nii2dicom(
    source: Path = typer.Argument(..., help="Volume file (.nii, .nii.gz, .nrrd, .nhdr, .mha, "
                                            ".mhd) or a DICOM folder."),
    out_dir: Path = typer.Argument(..., help="Output folder for the series (must be new or "
                                             "empty unless --force)."),
    modality: str = typer.Option("OT", "--modality",
                                 help="CT or MR (CT/MR Image Storage); anything else is written "
                                      "as Secondary Capture with that Modality."),
    template: Path = typer.Option(None, "--template",
                                  help="DICOM folder whose patient and study attributes to copy."),
    same_study: bool = typer.Option(False, "--same-study",
                                    help="With --template: also reuse its StudyInstanceUID and "
                                         "FrameOfReferenceUID."),
    patient_name: str = typer.Option(None, "--patient-name", help="Default: Anonymous."),
    patient_id: str = typer.Option(None, "--patient-id", help="Default: ANON."),
    study_description: str = typer.Option(None, "--study-description"),
    series_description: str = typer.Option("convkit", "--series-description"),
    series_number: int = typer.Option(9001, "--series-number"),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    allow_external_data: bool = typer.Option(
        False, "--allow-external-data",
        help="Read NRRD/MetaImage data files outside the header's folder (only for headers "
             "you trust)."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable report."),
) -> None:
    """Write a volume as a DICOM series (one file per slice) into OUT_DIR."""
    from convkit.dicom.write import SeriesIdentity, template_attributes
    from convkit.errors import UsageError
    from convkit.formats.detached import allowing_external_data
    from convkit.nii2dicom import volume_to_dicom

    if same_study and template is None:
        raise UsageError("--same-study needs --template", "pass the series to file next to")
    copied, study_uid, frame_uid = template_attributes(template, same_study) if template \
        else ([], None, None)
    given = {"PatientName": patient_name, "PatientID": patient_id,
             "StudyDescription": study_description}
    identity = SeriesIdentity(
        patient_name=patient_name or "Anonymous^", patient_id=patient_id or "ANON",
        study_description=study_description or "", series_description=series_description,
        series_number=series_number, modality=modality, study_uid=study_uid,
        frame_uid=frame_uid, template=[e for e in copied if not given.get(e.keyword)])
    with allowing_external_data(allow_external_data):
        written = volume_to_dicom(source, out_dir, identity, force=force)
    if as_json:
        render.print_json({"input": str(source), "series": [asdict(w) for w in written]})
        return
    out = render.console()
    for series in written:
        out.print(f"[green]written[/] {series.files} files to {series.folder} "
                  f"(SeriesInstanceUID {series.series_uid})")
        for note in series.notes:
            out.print(f"  {note}")
