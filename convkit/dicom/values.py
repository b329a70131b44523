"""Tolerant conversions of DICOM element values to Python numbers and tuples.

Real exports carry empty, malformed or multi-valued fields where single values
are expected; these helpers turn anything unusable into None instead of raising.
A number that parses but is not finite ('inf', 'NaN', '1e400') is not "unusable",
it is corrupt: reading it as None would quietly change what the file says (an
intercept of 0, a missing position), so it raises BadValueError naming the
attribute. These are the only functions in convkit that turn DICOM element values
into numbers.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

from convkit.errors import InputError

#: Characters of a bad value quoted in a message.
_QUOTED_CHARS = 40


class BadValueError(InputError):
    """An element holds a number that is not finite (or does not fit an integer)."""

    def __init__(self, keyword: str, value: Any) -> None:
        text = str(value).strip()
        if len(text) > _QUOTED_CHARS:
            text = text[:_QUOTED_CHARS] + "..."
        super().__init__(f"{keyword or 'a numeric attribute'} {text!r} is not a finite number",
                         "the file is corrupt: re-export it")
        self.keyword = keyword


def element(ds: Any, keyword: str) -> Any:
    """ds.get(keyword); BadValueError naming it when pydicom cannot convert the value
    because it is a number that is not finite (an IS of 'inf' raises OverflowError)."""
    try:
        return ds.get(keyword)
    except (OverflowError, ValueError) as exc:
        raw = getattr(ds.get_item(keyword), "value", b"") if hasattr(ds, "get_item") else b""
        text = raw.decode("latin-1", "replace") if isinstance(raw, bytes) else str(raw)
        if not any(_not_finite(part) for part in text.split("\\")):
            raise
        raise BadValueError(keyword, text) from exc


def _not_finite(text: str) -> bool:
    try:
        return not math.isfinite(float(text))
    except (ValueError, OverflowError):
        return False


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


def to_int(value: Any, keyword: str = "") -> int | None:
    """An integer (IS, US ...; '12.0' too), None when absent or malformed.

    Raises BadValueError for 'inf', 'nan' or '1e400' (keyword names the attribute).
    """
    number = to_float(value, keyword)
    if number is None:
        return None
    return int(number)


def to_float(value: Any, keyword: str = "") -> float | None:
    """A float, None when absent or malformed; BadValueError when not finite."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    except OverflowError:  # a huge int (an IS of 400 digits) does not fit a float
        raise BadValueError(keyword, value) from None
    if not math.isfinite(number):
        raise BadValueError(keyword, value)
    return number


def finite_or_none(value: Any) -> float | None:
    """Like to_float, but a non-finite value is None too: for values that only add detail
    (vendor fields, timing) and whose absence is handled."""
    try:
        return to_float(value)
    except BadValueError:
        return None


@overload
def floats(value: Any, count: Literal[2], keyword: str = "") -> tuple[float, float] | None: ...
@overload
def floats(value: Any, count: Literal[3], keyword: str = "",
           ) -> tuple[float, float, float] | None: ...
@overload
def floats(value: Any, count: int, keyword: str = "") -> tuple[float, ...] | None: ...
def floats(value: Any, count: int, keyword: str = "") -> tuple[float, ...] | None:
    """Exactly count floats, or None; BadValueError when one of them is not finite."""
    items = multi(value)
    if len(items) != count:
        return None
    numbers = []
    for item in items:
        if item is None or item == "":
            return None
        number = to_float(item, keyword)
        if number is None:
            return None
        numbers.append(number)
    if len(numbers) != count:
        return None
    return tuple(numbers)


def time_seconds(value: Any) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF) -> seconds since midnight (None when malformed)."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    if not math.isfinite(seconds):  # '1200inf', '1200nan'
        return None
    return hours * 3600 + minutes * 60 + seconds


def datetime_seconds(value: Any) -> float | None:
    """DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX) -> seconds since midnight of its day."""
    text = str(value or "").strip().split("+")[0].split("-")[0]
    return time_seconds(text[8:]) if len(text) > 8 else None
