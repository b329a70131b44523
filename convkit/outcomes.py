"""What happened to one item of a batch (a series, a preview), and the batch's exit code.

dicom2nii and preview share these, so that the same outcomes give the same exit
codes (DESIGN.md): 0 all done, 6 partial, 4 all refused, 3 all failed.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Outcome(StrEnum):
    """The status of one item (a str: JSON, CSV and tables show the value)."""

    WRITTEN = "written"
    FOUND = "found"  # listed only (dicom2nii --list)
    REFUSED = "refused"  # cannot be converted faithfully with these options (exit 4)
    FAILED = "failed"  # could not be read or written (exit 3)
    UP_TO_DATE = "up to date"  # written by an earlier run, verified (dicom2nii's manifest)
    SKIPPED = "skipped"  # failed in an earlier run, not tried again (counts as failed)


#: Outcomes of an item that is done.
DONE = frozenset({Outcome.WRITTEN, Outcome.FOUND, Outcome.UP_TO_DATE})


def batch_exit_code(outcomes: Iterable[Outcome]) -> int:
    """0 when every item is done, 6 when some are, else 4 if any was refused, else 3."""
    outcomes = list(outcomes)
    if all(o in DONE for o in outcomes):
        return 0
    if Outcome.WRITTEN in outcomes or Outcome.UP_TO_DATE in outcomes:
        return 6
    return 4 if Outcome.REFUSED in outcomes else 3
