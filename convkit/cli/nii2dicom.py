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
    seg: bool = typer.Option(False, "--seg",
                             help="SOURCE is a label map: write OUT_DIR as one DICOM SEG file "
                                  "(e.g. mask.seg.dcm) referencing --reference."),
    reference: Path = typer.Option(None, "--reference",
                                   help="With --seg: the DICOM folder of the series the mask "
                                        "was drawn on."),
    labels: Path = typer.Option(None, "--labels",
                                help="With --seg: JSON with each label's name, color, category "
                                     "and type (see README)."),
    seg_type: str = typer.Option("labelmap", "--seg-type",
                                 help="With --seg: labelmap (Label Map Segmentation) | binary."),
    resample: bool = typer.Option(False, "--resample",
                                  help="With --seg: place a mask that is off the reference grid "
                                       "by nearest neighbour (refused otherwise)."),
    reference_series: str = typer.Option(None, "--reference-series",
                                         help="With --seg: the series of --reference to use "
                                              "(number, label or UID) when it holds several."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable report."),
) -> None:
    """Write a volume as a DICOM series (one file per slice) into OUT_DIR; with --seg, a
    label map as a DICOM Segmentation object."""
    if seg or reference is not None:
        _write_seg(source, out_dir, reference, labels, seg_type, resample, reference_series,
                   force, allow_external_data, as_json)
        return
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


def _write_seg(source: Path, out: Path, reference: Path | None, labels: Path | None,
               seg_type: str, resample: bool, series: str | None, force: bool,
               allow_external_data: bool, as_json: bool) -> None:
    from convkit.errors import UsageError
    from convkit.formats.detached import allowing_external_data
    from convkit.seg.dicomseg import write_seg

    if reference is None:
        raise UsageError("--seg needs --reference", "pass the DICOM folder of the source series")
    with allowing_external_data(allow_external_data):
        written = write_seg(source, reference, out, labels_file=labels, seg_type=seg_type,
                            resample=resample, series=series, force=force)
    if as_json:
        render.print_json({"input": str(source), "seg": written.to_json()})
        return
    out_console = render.console()
    out_console.print(f"[green]written[/] {written.segmentation_type} SEG {written.path}: "
                      f"{len(written.segments)} segments, {written.frames} frames "
                      f"(references {written.referenced_series})")
    for info in written.segments:
        out_console.print(f"  segment {info.segment}: {info.name} ({info.voxels} voxels)"
                          + "".join(f"; {note}" for note in info.notes))
    for note in written.notes:
        out_console.print(f"  {note}")
