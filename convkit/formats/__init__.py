"""Volume <-> files. One module per format; write_volume picks by file name."""

from __future__ import annotations

from pathlib import Path

from convkit.errors import UsageError
from convkit.volume import Volume

#: --format values and the file suffix each one writes.
FORMATS = {"nii.gz": ".nii.gz", "nii": ".nii", "nrrd": ".nrrd", "nhdr": ".nhdr"}


def write_volume(volume: Volume, path: Path | str) -> None:
    """Write a Volume to path; the format follows the suffix (.nii, .nii.gz, .nrrd, .nhdr).

    This writes in place; use formats.output.staged_files for atomic outputs.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        from convkit.formats.nifti import write_nifti

        write_nifti(volume, path)
    elif name.endswith((".nrrd", ".nhdr")):
        from convkit.formats.nrrd import write_nrrd

        write_nrrd(volume, path)
    else:
        raise UsageError(f"unknown output format for {path.name}",
                         f"use one of {', '.join(FORMATS.values())}")
