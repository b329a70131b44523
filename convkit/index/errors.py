"""Why an index file cannot be used (exit 5, like any output that cannot be written)."""

from __future__ import annotations

from convkit.errors import OutputError


class IndexFileError(OutputError):
    """The index file cannot be used: corrupt, foreign, or from a newer convkit."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint or "--rebuild replaces it with a new index (it only "
                                          "caches what the files hold)")


class IndexBusyError(OutputError):
    """Another convkit is writing the index."""
