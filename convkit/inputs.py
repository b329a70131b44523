"""One entry point for commands that take "any image": a volume file or DICOM.

load_volume accepts a NIfTI / NRRD / MetaImage file, a DICOM file, or a folder of
DICOM (with `series` choosing one when it holds several), and returns a Volume in
RAS, the same whatever the format.
"""

from __future__ import annotations

from pathlib import Path

from convkit.errors import InputError, UsageError
from convkit.volume import Volume


def load_volume(path: Path | str, series: str | None = None, options=None) -> Volume:
    """A Volume from a volume file or from DICOM (a file or a folder).

    series: SeriesNumber, label or SeriesInstanceUID when a DICOM folder holds
    several series (required then). options: dicom.series.ConvertOptions.
    """
    from convkit.formats import read_volume, volume_format

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path")
    if path.is_file() and volume_format(path):
        return read_volume(path)
    return _load_dicom(path, series, options)


def _load_dicom(path: Path, series: str | None, options) -> Volume:
    from convkit.dicom.scan import scan_folder
    from convkit.dicom.series import read_series

    scan = scan_folder(path)
    if not scan.series:
        raise InputError(f"{path}: no DICOM images and not a NIfTI/NRRD/MetaImage file",
                         "pass a .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd file, or a DICOM folder")
    groups = scan.series
    if series is not None:
        groups = [g for g in groups
                  if series in (str(g.first.series_number), g.label, g.series_uid)]
        if not groups:
            raise UsageError(f"--series {series} matches no series in {path}",
                             "run `convkit dicom2nii --list` on the folder to see them")
    if len(groups) > 1:
        labels = ", ".join(g.label for g in groups)
        raise UsageError(f"{path} holds {len(groups)} series ({labels})",
                         "choose one with --series NUMBER|LABEL|UID")
    return read_series(groups[0], options)
