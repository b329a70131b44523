"""Detached data files (NRRD `data file:`, MetaImage `ElementDataFile =`): where they are.

One rule for both formats, used by every reader and by the audit: a name is
resolved against the folder of the header that names it (an absolute name stands
as it is); a list of files (`LIST`, or a printf-style `%` pattern with its range)
is reported as several files, never guessed at.
"""

from __future__ import annotations

from pathlib import Path


def several_data_files(name: str) -> bool:
    """True when a data-file entry names several files (LIST, or a pattern and its range)."""
    name = name.strip()
    return name.upper().startswith("LIST") or "%" in name or len(name.split()) > 1


def data_file_path(header_path: Path, name: str) -> Path:
    """The path of the single data file that a header names (see several_data_files first)."""
    return header_path.parent / name.strip()
