"""One entry point for commands that take "any image": a volume file or DICOM.

load_volume accepts a NIfTI / NRRD / MetaImage file, a DICOM file, or a folder of
DICOM (with `series` choosing one when it holds several), and returns a Volume in
RAS, the same whatever the format.
"""

from __future__ import annotations

from pathlib import Path

from convkit.dicom.scan import scan_folder
from convkit.dicom.series import read_series
from convkit.errors import InputError, UsageError
from convkit.formats import read_volume, volume_format, volume_stem
from convkit.volume import Volume


def load_volume(path: Path | str, series: str | None = None, options=None, *,
                allow_external_data: bool | None = None,
                max_bytes: int | None = None) -> Volume:
    """A Volume from a volume file or from DICOM (a file or a folder).

    series: SeriesNumber, label or SeriesInstanceUID when a DICOM folder holds
    several series (required then). options: dicom.series.ConvertOptions.
    allow_external_data, max_bytes: for volume files, as formats.read_volume takes them
    (data files outside the header's folder; the largest image allocated).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist", "check the path")
    if path.is_file() and volume_format(path):
        volume = read_volume(path, allow_external_data=allow_external_data,
                             max_bytes=max_bytes)
        attach_sidecar(volume, path)
        return volume
    volume = _load_dicom(path, series, options)
    volume.metadata.setdefault("Format", "DICOM")
    return volume


def sidecar_path(path: Path) -> Path:
    """NAME.json beside NAME.nii.gz / .nii / .nrrd / .nhdr / .mha / .mhd."""
    return path.with_name(volume_stem(path.name) + ".json")


def attach_sidecar(volume: Volume, path: Path) -> None:
    """Merge the JSON sidecar beside a volume file into volume.metadata.

    The file's own header fields win over the sidecar's; an unreadable sidecar is
    noted and ignored (it never makes the image unreadable).
    """
    import json

    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        volume.notes.append(f"sidecar {sidecar.name} unreadable ({type(exc).__name__}): ignored")
        return
    if isinstance(data, dict):
        volume.metadata = {**data, **volume.metadata}
        volume.notes.append(f"acquisition fields from {sidecar.name}")


def _load_dicom(path: Path, series: str | None, options) -> Volume:
    scan = scan_folder(path, jobs=0)  # big trees: headers in worker processes, as the audit
    if not scan.series:
        raise InputError(f"{path}: no DICOM images and not a NIfTI/NRRD/MetaImage file",
                         "pass a .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd file, or a DICOM folder")
    groups = scan.series
    if series is not None:
        groups = [g for g in groups
                  if series in g.names]
        if not groups:
            raise UsageError(f"--series {series} matches no series in {path}",
                             "run `convkit dicom2nii --list` on the folder to see them")
    if len(groups) > 1:
        labels = ", ".join(g.label for g in groups)
        raise UsageError(f"{path} holds {len(groups)} series ({labels})",
                         "choose one with --series NUMBER|LABEL|UID")
    return read_series(groups[0], options)
