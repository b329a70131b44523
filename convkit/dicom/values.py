"""Tolerant conversions of DICOM element values to Python numbers and tuples.

Real exports carry empty, malformed or multi-valued fields where single values
are expected; these helpers turn anything unusable into None instead of raising.
"""

from __future__ import annotations

from typing import Any, Literal, overload


def multi(value: Any) -> list:
    """A list of the values of a (possibly single- or multi-valued) element."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def first(value: Any) -> Any:
    items = multi(value)
    return items[0] if items else None


def to_int(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(float(value))
    except (TypeError, ValueError):
        return None


def to_float(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


@overload
def floats(value: Any, count: Literal[2]) -> tuple[float, float] | None: ...
@overload
def floats(value: Any, count: Literal[3]) -> tuple[float, float, float] | None: ...
@overload
def floats(value: Any, count: int) -> tuple[float, ...] | None: ...
def floats(value: Any, count: int) -> tuple[float, ...] | None:
    """Exactly count floats, or None."""
    items = multi(value)
    if len(items) != count:
        return None
    try:
        return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None


def time_seconds(value: Any) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF) -> seconds since midnight."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds


def datetime_seconds(value: Any) -> float | None:
    """DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX) -> seconds since midnight of its day."""
    text = str(value or "").strip().split("+")[0].split("-")[0]
    return time_seconds(text[8:]) if len(text) > 8 else None
