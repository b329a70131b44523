"""Series grouping: headers -> groups of images that form one volume each.

Grouping is by SeriesInstanceUID; a series is then split where its images cannot
be one volume (orientation, stack, matrix, echo, magnitude/phase, derived
diffusion, localizer). Each split gets a suffix for its file name (naming.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from convkit.dicom.header import SliceHeader
from convkit.geometry import same_orientation


@dataclass
class SeriesGroup:
    """Files that should form one volume (3D, or 4D over time)."""

    headers: list[SliceHeader]
    split_suffix: str = ""  # e.g. '_e2', '_ph', '_ori2': how this group differs from siblings
    label: str = ""  # unique, file-name-safe name, set by naming

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
    """What every image of one volume shares (None where it does not split the series)."""

    series_number: int | None
    localizer: bool
    orientation: int
    stack: str
    shape: tuple[int, int, int]
    echo: int | None
    component: str  # '' magnitude, '_ph', '_real', '_imag'
    derived: str  # '' or '_ADC', '_TRACEW', ...


def _split_series(members: list[SliceHeader]) -> list[SeriesGroup]:
    """One SeriesInstanceUID -> groups of images that share everything a volume must share."""
    orientations: list[tuple[float, ...]] = []
    echoes = sorted({h.echo_number for h in members if h.echo_number is not None})
    stacks = {h.stack_id for h in members}
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
            header.echo_number if len(echoes) > 1 else None,
            header.complex_suffix,
            header.derived_suffix,
        )
        parts.setdefault(key, []).append(header)
    keys = sorted(parts, key=lambda k: tuple((v is None, v) for v in k))
    return [SeriesGroup(sorted(parts[key], key=_slice_sort_key), _split_suffix(key, keys, echoes))
            for key in keys]


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
    return suffix + key.component + key.derived


def _orientation_index(
    known: list[tuple[float, ...]], orientation: tuple[float, ...] | None,
) -> int:
    """Index of the cluster of orientation (within tolerance), adding a new one if needed."""
    if orientation is None:
        return -1
    for index, other in enumerate(known):
        if same_orientation(np.asarray(orientation), np.asarray(other)):
            return index
    known.append(orientation)
    return len(known) - 1


def _slice_sort_key(header: SliceHeader) -> tuple:
    return (header.instance_order, str(header.path))
