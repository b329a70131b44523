"""Siemens CSA headers: the private element (0029,xx10) of 'SIEMENS CSA HEADER'.

A CSA header is Siemens' own little-endian list of named tags, each with a VR and
a list of text items. Two layouts exist: CSA2 starts with b"SV10" and gives each
item's length in its second int; CSA1 (older Syngo) has no magic and an odd item
length (first int minus the item count of tag 1). Numeric VRs are converted; an
empty item ends a numeric tag's values; items beyond the value multiplicity are
padding. This is the layout nibabel's csareader reads (tests check both readers
give the same values on real files); convkit reads it itself because discovery
meets a CSA header in every Siemens file, and importing nibabel for it would cost
each header worker a third of a second.
"""

from __future__ import annotations

import struct
from typing import Any

#: More tags or items than this means the bytes are not a CSA header.
MAX_ITEMS = 1000
_NUMBER = {"FL": float, "FD": float, "DS": float, "SS": int, "US": int, "SL": int, "UL": int,
           "IS": int}
_TAG = struct.Struct("<64si4s3i")
_ITEM = struct.Struct("<4i")
_COUNTS = struct.Struct("<2I")


class CSAError(ValueError):
    """The bytes are not a readable CSA header."""


def read_csa(raw: bytes) -> dict[str, list[Any]]:
    """{tag name: values} of a CSA1 or CSA2 header (numbers converted, text as str)."""
    csa2 = raw[:4] == b"SV10"
    position = 8 if csa2 else 0
    try:
        n_tags, _ = _COUNTS.unpack_from(raw, position)
    except struct.error as exc:
        raise CSAError("too short for a CSA header") from exc
    if not 0 < n_tags <= MAX_ITEMS:
        raise CSAError(f"{n_tags} tags: not a CSA header")
    position += _COUNTS.size
    tags: dict[str, list[Any]] = {}
    first_item_count = 0
    for tag_no in range(n_tags):
        try:
            name, vm, vr, _, n_items, _ = _TAG.unpack_from(raw, position)
        except struct.error as exc:
            raise CSAError(f"the header ends inside tag {tag_no}") from exc
        position += _TAG.size
        if n_items > MAX_ITEMS:
            raise CSAError(f"{n_items} items in one tag: not a CSA header")
        if tag_no == 1:
            first_item_count = n_items
        tags[_text(name)], position = _items(raw, position, _text(vr), vm or n_items, n_items,
                                             None if csa2 else first_item_count)
    return tags


def _items(raw: bytes, position: int, vr: str, n_values: int, n_items: int,
           csa1_offset: int | None) -> tuple[list[Any], int]:
    """The values of one tag and the position after its items."""
    convert = _NUMBER.get(vr)
    values: list[Any] = []
    for item_no in range(n_items):
        try:
            first, second, _, _ = _ITEM.unpack_from(raw, position)
        except struct.error as exc:
            raise CSAError("the header ends inside an item") from exc
        position += _ITEM.size
        if csa1_offset is None:
            length = second
            if position + length > len(raw):
                raise CSAError("an item runs past the end of the header")
        else:
            length = first - csa1_offset
            if length < 0 or position + length > len(raw):
                if item_no < n_values:
                    values.append("")
                break
        if item_no >= n_values:  # padding beyond the value multiplicity: must be empty
            if length:
                raise CSAError("an item beyond the value multiplicity holds data")
            continue
        text = _text(raw[position:position + length])
        if convert is not None:
            if length == 0:
                n_values = item_no  # an empty item ends the numbers
                continue
            try:
                values.append(convert(text))
            except ValueError as exc:
                raise CSAError(f"{text!r} is not a {vr} value") from exc
        else:
            values.append(text)
        position += length + (-length % 4)
    return values, position


def _text(data: bytes) -> str:
    """Bytes up to the first NUL, as text."""
    end = data.find(b"\x00")
    return (data if end < 0 else data[:end]).decode("latin-1")


def scalar(csa: dict[str, list[Any]] | None, name: str) -> Any:
    """The first value of a tag, or None when the tag is absent or empty."""
    items = (csa or {}).get(name) or []
    return items[0] if items else None


def vector(csa: dict[str, list[Any]] | None, name: str, count: int) -> list[Any] | None:
    """A tag's values when it holds exactly count of them; None when absent or empty."""
    items = (csa or {}).get(name) or []
    if not items:
        return None
    if len(items) != count:
        raise CSAError(f"{name} holds {len(items)} values, not {count}")
    return items
