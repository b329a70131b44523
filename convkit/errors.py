"""One exception hierarchy for convkit.

Every error carries a one-line ``message`` (what went wrong), a ``hint`` (what
to do next) and, where a program may want to tell causes apart, a stable
``code`` (the audit's finding codes, e.g. 'series.gap'): the audit reports why
dicom2nii refuses by reading the code, never by re-deriving the cause. Only the
CLI turns errors into exit codes (see DESIGN.md): the library raises, it never
exits.
"""

from __future__ import annotations


class ConvkitError(Exception):
    """Base class: a message for the user and a hint on what to do next."""

    exit_code = 3

    def __init__(self, message: str, hint: str = "", code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code

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

    def __init__(self, path: object, message: str, hint: str = "", code: str = "") -> None:
        super().__init__(message, hint, code)
        self.path = path


class RefusedError(ConvkitError):
    """The data cannot be converted faithfully without an explicit option (exit 4)."""

    exit_code = 4


class OutputError(ConvkitError):
    """The target exists without --force, or cannot be written (exit 5)."""

    exit_code = 5


#: Longest reason taken from a third-party exception into a one-line message.
REASON_CHARS = 200


def exception_reason(exc: BaseException, limit: int = REASON_CHARS, last: bool = False) -> str:
    """One line of an exception's text (its type name when it has none), for a message.

    Readers of damaged files (nibabel, pynrrd, pydicom, decoders) raise many types
    with long texts; a convkit message quotes one short line of them: the first, or
    the last (ITK puts its description after the file and line of the C++ source).
    """
    lines = str(exc).strip().splitlines()
    return (lines[-1] if last else lines[0])[:limit] if lines else type(exc).__name__
