"""Volume <-> files. One module per format; write_volume picks by file name."""

from __future__ import annotations

import warnings
from pathlib import Path

from convkit.errors import InputError, UsageError
from convkit.formats.deflate import DeflatingStream
from convkit.formats.detached import external_data_allowed
from convkit.formats.mha import read_mha, write_mha
from convkit.formats.nifti import write_nifti
from convkit.formats.nifti_read import read_nifti
from convkit.formats.nrrd import write_nrrd
from convkit.formats.nrrd_read import read_nrrd
from convkit.volume import Volume

#: --format values and the file suffix each one writes.
FORMATS = {"nii.gz": ".nii.gz", "nii": ".nii", "nrrd": ".nrrd", "nhdr": ".nhdr",
           "mha": ".mha", "mhd": ".mhd"}
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_stem(name: str) -> str:
    """NAME of NAME.nii.gz, NAME.nrrd, NAME.mha ...: where the file's sidecars are found."""
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def volume_format(path: Path | str) -> str | None:
    """'nifti', 'nrrd' or 'mha' from the file name, or None."""
    name = Path(path).name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if name.endswith((".mha", ".mhd")):
        return "mha"
    return None


def read_volume(path: Path | str, *, allow_external_data: bool | None = None,
                max_bytes: int | None = None) -> Volume:
    """Read a NIfTI, NRRD or MetaImage file into a Volume (RAS affine).

    Raises InputError when the file cannot be read, RefusedError when it holds
    something convkit cannot represent faithfully (e.g. an NRRD without a space, a
    non-finite affine) or must not read: a detached data file outside the header's
    folder (allow_external_data=True reads it; None: as external_data_allowed sets it,
    by default not) or one that is not a regular file (formats.detached). max_bytes:
    the largest image allocated (default volume.MAX_VOLUME_BYTES), checked against the
    header before any voxel is read. Python warnings of the readers become notes.
    """
    path = Path(path)
    kind = volume_format(path)
    if kind is None:
        raise UsageError(f"unknown volume format: {path.name}",
                         f"use one of {', '.join(VOLUME_SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"{path} does not exist", "check the path")
    allow = external_data_allowed() if allow_external_data is None else allow_external_data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if kind == "nifti":
            volume = read_nifti(path, max_bytes)
        elif kind == "nrrd":
            volume = read_nrrd(path, allow, max_bytes)
        else:
            volume = read_mha(path, allow, max_bytes)
    volume.notes += [f"{path.name}: {item.category.__name__}: "
                     f"{(str(item.message).strip().splitlines() or [''])[0][:200]}"
                     for item in caught]
    return volume


def write_volume(volume: Volume, path: Path | str,
                 deflated: DeflatingStream | None = None) -> None:
    """Write a Volume to path; the format follows the suffix (.nii[.gz], .nrrd, .nhdr, .mha, .mhd).

    This writes in place; use formats.output.staged_files for atomic outputs.
    deflated: the voxels compressed while they were read (see nifti.write_nifti); used by
    .nii.gz only, cancelled otherwise.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        write_nifti(volume, path, deflated)
        return
    if deflated is not None:
        deflated.cancel()
    if name.endswith((".nrrd", ".nhdr")):
        write_nrrd(volume, path)
    elif name.endswith((".mha", ".mhd")):
        write_mha(volume, path)
    else:
        raise UsageError(f"unknown output format for {path.name}",
                         f"use one of {', '.join(FORMATS.values())}")
