"""One series group -> one Volume, with geometry exactly as the headers say.

The pipeline of one series: plan it from headers (plan.py: layout, grid,
refusals), decode and place its pixels (pixels.py), then attach what the sidecar
says (sidecar.py). The affine is the plan's grid, so what is written is what the
audit predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit.dicom.dataset import is_read_error, read_reason, warnings_caught
from convkit.dicom.group import SeriesGroup
from convkit.dicom.header import SliceHeader
from convkit.dicom.overlays import overlay_fields, overlay_summary
from convkit.dicom.pixels import SliceProgress, cast_real, read_pixels
from convkit.dicom.plan import ConvertOptions, SeriesPlan, plan_series, slice_timing
from convkit.dicom.scan import scan_folder
from convkit.dicom.sidecar import sidecar_fields, source_images
from convkit.errors import InputError, UnreadableFileError
from convkit.formats.deflate import DeflatingStream
from convkit.volume import Volume


def read_series(
    source: SeriesGroup | Path | str,
    options: ConvertOptions | None = None,
    progress: SliceProgress | None = None,
    deflating: DeflatingStream | None = None,
) -> Volume:
    """Read one series into a Volume (RAS affine, stored values + scaling).

    source is a SeriesGroup from scan_folder, or a folder holding exactly one series.
    Raises RefusedError when the data cannot be converted faithfully with these
    options, InputError when it cannot be read. deflating: compresses the voxels while
    they are decoded (read_pixels), for write_volume(..., deflated=) of this volume.
    """
    options = options or ConvertOptions()
    group = _single_group(source) if not isinstance(source, SeriesGroup) else source
    plan = plan_series(group, options)  # the same decisions audit reports, from headers
    if plan.refusal is not None:
        raise plan.refusal
    array, slope, intercept, notes = read_pixels(plan, options.philips_precise, progress,
                                                 deflating)
    table = plan.diffusion
    volume = Volume(array, plan.grid.affine, slope, intercept, notes=notes,
                    diffusion=(table.bvals, table.directions) if table is not None else None)
    layout, first = plan.layout, plan.first
    if layout.time_key:
        volume.notes.append(f"{layout.n_times} volumes ordered by {layout.time_key}")
    if options.dtype:
        cast_real(volume, options.dtype)
    with warnings_caught() as caught:
        try:
            volume.metadata = sidecar_fields(first, options.keep_identifiers)
        except Exception as exc:
            if not is_read_error(exc):
                raise
            raise UnreadableFileError(first.path, f"{first.path}: header: {read_reason(exc)}",
                                      "re-export the series") from exc
    volume.notes.extend(f"pydicom: {text}" for text in caught  # unless decoding said it
                        if not any(note.startswith(f"pydicom: {text}") for note in volume.notes))
    _add_sidecar_fields(volume, group, plan, options)
    if group.reversed_phase:  # plan_series refused what this is not established for
        _unmirror_reversed(volume)
    return volume


def _add_sidecar_fields(volume: Volume, group: SeriesGroup, plan: SeriesPlan,
                        options: ConvertOptions) -> None:
    """What the sidecar says besides the first header's fields: overlays, conversion,
    gradients, Philips scaling, provenance, timing."""
    first, layout = plan.first, plan.layout
    overlays = overlay_summary(group.headers)
    if overlays:  # reported, never dropped silently
        volume.notes.append(f"{overlays}: not part of the image (dicom2nii --overlays writes "
                            "them as a label map)")
        volume.metadata.update(overlay_fields(group.headers))
    volume.metadata.update(_conversion_fields(plan, volume))
    if plan.diffusion is not None and plan.diffusion.missing_bvec:
        volume.metadata["BvecNotWritten"] = plan.diffusion.missing_bvec
    if layout.n_times > 1:
        volume.repetition_time_s = volume.metadata.get("RepetitionTime")
    if first.philips_scale_slope:
        volume.metadata.update(philips_scaling_fields(first, options.philips_precise))
    if options.provenance:
        volume.metadata.update(provenance_fields(plan))
    timing = slice_timing(layout)
    if timing is not None:
        volume.metadata["SliceTiming"] = timing
    if "EchoTime" not in volume.metadata and first.echo_time is not None:
        volume.metadata["EchoTime"] = round(first.echo_time / 1000, 9)
    volume.metadata.update(split_fields(group, volume.metadata))


def _unmirror_reversed(volume: Volume) -> None:
    """GE pepolar volumes acquired with the reversed polarity are stored mirrored along the
    image columns (j): mirror them back, as dcm2niix does."""
    volume.array = np.asfortranarray(volume.array[:, ::-1])
    volume.notes.append("reversed phase-encoding volumes mirrored back along the image columns "
                        "(GE pepolar, as dcm2niix)")


def split_fields(group: SeriesGroup, metadata: dict) -> dict:
    """What the grouping decided, for the sidecar: why this output was split from its series
    (ConvkitSplit), Units of a field map, and the phase-encoding direction of volumes that a
    GE pepolar series acquired with the reversed polarity."""
    fields: dict = {}
    if group.split:
        fields["ConvkitSplit"] = {"reason": group.split_reason, "attributes": group.split}
    if group.is_field_map:
        fields["Units"] = "Hz"
    direction = metadata.get("PhaseEncodingDirection")
    if group.reversed_phase:
        fields["PhaseEncodingPolarityReversed"] = True
        if isinstance(direction, str) and direction:
            fields["PhaseEncodingDirection"] = direction.rstrip("-") if direction.endswith("-") \
                else direction + "-"
    return fields


def _single_group(folder: Path | str) -> SeriesGroup:
    scan = scan_folder(folder)
    if len(scan.series) != 1:
        found = ", ".join(g.label for g in scan.series) or "none"
        raise InputError(f"{folder} holds {len(scan.series)} series ({found}), not one",
                         "use scan_folder() and pass one SeriesGroup")
    return scan.series[0]


def _conversion_fields(plan: SeriesPlan, volume: Volume) -> dict:
    """What convkit found and did, for the sidecar."""
    return {
        "SliceSpacingFromPositions": round(volume.spacing[2], 6),
        "GantryTiltFromPositions": round(plan.stack.tilt_degrees, 4),
        "TiltCorrected": plan.stack.sheared,
        "Resampled": bool(plan.stack.gaps),
        "VolumeOrderedBy": plan.layout.time_key,
        "ConvkitNotes": list(volume.notes),
    }


def provenance_fields(plan: SeriesPlan) -> dict:
    """--provenance: SourceImages ([t][k] -> [SOPInstanceUID, file, image]); when slices
    were interpolated onto a regular grid (--resample), they are the source slices in
    position order, not the output's."""
    fields: dict = {"SourceImages": source_images(plan.layout.positions)}
    fields["SourceImagesAreOutputSlices"] = not plan.stack.gaps
    return fields


def philips_scaling_fields(first: SliceHeader, philips_precise: bool | None) -> dict:
    """Which Philips values were written (PhilipsScaling: precise | display), why, and the
    private scale slope (to go from one to the other: precise = display / (RS * SS))."""
    precise = first.uses_precise(philips_precise)
    why = ("asked for" if philips_precise is not None
           else f"default for a {first.physical_kind} image" if first.physical_kind
           else "default for an image that is not phase or a field map")
    return {"PhilipsScaling": "precise" if precise else "display",
            "PhilipsScalingReason": why, "PhilipsScaleSlope": first.philips_scale_slope}
