"""One exception hierarchy for convkit.

Every error carries a one-line ``message`` (what went wrong) and a ``hint``
(what to do next). Only the CLI turns them into exit codes (see DESIGN.md):
the library raises, it never exits.
"""

from __future__ import annotations


class ConvkitError(Exception):
    """Base class: a message for the user and a hint on what to do next."""

    exit_code = 3

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ConvkitError):
    """A bad option or argument (exit 2)."""

    exit_code = 2


class InputError(ConvkitError):
    """Nothing usable, unreadable or unsupported input (exit 3)."""

    exit_code = 3


class UnreadableFileError(InputError):
    """One file's content cannot be read (exit 3); ``path`` names it."""

    def __init__(self, path: object, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.path = path


class RefusedError(ConvkitError):
    """The data cannot be converted faithfully without an explicit option (exit 4)."""

    exit_code = 4


class OutputError(ConvkitError):
    """The target exists without --force, or cannot be written (exit 5)."""

    exit_code = 5
