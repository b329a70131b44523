"""Series grouping: headers -> groups of images that form one volume each.

Grouping is by SeriesInstanceUID; a series is then split where its images cannot
be one volume (orientation, stack, matrix, echo, magnitude/phase/field map, frame
type, derived diffusion, localizer, GE B0 map half, GE phase-encoding polarity).
Each split gets a suffix for its file name (naming.py) and says why it was split
(SeriesGroup.split: the attributes that differ and their values).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from convkit.dicom.header import COMPLEX_COMPONENTS, FIELD_MAP_SUFFIX, SliceHeader
from convkit.geometry import same_orientation

#: GE's research reverse-polarity EPI: user data 12 (0019,10B3) says which volumes are
#: reversed (as dcm2niix reads it): 1 every volume, 2 the odd ones (1st, 3rd ...),
#: 3 the even ones (2nd, 4th ...), counting volumes from 1 in acquisition order.
GE_PEPOLAR_SEQUENCE = "epi_pepolar"
GE_PEPOLAR_RULES = {1: "all", 2: "odd", 3: "even"}
#: The suffix of reversed phase-encoding volumes split from a GE pepolar series.
REVERSED_SUFFIX = "_revpe"
#: Attributes that order the images at one position in time (what plan.TIME_KEYS starts
#: with; InstanceNumber is never one: it does not say what an image is).
_TIME_ATTRIBUTES = ("temporal_position", "trigger_time", "acquisition_time", "content_time",
                    "acquisition_number")
#: How each part of the volume key is named in a split's explanation.
_SPLIT_NAMES = {"localizer": "Localizer", "orientation": "ImageOrientationPatient",
                "stack": "StackID", "shape": "Rows x Columns", "echo": "EchoTime",
                "component": "ImageType/ComplexImageComponent", "frame_type": "FrameType value 4",
                "derived": "ImageType (derived)", "polarity": "PhaseEncodingPolarity",
                "other": "differing attribute"}
_COMPONENT_NAMES = {"": "magnitude", "_ph": "phase", "_real": "real", "_imag": "imaginary",
                    FIELD_MAP_SUFFIX: "field map (Hz)"}


@dataclass
class SeriesGroup:
    """Files that should form one volume (3D, or 4D over time)."""

    headers: list[SliceHeader]
    split_suffix: str = ""  # e.g. '_e2', '_ph', '_ori2': how this group differs from siblings
    label: str = ""  # unique, file-name-safe name, set by naming
    #: why one SeriesInstanceUID became several groups: per attribute that differs, this
    #: group's value and every value in the series (empty when the series is one group)
    split: list[dict[str, Any]] = field(default_factory=list)
    reversed_phase: bool = False  # GE pepolar volumes acquired with the reversed polarity

    @property
    def first(self) -> SliceHeader:
        return self.headers[0]

    @property
    def series_uid(self) -> str:
        return self.first.series_instance_uid

    @property
    def names(self) -> set[str]:
        """What --series accepts for this group: its SeriesNumber, label or SeriesInstanceUID."""
        return {str(self.first.series_number), self.label, self.series_uid}

    @property
    def n_files(self) -> int:
        """Files in the group (a multi-frame file or mosaic gives several images)."""
        return len({h.path for h in self.headers})

    @property
    def is_field_map(self) -> bool:
        """A B0 field map in Hz (its sidecar says Units: Hz)."""
        return FIELD_MAP_SUFFIX in self.split_suffix or self.first.is_field_map

    @property
    def split_reason(self) -> str:
        """One line: which attributes made this group an output of its own, with values."""
        return "; ".join(f"{item['attribute']} {item['value']} (series has "
                         f"{', '.join(item['values'])})" for item in self.split)


def group_series(headers: list[SliceHeader]) -> list[SeriesGroup]:
    """Group by SeriesInstanceUID, then split what cannot be one volume."""
    by_uid: dict[str, list[SliceHeader]] = {}
    for header in headers:
        by_uid.setdefault(header.series_instance_uid, []).append(header)
    groups = []
    for members in by_uid.values():
        groups.extend(_split_series(members))
    groups.sort(key=_group_sort_key)
    return groups


def _group_sort_key(group: SeriesGroup) -> tuple:
    number = group.first.series_number
    return (number is None, number or 0, group.series_uid, group.split_suffix)


class _VolumeKey(NamedTuple):
    """What every image of one volume shares (None/'' where it does not split the series)."""

    series_number: int | None
    localizer: bool
    orientation: int
    stack: str
    shape: tuple[int, int, int]
    echo: int | None
    component: str  # '' magnitude, '_ph', '_real', '_imag', '_fieldmaphz'
    frame_type: str  # enhanced FrameType value 4 where frames differ in it, else ''
    derived: str  # '' or '_ADC', '_TRACEW', ...
    polarity: str  # '' or REVERSED_SUFFIX (GE pepolar)
    other: str  # 'Attribute value' that alone tells repeated images apart (no time attribute)


def _split_series(members: list[SliceHeader]) -> list[SeriesGroup]:
    """One SeriesInstanceUID -> groups of images that share everything a volume must share."""
    members = _ge_b0map_parts(_ge_pepolar_parts(members))
    orientations: list[tuple[float, ...]] = []
    echo_of = _echo_numbers(members)
    echoes = sorted({e for e in echo_of.values() if e is not None})
    stacks = {h.stack_id for h in members}
    frame_types = {_frame_type(h) for h in members}
    parts: dict[_VolumeKey, list[SliceHeader]] = {}
    for header in members:
        # An image refused for its orientation (degenerate: no orientation left) stays with
        # the first orientation, so that its volume is refused rather than written without it.
        orientation = 0 if header.problem and header.orientation is None else \
            _orientation_index(orientations, header.orientation)
        key = _VolumeKey(
            header.series_number, header.is_localizer, orientation,
            header.stack_id if len(stacks) > 1 else "",
            (header.rows, header.columns, header.samples_per_pixel),
            echo_of[id(header)] if len(echoes) > 1 else None,
            header.complex_suffix,
            _frame_type(header) if len(frame_types) > 1 else "",
            header.derived_suffix,
            REVERSED_SUFFIX if header.reversed_phase else "", "",
        )
        parts.setdefault(key, []).append(header)
    parts = {key._replace(other=other): images for key, part in parts.items()
             for other, images in _separate(part).items()}
    keys = sorted(parts, key=lambda k: tuple((v is None, v) for v in k))
    groups = [SeriesGroup(sorted(parts[key], key=_slice_sort_key),
                          _split_suffix(key, keys, echoes), reversed_phase=bool(key.polarity))
              for key in keys]
    _explain(groups, keys)
    return groups


def _split_suffix(key: _VolumeKey, keys: list[_VolumeKey], echoes: list[int]) -> str:
    """How this group differs from its siblings of the same SeriesNumber, for its file name."""
    siblings = [k for k in keys if k.series_number == key.series_number]
    suffix = ""
    if key.localizer:
        suffix += "_localizer"
    else:
        orientation_ids = sorted({k.orientation for k in siblings if not k.localizer})
        if len(orientation_ids) > 1 and key.orientation != orientation_ids[0]:
            suffix += f"_ori{orientation_ids.index(key.orientation) + 1}"
    stacks = sorted({k.stack for k in siblings})
    if len(stacks) > 1 and key.stack != stacks[0]:
        suffix += f"_stack{key.stack}"
    if len({k.shape for k in siblings}) > 1:
        suffix += f"_{key.shape[1]}x{key.shape[0]}"
    if key.echo is not None and key.echo != echoes[0]:
        suffix += f"_e{key.echo}"
    frame_types = sorted({k.frame_type for k in siblings})
    if len(frame_types) > 1 and key.frame_type != frame_types[0]:
        suffix += "_" + "".join(ch for ch in key.frame_type.lower() if ch.isalnum())
    others = sorted({k.other for k in siblings})
    if len(others) > 1 and key.other != others[0]:
        suffix += f"_part{others.index(key.other) + 1}"
    polarity = key.polarity if len({k.polarity for k in siblings}) > 1 else ""
    return suffix + key.component + key.derived + polarity


#: What may tell apart images at one position that no time attribute orders, tried in order
#: (a series split by one of them becomes one output per value; see _separate).
_DIFFERENCES = (("EchoTime", "echo_time"), ("ImageType", "image_type"),
                ("RescaleSlope", "rescale_slope"), ("RescaleIntercept", "rescale_intercept"))


def _separate(images: list[SliceHeader]) -> dict[str, list[SliceHeader]]:
    """Images repeated at their positions with no time attribute to order them are not a
    time series: split them by the first attribute that makes each part one image per
    position ('Attribute=value' -> images); otherwise leave them whole (plan refuses them)."""
    if _volume_numbers(images) is not None or _max_repeats(images) < 2:
        return {"": images}
    for keyword, attribute in _DIFFERENCES:
        parts: dict[str, list[SliceHeader]] = {}
        for header in images:
            value = getattr(header, attribute)
            shown = "\\".join(value) if isinstance(value, tuple) else f"{value:g}" \
                if isinstance(value, float) else str(value)
            parts.setdefault(f"{keyword} {shown}", []).append(header)
        if len(parts) > 1 and all(_max_repeats(p) == 1 for p in parts.values()):
            return parts
    return {"": images}


def _max_repeats(images: list[SliceHeader]) -> int:
    """The most images at one position (2 decimals of a mm) and orientation."""
    counts: dict[tuple, int] = {}
    for place in _places(images):
        counts[place] = counts.get(place, 0) + 1
    return max(counts.values(), default=0)


def _places(images: list[SliceHeader]) -> list[tuple]:
    """Each image's position rounded to 2 decimals of a mm, and its orientation (the
    rounding done on all positions at once: np.round per image was most of grouping)."""
    placed = [h.position for h in images if h.position]
    if placed and all(len(p) == 3 for p in placed):
        rounded = iter(np.round(np.array(placed, dtype=float), 2).tolist())
    else:  # no positions, or one of another length: each on its own
        rounded = iter(np.round(p, 2).tolist() for p in placed)
    return [tuple(next(rounded) if h.position else ()) + tuple(h.orientation or ())
            for h in images]


def _echo_numbers(members: list[SliceHeader]) -> dict[int, int | None]:
    """Each image's echo (by id): EchoNumbers where the image has it; for an enhanced frame
    without, the rank of its EffectiveEchoTime among those of the whole series (exports
    that write each echo to a file of its own, Siemens XA, would be 'echo 1' in every file).
    Field maps have no echo of their own: they are told apart by their frame type."""
    ranked = [h for h in members if h.echo_number is None and h.echo_time is not None
              and _frame_type_known(h) and not h.is_field_map]
    times = sorted({h.echo_time for h in ranked if h.echo_time is not None})
    rank = {id(h): times.index(h.echo_time) + 1 for h in ranked if h.echo_time is not None}
    return {id(h): h.echo_number if h.echo_number is not None else rank.get(id(h))
            for h in members}


def _frame_type_known(header: SliceHeader) -> bool:
    """An enhanced frame (functional groups), not a single-frame file or a mosaic tile."""
    return header.frame >= 0 and header.mosaic is None


def _frame_type(header: SliceHeader) -> str:
    """FrameType value 4 of an enhanced frame (what its pixels are) where the component
    (magnitude, phase, real, imaginary, field map: complex_suffix) does not already say it;
    '' otherwise."""
    if not _frame_type_known(header) or len(header.image_type) < 4:
        return ""
    value = header.image_type[3]
    return "" if value in COMPLEX_COMPONENTS or value in ("FIELD_MAP", "NONE") else value


def _ge_pepolar_parts(members: list[SliceHeader]) -> list[SliceHeader]:
    """Mark the reversed-polarity images of a GE pepolar series (reversed_phase), following
    the volume order that user data 12 gives; a series whose rule or volume order is not
    known is refused (its images get a problem) rather than written with mirrored volumes."""
    first = members[0]
    if GE_PEPOLAR_SEQUENCE not in first.pulse_sequence:
        return members
    rule = GE_PEPOLAR_RULES.get(int(first.ge_user_data12)) \
        if first.ge_user_data12 is not None else None
    if rule is None or any(h.ge_user_data12 != first.ge_user_data12 for h in members):
        return _refused(members, "GE reverse-polarity EPI (epi_pepolar) with user data 12 "
                        f"(0019,10B3) {first.ge_user_data12}: which volumes are reversed is "
                        "not established")
    volume = _volume_numbers(members) if rule != "all" else {id(h): 1 for h in members}
    if volume is None:
        return _refused(members, "GE reverse-polarity EPI (epi_pepolar): no time attribute "
                        "orders the volumes, so the reversed ones cannot be told apart")
    parity = 0 if rule == "even" else 1  # 'all': every volume is number 1
    return [dataclasses.replace(h, reversed_phase=True) if volume[id(h)] % 2 == parity else h
            for h in members]


def _volume_numbers(members: list[SliceHeader]) -> dict[int, int] | None:
    """Each image's volume (from 1, by id), in acquisition order at its position: by the
    first time attribute that tells every image at each position apart; None if none does."""
    at: dict[tuple, list[SliceHeader]] = {}
    for header, place in zip(members, _places(members), strict=True):
        at.setdefault(place, []).append(header)
    for attribute in _TIME_ATTRIBUTES:
        times = [[getattr(h, attribute) for h in images] for images in at.values()]
        if all(None not in values and len(set(values)) == len(values) for values in times):
            return {id(h): rank + 1 for images in at.values()
                    for rank, h in enumerate(sorted(images, key=lambda h: getattr(h, attribute)))}
    return None


def _ge_b0map_parts(members: list[SliceHeader]) -> list[SliceHeader]:
    """GE B0 map series: the first half of the images (InstanceNumber up to the locations in
    acquisition, 0021,104F) is the field map in Hz, the second half its magnitude (as
    dcm2niix reads them). Field map images get FIELD_MAP in their ImageType."""
    first = members[0]
    locations = first.ge_locations
    if "b0map" not in first.pulse_sequence or not locations or len(members) != 2 * locations \
            or any(h.instance_number is None for h in members):
        return members
    return [dataclasses.replace(h, image_type=(*h.image_type[:2], "FIELD_MAP",
                                               *h.image_type[2:]))
            if (h.instance_number or 0) <= locations else h for h in members]


def _refused(members: list[SliceHeader], problem: str) -> list[SliceHeader]:
    return [dataclasses.replace(h, problem=h.problem or problem) for h in members]


def _explain(groups: list[SeriesGroup], keys: list[_VolumeKey]) -> None:
    """Record on each group of a split series which attributes differ, with the values."""
    if len(groups) < 2:
        return
    for name in _SPLIT_NAMES:
        if len({getattr(k, name) for k in keys}) < 2:
            continue
        shown = [_shown(name, getattr(k, name), g) for k, g in zip(keys, groups, strict=True)]
        attribute = _SPLIT_NAMES[name]
        if name == "component" and "b0map" in groups[0].first.pulse_sequence:
            attribute = "GE B0 map half (InstanceNumber up to LocationsInAcquisition 0021,104F)"
            shown = [f"{value}: InstanceNumber {min(h.instance_number or 0 for h in g.headers)}"
                     f"-{max(h.instance_number or 0 for h in g.headers)}"
                     for value, g in zip(shown, groups, strict=True)]
        every = list(dict.fromkeys(shown))
        for group, value in zip(groups, shown, strict=True):
            group.split.append({"attribute": attribute, "value": value, "values": every})


def _shown(name: str, value: Any, group: SeriesGroup) -> str:
    """A key's value as a user reads it (the first image of its group stands for it)."""
    first = group.first
    if name == "orientation" and first.orientation is not None:
        return "\\".join(f"{v:.4g}" for v in first.orientation)
    if name == "echo":
        return f"{first.echo_time:g} ms" if first.echo_time is not None else f"echo {value}"
    if name == "shape":
        return f"{value[0]}x{value[1]}" + (" RGB" if value[2] == 3 else "")
    if name == "component":
        return _COMPONENT_NAMES.get(value, value)
    if name == "polarity":
        return "reversed" if value else "forward"
    if name == "localizer":
        return "localizer" if value else "image"
    if name == "other":
        return value or "(first)"
    return str(value or "none")


def _orientation_index(
    known: list[tuple[float, ...]], orientation: tuple[float, ...] | None,
) -> int:
    """Index of the cluster of orientation (within tolerance), adding a new one if needed."""
    if orientation is None:
        return -1
    for index, other in enumerate(known):  # equal tuples first: the usual case, no numpy
        if orientation == other or same_orientation(np.asarray(orientation), np.asarray(other)):
            return index
    known.append(orientation)
    return len(known) - 1


def _slice_sort_key(header: SliceHeader) -> tuple:
    return (header.instance_order, str(header.path))
