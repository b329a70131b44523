"""convert as a library call: one image from any format to any volume format.

World geometry and values are preserved exactly: the reader normalises every
format to a RAS Volume and the writer encodes it again. What cannot be carried
faithfully is refused (a sheared affine, unless resampled) or reported.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from convkit import resample
from convkit.dicom.sidecar import sidecar_document
from convkit.errors import RefusedError, UsageError
from convkit.formats import FORMATS, volume_format, volume_stem, write_volume
from convkit.formats.nifti_read import SHEARED_SFORM_NOTE
from convkit.formats.output import staged_files
from convkit.geometry import is_sheared
from convkit.inputs import load_volume, sidecar_path
from convkit.volume import Volume


def convert_file(source: Path | str, target: Path | str, *, force: bool = False,
                 resample_shear: bool = False, series: str | None = None) -> dict[str, Any]:
    """Convert source (a volume file or DICOM) to target; return a JSON-ready report."""
    target = Path(target)
    if volume_format(target) is None:
        raise UsageError(f"unknown output format: {target.name}",
                         f"use one of {', '.join(FORMATS.values())}")
    volume = load_volume(source, series)
    if is_sheared(volume.affine):
        if not resample_shear:
            raise RefusedError(f"{source}: the affine is sheared (e.g. gantry tilt kept by "
                               "another converter); a plain copy would lose or fake it",
                               "--resample puts it on a regular grid along the slice normal",
                               "volume.sheared")
        volume = unshear_volume(volume)
    notes = list(volume.notes)
    sidecar = _sidecar_target(volume, target)
    try:
        with staged_files(target.parent, force) as stage:
            write_volume(volume, stage / target.name)
            if sidecar is not None:
                (stage / sidecar.name).write_text(
                    json.dumps(sidecar_document(volume.metadata), indent=2) + "\n")
    except RefusedError as exc:  # what the target format cannot hold: name the source
        raise RefusedError(f"{source}: {exc.message}", exc.hint, exc.code) from exc
    return {
        "input": str(source), "output": str(target), "shape": list(volume.shape),
        "spacing": [round(s, 6) for s in volume.spacing], "orientation": volume.orientation,
        "dtype": str(volume.array.dtype), "scaling": [volume.slope, volume.intercept],
        "notes": notes, "not_carried": _not_carried(volume, source, target),
        "sidecar": str(sidecar) if sidecar is not None else None,
    }


def _sidecar_target(volume: Volume, target: Path) -> Path | None:
    """NAME.json beside the target when the source is DICOM: the sidecar dicom2nii writes."""
    if volume.metadata.get("Format") != "DICOM":
        return None
    return target.with_name(volume_stem(target.name) + ".json")


def unshear_volume(volume: Volume) -> Volume:
    """Resample a volume whose slice axis is sheared onto a grid along the slice normal.

    Only the k axis may be sheared (what gantry tilt looks like): each slice is
    shifted in-plane by its own offset, linear within the slice, nothing between
    slices (the same correction as dicom2nii's --tilt resample).
    """
    linear = volume.affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    row, col = linear[:, 0] / spacing[0], linear[:, 1] / spacing[1]
    normal = np.cross(row, col)
    step = linear[:, 2]
    along = float(step @ normal)
    straight = volume.affine.copy()
    straight[:3, 2] = normal * along
    if is_sheared(straight) or along == 0:
        raise RefusedError("the in-plane axes are not orthogonal: only a sheared slice axis "
                           "(gantry tilt) can be resampled", "resample it with other software",
                           "volume.sheared")
    k = np.arange(volume.shape[2])
    offsets_px = np.stack([k * (step @ row) / spacing[0], k * (step @ col) / spacing[1]], axis=1)
    fill = float(volume.array.min()) if volume.array.size else 0.0
    array, origin_px = resample.unshear(volume.array, offsets_px, fill)
    affine = straight
    affine[:3, 3] += origin_px[0] * linear[:, 0] + origin_px[1] * linear[:, 1]
    note = (f"sheared slice axis resampled onto a grid along the normal (linear, in-plane): "
            f"{volume.shape[0]}x{volume.shape[1]} -> {array.shape[0]}x{array.shape[1]}")
    tilt = float(np.degrees(np.arccos(min(abs(along) / float(np.linalg.norm(step)), 1.0))))
    spacing_note = (f"slice spacing {abs(along):.4g} mm: the file's slice step "
                    f"({np.linalg.norm(step):.4g} mm, {tilt:.2f} degrees from the normal) "
                    "projected on the normal; convkit cannot check that step against the DICOM "
                    "positions (dicom2nii on the DICOM takes the spacing from them)")
    kept = [n for n in volume.notes if n != SHEARED_SFORM_NOTE]  # no longer true
    return dataclasses.replace(volume, array=array, affine=affine,
                               notes=kept + [note, spacing_note])


def _not_carried(volume: Volume, source: Path | str, target: Path) -> list[str]:
    """Header content of the source that the target format cannot hold, and a volume
    source's JSON sidecar (not copied: it describes the source file, e.g. its slice step)."""
    lost = []
    source = Path(source)
    if volume_format(source) and sidecar_path(source).is_file():
        lost.append(f"the sidecar {sidecar_path(source).name} (not copied)")
    if volume.scaled and volume_format(target) != "nifti":
        lost.append("slope/intercept (real values written instead)")
    if volume.metadata.get("Format", "").startswith("NIfTI") and volume_format(target) != "nifti":
        lost += ["qform_code/sform_code", "intent"]
    if volume.array.ndim == 4 and volume_format(target) != "nifti":
        lost.append("time step (NIfTI pixdim[4])")
    return lost
