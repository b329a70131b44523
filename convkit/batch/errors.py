"""Why a manifest file cannot be used (exit 5, like any output that cannot be written)."""

from __future__ import annotations

from convkit.errors import OutputError


class ManifestFileError(OutputError):
    """The manifest (OUT/.convkit/manifest.sqlite) is corrupt, foreign or from a newer convkit."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint or "remove the folder .convkit in the output folder "
                                          "(the next run then converts every series again; "
                                          "give --force to replace the existing outputs)")


class ManifestBusyError(OutputError):
    """Another convkit is writing the manifest."""
