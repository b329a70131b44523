"""pydicom, read safely: the one place that turns what pydicom does with a damaged file
into a reason.

pydicom reads almost anything (force=True) and says what it found odd through Python
warnings (invalid VR values, unknown character sets, a file that ends before a
delimiter) rather than exceptions, converts element values lazily (so a bad value
raises when it is used, wrapped with the tag and a multi-line traceback in its text),
and recurses into nested sequences (RecursionError on a file nested thousands of
levels deep). Callers wrap everything they do with a dataset in ``warnings_caught()``
and turn what was caught into notes or errors; ``is_read_error`` tells the exceptions
that mean "this file cannot be read" from convkit's own bugs.
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convkit.errors import exception_reason

#: pydicom's exception types that mean a damaged file, matched by name (pydicom is imported
#: only where it is needed): InvalidDicomError, BytesLengthException (a value whose length
#: is not a multiple of its VR's size).
_PYDICOM_ERRORS = frozenset({"InvalidDicomError", "BytesLengthException"})
#: What pydicom says of a value whose length is not a multiple of its VR's size.
_BYTES_LENGTH = re.compile(r"with length (\d+).*parse \(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\) "
                           r"according to VR '(\w\w)'", re.DOTALL)
#: Warning texts that mean the file is incomplete, not merely odd.
TRUNCATION_WARNINGS = ("End of file reached", "Unexpected end of file",
                       "no JPEG EOI/EOC marker", "fewer frames than expected")


def is_read_error(exc: BaseException) -> bool:
    """Exceptions that mean "this file cannot be read" (not a bug in convkit); zlib's for a
    deflated dataset cut short; struct's for an element header cut short; NotImplementedError
    is what pydicom raises for an element whose VR bytes are no VR at all."""
    return isinstance(exc, (OSError, ValueError, TypeError, AttributeError, KeyError,
                            IndexError, EOFError, OverflowError, RecursionError,
                            MemoryError, NotImplementedError, struct.error, zlib.error)) \
        or type(exc).__name__ in _PYDICOM_ERRORS


def read_reason(exc: BaseException) -> str:
    """One line for a read error (pydicom's tag-wrapped texts carry a traceback)."""
    if isinstance(exc, RecursionError):
        return "sequences nested too deeply to read"
    if isinstance(exc, MemoryError):
        return "an element too large to hold in memory"
    found = _BYTES_LENGTH.search(str(exc))
    if found:  # name the element, not pydicom's struct format
        length, group, element, vr = found.groups()
        from pydicom.datadict import keyword_for_tag

        keyword = keyword_for_tag(int(group + element, 16)) or "an element"
        return f"{keyword} ({group},{element}): a {vr} value of {length} bytes (odd length)"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):  # "raised by all available plugins:" ...
        return exception_reason(Exception(f"{lines[0]} {lines[1]}"))
    return exception_reason(exc)


def read_dataset(path: Path, stop_before_pixels: bool = True) -> Any:
    """pydicom's dataset of a file (force=True: files without a preamble too)."""
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)


@contextmanager
def warnings_caught() -> Iterator[list[str]]:
    """Catch every warning raised inside (none reaches stderr); yield the list their first
    lines are put in, each text once, in order."""
    texts: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield texts
        finally:
            for item in caught:
                text = exception_reason(item.message) if isinstance(item.message, Warning) \
                    else str(item.message)
                if text not in texts:
                    texts.append(text)


def truncation(texts: list[str]) -> str:
    """The first caught warning that says the file is incomplete, or ''."""
    return next((text for text in texts if any(mark in text for mark in TRUNCATION_WARNINGS)),
                "")
