"""Enhanced (multi-frame) DICOM: one SliceHeader per frame, from the functional groups.

Each frame's geometry and values come from its Per-frame Functional Groups item,
falling back to the Shared Functional Groups (PlanePosition, PlaneOrientation,
PixelMeasures, PixelValueTransformation, FrameContent, MREcho, MRImageFrameType /
CTImageFrameType, MRDiffusion). The frames then go through the same grouping,
ordering and geometry as single-frame files: a stack, an echo or an image type
becomes its own volume; repeated positions become time points.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from convkit.dicom import values
from convkit.dicom.diffusion import diffusion_header_fields
from convkit.dicom.vendors import is_philips, philips_scale_slope

#: Functional group sequences that carry what a frame needs, and the attributes read from each.
#: (Keywords only: pydicom warns about any other name given to `in`.)
_FRAME_TYPE_SEQUENCES = ("MRImageFrameTypeSequence", "CTImageFrameTypeSequence")


def frame_headers(ds: Any, base: Any) -> list[Any]:
    """Expand one enhanced multi-frame dataset into a SliceHeader per frame.

    base is the file's SliceHeader (top-level attributes). Frames without
    functional groups keep base's attributes, so a missing geometry stays missing
    and is refused later with a clear message.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared_items = ds.get("SharedFunctionalGroupsSequence") or []
    shared = shared_items[0] if shared_items else None
    n_frames = base.number_of_frames
    if len(per_frame) not in (0, n_frames):
        raise ValueError(f"{len(per_frame)} per-frame functional groups for {n_frames} frames")
    headers = []
    for index in range(n_frames):
        item = per_frame[index] if per_frame else None
        headers.append(_frame_header(ds, base, index, item, shared))
    return headers


def _frame_header(ds: Any, base: Any, index: int, item: Any, shared: Any) -> Any:
    def group(name: str) -> Any:
        return _group(item, shared, name)

    position = group("PlanePositionSequence")
    orientation = group("PlaneOrientationSequence")
    measures = group("PixelMeasuresSequence")
    scaling = group("PixelValueTransformationSequence")
    content = group("FrameContentSequence")
    frame_type = next((g for g in map(group, _FRAME_TYPE_SEQUENCES) if g is not None), None)
    echo_time = _frame_echo_time(item, shared)
    changes: dict[str, Any] = {"frame": index}
    if position is not None:
        changes["position"] = values.floats(position.get("ImagePositionPatient"), 3,
                                            "ImagePositionPatient")
    if orientation is not None:
        changes["orientation"] = values.floats(orientation.get("ImageOrientationPatient"), 6,
                                               "ImageOrientationPatient")
    if measures is not None:
        changes["pixel_spacing"] = values.floats(measures.get("PixelSpacing"), 2,
                                                 "PixelSpacing") or base.pixel_spacing
        changes["slice_thickness"] = values.to_float(measures.get("SliceThickness"),
                                                     "SliceThickness") or base.slice_thickness
        changes["spacing_between_slices"] = values.to_float(
            measures.get("SpacingBetweenSlices"), "SpacingBetweenSlices") or \
            base.spacing_between_slices
    if scaling is not None:
        changes["rescale_slope"] = values.to_float(scaling.get("RescaleSlope"),
                                                   "RescaleSlope") or 1.0
        changes["rescale_intercept"] = values.to_float(scaling.get("RescaleIntercept"),
                                                       "RescaleIntercept") or 0.0
    if content is not None:
        changes["temporal_position"] = values.to_int(content.get("TemporalPositionIndex"),
                                                     "TemporalPositionIndex")
        changes["stack_id"] = str(content.get("StackID", "") or "")
        changes["acquisition_time"] = values.datetime_seconds(
            content.get("FrameAcquisitionDateTime")) or base.acquisition_time
    if frame_type is not None and frame_type.get("FrameType"):
        changes["image_type"] = tuple(str(v).upper() for v in values.multi(frame_type.FrameType))
    if frame_type is not None and frame_type.get("ComplexImageComponent"):
        changes["complex_component"] = str(frame_type.ComplexImageComponent).strip().upper()
    weighting = item if item is not None and "MRDiffusionSequence" in item else shared
    if weighting is not None and "MRDiffusionSequence" in weighting:
        changes.update(diffusion_header_fields(ds, weighting))
    legacy = _philips_legacy_item(item)
    if legacy is not None and is_philips(base.manufacturer):
        changes["philips_scale_slope"] = philips_scale_slope(legacy) or base.philips_scale_slope
    if echo_time is not None:  # echoes are numbered across the series (group.py), not per file
        changes["echo_time"] = echo_time
    return dataclasses.replace(base, **changes)


def _philips_legacy_item(item: Any) -> Any:
    """Philips' per-frame private sequence (2005,140F) with the legacy per-frame attributes."""
    if item is None or (0x2005, 0x140F) not in item:
        return None
    sequence = item[0x2005, 0x140F].value
    return sequence[0] if sequence else None


def _group(item: Any, shared: Any, name: str) -> Any:
    """The first item of a functional group sequence: per-frame first, then shared."""
    for source in (item, shared):
        if source is not None and name in source and len(source[name].value):
            return source[name].value[0]
    return None


def _frame_echo_time(item: Any, shared: Any) -> float | None:
    echo = _group(item, shared, "MREchoSequence")
    return values.to_float(echo.get("EffectiveEchoTime"), "EffectiveEchoTime") \
        if echo is not None else None
