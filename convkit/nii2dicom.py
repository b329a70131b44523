"""nii2dicom as a library call: a NIfTI/NRRD/MetaImage volume -> DICOM series.

A 3D volume becomes one series in OUT_DIR; a 4D volume one series per time point
in OUT_DIR/t0001, t0002, ... (series numbers counting up). Written atomically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from convkit.dicom.write import SeriesIdentity, WrittenSeries, write_dicom_series
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
    volume = source if isinstance(source, Volume) else load_volume(source)
    out_dir = Path(out_dir)
    if volume.array.ndim == 3:
        with staged_folder(out_dir, force) as stage:
            written = [write_dicom_series(volume, stage, identity, progress)]
        return [dataclasses.replace(w, folder=str(out_dir)) for w in written]
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
    return [dataclasses.replace(w, folder=str(out_dir / Path(w.folder).name)) for w in written]
