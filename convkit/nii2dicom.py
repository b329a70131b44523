"""nii2dicom as a library call: a NIfTI/NRRD/MetaImage volume -> DICOM series.

A 3D volume becomes one series in OUT_DIR; a 4D volume one series per time point
in OUT_DIR/t0001, t0002, ... (series numbers counting up). Written atomically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from convkit.dicom.write import (
    SeriesIdentity,
    WrittenSeries,
    new_uid,
    validate_identity,
    write_dicom_series,
)
from convkit.errors import RefusedError, UsageError
from convkit.formats.output import staged_folder
from convkit.inputs import load_volume
from convkit.volume import Volume


def volume_to_dicom(
    source: Path | str | Volume,
    out_dir: Path | str,
    identity: SeriesIdentity | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[WrittenSeries]:
    """Write source (a volume file, a DICOM folder, or a Volume) as DICOM into out_dir."""
    identity = identity or SeriesIdentity()
    validate_identity(identity)
    out_dir = Path(out_dir)
    if not isinstance(source, Volume):
        _check_not_inside(Path(source), out_dir)
    volume = source if isinstance(source, Volume) else load_volume(source)
    volume = _as_3d_or_4d(volume)
    # One study and one frame of reference for every series written (all time points).
    identity = dataclasses.replace(identity, study_uid=identity.study_uid or new_uid(),
                                   frame_uid=identity.frame_uid or new_uid())
    if volume.array.ndim == 3:
        with staged_folder(out_dir, force) as stage:
            written = [write_dicom_series(volume, stage, identity, progress)]
        return [dataclasses.replace(w, folder=str(out_dir), notes=volume.notes + w.notes)
                for w in written]
    written = []
    with staged_folder(out_dir, force) as stage:
        n_times = volume.shape[3]
        for t in range(n_times):
            folder = stage / f"t{t + 1:04d}"
            folder.mkdir()
            frame = dataclasses.replace(volume, array=volume.array[..., t])
            one = dataclasses.replace(
                identity, series_number=identity.series_number + t,
                series_description=f"{identity.series_description} t={t + 1}/{n_times}")
            written.append(write_dicom_series(frame, folder, one))
            if progress:
                progress(t + 1, n_times)
    return [dataclasses.replace(w, folder=str(out_dir / Path(w.folder).name),
                                notes=volume.notes + w.notes) for w in written]


def _check_not_inside(source: Path, out_dir: Path) -> None:
    """--force replaces OUT_DIR as a whole: it must never hold the input."""
    source, target = source.resolve(), out_dir.resolve()
    if source == target or source.is_relative_to(target) or (
            source.is_dir() and target.is_relative_to(source)):
        raise UsageError(f"the output folder {out_dir} holds or is inside the input {source}",
                         "choose an output folder apart from the input")


def _as_3d_or_4d(volume: Volume) -> Volume:
    if 0 in volume.array.shape:
        raise RefusedError(f"a volume of shape {'x'.join(map(str, volume.array.shape))} holds no "
                           "voxels: nothing to write as DICOM", "check the volume's dimensions")
    if volume.array.ndim == 2:
        return dataclasses.replace(volume, array=volume.array[:, :, np.newaxis])
    if volume.array.ndim not in (3, 4):
        raise RefusedError(f"a {volume.array.ndim}D volume cannot be written as DICOM series",
                           "convkit writes 3D volumes, and 4D as one series per time point")
    return volume
