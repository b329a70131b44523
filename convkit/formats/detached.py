"""Detached data files (NRRD `data file:`, MetaImage `ElementDataFile =`): where they are,
and whether convkit may read them.

One rule for both formats, used by every reader and by the audit:

- a name is resolved against the folder of the header that names it (an absolute
  name stands as it is), as pynrrd and ITK resolve it;
- the file must stay inside that folder once `..` and symbolic links are resolved,
  unless the caller allows external data (`allow_external_data=True`,
  `--allow-external-data`): a header must not make convkit read a file elsewhere on
  the machine (and copy its bytes into an output);
- it must be a regular file: a FIFO (opening one blocks), a device, a socket or a
  folder is refused always, and never opened;
- a list of files (`LIST` and the names that follow it, or a printf-style pattern
  `name%03d.raw MIN MAX STEP`) is checked file by file, at most MAX_DATA_FILES.

Readers call checked_data_files (it raises); the audit calls locate for each name
(no exception, and nothing outside the header's folder is ever stat'ed).
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path

from convkit.errors import InputError, RefusedError

#: Most files a LIST or a pattern may name (a slice per file: a few thousand at most).
MAX_DATA_FILES = 10_000
#: The error code of a data file convkit will not read (outside the header's folder, or
#: not a regular file); the audit reports a finding of the same code.
EXTERNAL_DATA = "volume.external-data"
#: The option that allows data files outside the header's folder.
ALLOW_OPTION = "--allow-external-data"

#: A printf-style pattern takes exactly one integer conversion (%d, %03d, %i ...).
_PATTERN = re.compile(r"%0?\d{0,2}[di]")
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


_ALLOWED: ContextVar[bool] = ContextVar("convkit_allow_external_data", default=False)


def external_data_allowed() -> bool:
    """Whether readers called without allow_external_data may read external data files
    (False unless inside allowing_external_data(True))."""
    return _ALLOWED.get()


@contextlib.contextmanager
def allowing_external_data(allow: bool = True) -> Iterator[None]:
    """Within this block, volume readers follow data files outside the header's folder
    (the CLI's --allow-external-data around a command that reads volume files, however
    deep the reading happens)."""
    token = _ALLOWED.set(allow)
    try:
        yield
    finally:
        _ALLOWED.reset(token)


#: locate's problems for a path that exists but is not a regular file.
_SPECIAL = frozenset([kind for _, kind in _FILE_KINDS] + ["not a regular file"])


def several_data_files(name: str) -> bool:
    """True when a data-file entry names several files (LIST, or a pattern and its range)."""
    words = name.split()
    return bool(words) and (words[0] == "LIST" or ("%" in words[0] and len(words) >= 4))


def data_file_names(entry: str, following: Sequence[str] = ()) -> list[str]:
    """The file names a data-file entry stands for.

    entry: the value of `data file:` / `ElementDataFile =`; following: the header lines
    after it (the names of a LIST). Raises InputError for an empty entry, a malformed
    pattern or more than MAX_DATA_FILES files.
    """
    entry = entry.strip()
    words = entry.split()
    if not words:
        raise InputError("the data file entry is empty", "name the data file in the header")
    if not several_data_files(entry):
        return [entry]
    if words[0] == "LIST":
        names = [line.strip() for line in following if line.strip()]
    else:
        names = _pattern_names(words)
    if not names:
        raise InputError(f"data file {entry!r} names no file", "list the data files")
    if len(names) > MAX_DATA_FILES:
        raise InputError(f"data file {entry!r} names {len(names)} files (at most "
                         f"{MAX_DATA_FILES})", "join the data into one file")
    return names


def _pattern_names(words: list[str]) -> list[str]:
    fmt = words[0]
    if len(_PATTERN.findall(fmt)) != 1 or fmt.count("%") != 1:
        raise InputError(f"data file pattern {fmt!r}: one integer conversion (%d, %03d) expected",
                         "fix the data file entry")
    try:
        first, last, step = (int(v) for v in words[1:4])
    except ValueError as exc:
        raise InputError(f"data file pattern {' '.join(words)!r}: MIN MAX STEP must be integers",
                         "fix the data file entry") from exc
    if step == 0 or (last - first) * step < 0:
        raise InputError(f"data file pattern {' '.join(words)!r}: the range is empty or endless",
                         "fix MIN MAX STEP")
    count = (last - first) // step + 1
    if count > MAX_DATA_FILES:
        raise InputError(f"data file pattern {' '.join(words)!r} names {count} files (at most "
                         f"{MAX_DATA_FILES})", "join the data into one file")
    return [fmt % index for index in range(first, last + (1 if step > 0 else -1), step)]


def data_file_path(header_path: Path, name: str) -> Path:
    """Where a data file name points (resolved against the header's folder; not checked)."""
    name = name.strip()
    return Path(name) if os.path.isabs(name) else header_path.parent / name


def locate(header_path: Path, name: str, allow_external: bool = False) -> tuple[Path, str]:
    """(path, problem) of one data file; problem is '' when convkit may read it, else
    "outside the header's folder", 'missing', 'a FIFO (named pipe)', 'a folder' ...

    Nothing is opened, and unless allow_external nothing outside the header's folder is
    stat'ed: the name is followed component by component (symbolic links included) and
    the walk stops where it would leave the folder.
    """
    path = data_file_path(header_path, name)
    if "\x00" in name:
        return path, "not a file name (it holds a NUL byte)"
    if not allow_external:
        try:
            inside = _inside(header_path.parent, name.strip())
        except (OSError, RuntimeError) as exc:  # a symlink loop, a component we may not read
            return path, f"unresolvable ({exc.__class__.__name__})"
        if inside is None:
            return path, "outside the header's folder"
        path = inside
    try:
        mode = os.stat(path).st_mode  # follows links; never opens (a FIFO would block)
    except FileNotFoundError:
        return path, "missing"
    except OSError as exc:
        return path, f"unreadable ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode):
        return path, ""
    return path, next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


#: Symbolic links followed at most while resolving one name (as the OS: ELOOP).
_MAX_LINKS = 40


def _inside(folder: Path, name: str) -> Path | None:
    """The real path of name under folder, or None when it leaves folder (by '..', an
    absolute name or a symbolic link); lstat's only what lies inside folder."""
    root = folder.resolve()
    if os.path.isabs(name):
        given = Path(name)
        if str(given) != os.path.normpath(name) or not given.is_relative_to(folder.absolute()):
            return None  # decided on the text alone
        parts = list(given.relative_to(folder.absolute()).parts)
    else:
        parts = list(Path(name).parts)
    current, links = root, 0  # always a real path (no links in it)
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent  # the parent of a real path is real
            continue
        candidate = current / part
        if not candidate.is_relative_to(root):
            if not root.is_relative_to(candidate):
                return None  # outside, and not on the way back in ('../FOLDER/...')
            current = candidate  # an ancestor of root: real, nothing to stat
            continue
        if not candidate.is_symlink():  # lstat of a path inside folder
            current = candidate
            continue
        links += 1
        if links > _MAX_LINKS:
            raise RuntimeError("too many symbolic links")
        target = os.readlink(candidate)
        if os.path.isabs(target):
            normal = Path(os.path.normpath(target))
            if not normal.is_relative_to(root):
                return None
            current, parts = root, list(normal.relative_to(root).parts) + parts
        else:
            parts = list(Path(target).parts) + parts
    return current if current.is_relative_to(root) else None


def is_external(problem: str) -> bool:
    """True for a locate problem that --allow-external-data would lift."""
    return problem.startswith("outside")


def checked_data_files(header_path: Path, entry: str, following: Sequence[str] = (),
                       allow_external: bool = False) -> list[Path]:
    """The data files of a header, each one checked by locate; raises otherwise.

    RefusedError (code EXTERNAL_DATA) for a file outside the header's folder (naming
    ALLOW_OPTION) or one that is not a regular file (a FIFO, a folder ...); InputError
    for a missing or unusable name, or a malformed entry.
    """
    paths = []
    for name in data_file_names(entry, following):
        path, problem = locate(header_path, name, allow_external)
        shown = repr(name if len(name) <= 120 else name[:120] + "...")
        if is_external(problem):
            raise RefusedError(f"{header_path}: data file {shown} is {problem}: refused without "
                               f"{ALLOW_OPTION}",
                               f"pass {ALLOW_OPTION} (library: allow_external_data=True) only if "
                               "you trust this header", EXTERNAL_DATA)
        if problem in _SPECIAL:
            raise RefusedError(f"{header_path}: data file {shown} is {problem}, not a regular "
                               "file (never opened)",
                               "point the header at a regular file; no option allows this",
                               EXTERNAL_DATA)
        if problem:
            raise InputError(f"{header_path}: data file {shown} "
                             f"{'not found' if problem == 'missing' else 'is ' + problem}",
                             "copy the data file beside the header")
        paths.append(path)
    return paths
