"""Atomic output: files appear complete, all together, or not at all.

Writers write into a hidden staging folder inside the target folder (same file
system, so the final rename is atomic); nothing is overwritten unless asked.

Outputs are only ever regular files (or folders, for a DICOM series) at new paths,
or existing ones replaced with --force: a FIFO, a device, a socket or a symbolic
link in the way is a usage error, whatever --force says. Claiming a target is
atomic: a file is published with an exclusive create (a hard link, which fails
when the name exists), and a folder is claimed under a lock file in its parent, so
two runs into one output never both succeed.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from convkit.errors import OutputError, UsageError

#: The longest file name (one path component, in bytes) that common file systems take.
NAME_MAX_BYTES = 255

#: Characters of a target's name kept in the names of its staging folder and lock file.
_STAGING_NAME_BYTES = 100

_KINDS = ((stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "named pipe (FIFO)"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"))


def fit_name(name: str, max_bytes: int = NAME_MAX_BYTES) -> str:
    """name cut to at most max_bytes of UTF-8 (never inside a character); unchanged if it fits."""
    data = name.encode("utf-8", "surrogateescape")
    if len(data) <= max_bytes:
        return name
    return data[:max_bytes].decode("utf-8", "ignore")


def file_states(paths: list[Path]) -> dict[Path, tuple[int, int] | None]:
    """(inode, mtime in ns) of each path, None for a missing one: two of these tell which
    outputs were written in between (a batch interrupted right after writing one)."""
    states: dict[Path, tuple[int, int] | None] = {}
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            states[path] = None
        else:
            states[path] = (info.st_ino, info.st_mtime_ns)
    return states


def path_kind(path: Path) -> str | None:
    """None for a new path; 'file' for a regular file; else what is there ('folder',
    'symbolic link', 'named pipe (FIFO)', 'character device', ...). Links are not followed."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return "file"
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def check_batch_folder(source: Path, out_dir: Path, hint: str) -> None:
    """The output folder of a batch (dicom2nii, preview -o DIR): never inside the input
    folder (exit 2: convkit writes nothing there); a folder or a new path: a regular file
    there is an output error (exit 5), a FIFO, device or socket a usage error (exit 2)."""
    if source.is_dir() and out_dir.resolve().is_relative_to(source.resolve()):
        raise UsageError(f"the output folder {out_dir} is inside the input folder {source}",
                         "choose an output folder outside the input: convkit writes nothing there")
    if out_dir.exists() and not out_dir.is_dir():  # a link to a folder is a folder here
        kind = path_kind(out_dir)
        if kind == "file":
            raise OutputError(f"{out_dir} exists and is not a folder", hint)
        raise UsageError(f"{out_dir} is a {kind}, not a folder", hint)


def check_targets(paths: list[Path], force: bool) -> None:
    """Refuse a target that is not a regular file (exit 2), or that exists without force (5)."""
    for path in paths:
        kind = path_kind(path)
        if kind not in (None, "file"):
            raise UsageError(f"output {path} is a {kind}, not a regular file",
                             "convkit writes only regular files: choose another output path")
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise OutputError(f"output exists: {shown}", "use --force to overwrite")


@contextmanager
def staged_files(folder: Path, force: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success move every file in it into folder.

    On any exception (KeyboardInterrupt included) the staging folder and everything
    in it are removed, so a failed write leaves nothing behind. Without force the
    files are published with an exclusive create: when another process wrote one of
    the names meanwhile, none of them is published (OutputError).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}",
                          "check the path and its permissions") from exc
    with _staging(folder, ".convkit-") as staging:
        try:
            yield staging
            _publish(sorted(staging.iterdir()), folder, force)
        except OSError as exc:
            raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}",
                              "check free space and permissions") from exc


@contextmanager
def _staging(parent: Path, prefix: str) -> Iterator[Path]:
    """A new private folder parent/prefixXXXXXXXXXXXX, removed with all it holds on the way
    out: its name is known before it is created, so that an interrupt (Ctrl-C, SIGTERM)
    landing just after the creation still removes it (tempfile.mkdtemp returns it later).
    It is flock-ed while it exists: a folder left by a killed run (SIGKILL, power loss) is
    one nobody holds, which remove_stale_staging recognises."""
    path: Path | None = None
    held: int | None = None
    try:
        while True:
            path = parent / f"{prefix}{os.urandom(6).hex()}"
            try:
                os.mkdir(path, 0o700)
                break
            except FileExistsError:
                path = None
            except OSError as exc:
                path = None
                raise OutputError(f"cannot write to {parent}: {exc.strerror or exc}",
                                  "check the path and its permissions") from exc
        held = _hold_folder(path) if _FLOCK else None
        yield path
    finally:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        if held is not None:
            os.close(held)


_FLOCK = importlib.util.find_spec("fcntl") is not None  # not on Windows
#: Staging folders: `.convkit-` + 12 hex digits (files), `.NAME.convkit-` + 12 (a folder).
_STAGING_NAME = re.compile(r"\..*convkit-[0-9a-f]{12}")
#: A staging folder younger than this is never taken for a stale one (it may be between its
#: creation and its lock, in another process).
STALE_STAGING_AGE_S = 60.0


def remove_stale_staging(folder: Path) -> list[str]:
    """Remove the staging folders in folder that a killed run left (nobody holds their lock,
    older than STALE_STAGING_AGE_S); return their names. Never raises: a folder that cannot
    be checked or removed is left as it is."""
    removed: list[str] = []
    if not _FLOCK:  # whether a run still writes there cannot be known
        return removed
    try:
        candidates = [entry for entry in os.scandir(folder)
                      if _STAGING_NAME.fullmatch(entry.name)
                      and entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    now = time.time()
    for entry in candidates:
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < STALE_STAGING_AGE_S:
                continue
            held = _hold_folder(Path(entry.path))
        except OSError:
            continue
        if held is None:  # a live run's
            continue
        try:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
        finally:
            os.close(held)
    return removed


def _hold_folder(path: Path) -> int | None:
    """A descriptor of path holding its flock (released when the process dies), or None when
    another process holds it."""
    return _flocked(os.open(path, os.O_RDONLY | os.O_DIRECTORY))


def _flocked(descriptor: int) -> int | None:
    """descriptor, now holding an exclusive flock; None (closed) when another process holds
    it. Closed on any error."""
    import fcntl

    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _publish(staged: list[Path], folder: Path, force: bool) -> None:
    """Move the staged files into folder: replacing (force), or all-or-none exclusively."""
    targets = [folder / path.name for path in staged]
    check_targets(targets, force)
    if force:
        for path, target in zip(staged, targets, strict=True):
            os.replace(path, target)
        return
    claimed: list[Path] = []
    try:
        for path, target in zip(staged, targets, strict=True):
            _create_exclusive(path, target)
            claimed.append(target)
    except BaseException as exc:
        for done in claimed:
            done.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise OutputError(f"output exists: {exc.filename2 or exc.filename} (written meanwhile "
                              "by another process)", "use --force to overwrite, or another "
                              "output") from None
        raise


#: errno values of a file system without hard links.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS,
             errno.EXDEV}


def _create_exclusive(source: Path, target: Path) -> None:
    """target gets source's content, or FileExistsError when target exists (atomically)."""
    try:
        os.link(source, target)
        return
    except OSError as exc:
        if isinstance(exc, FileExistsError) or exc.errno not in _NO_LINKS:
            raise
    # No hard links here: claim the name with an exclusive create, then rename onto it.
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    os.replace(source, target)


def check_folder_target(target: Path, force: bool) -> None:
    """A series folder is new, an empty folder, or (force) a folder to replace as a whole.

    A regular file in the way is an output error (exit 5); a link, FIFO or device a
    usage error (exit 2).
    """
    kind = path_kind(target)
    if kind in (None, "folder"):
        if kind == "folder" and any(target.iterdir()) and not force:
            raise OutputError(f"output exists: {target}", "use --force to replace it")
        return
    if kind == "file":
        raise OutputError(f"output {target} exists and is not a folder",
                          "pass a new or empty folder as the output")
    raise UsageError(f"output {target} is a {kind}, not a folder",
                     "pass a new or empty folder as the output")


@contextmanager
def staged_folder(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside target; on success it becomes target.

    target must not exist or be empty unless force (then the old content is
    replaced as a whole, never merged). On failure nothing is left behind. The
    target is claimed under a lock file in its parent for the whole write: a second
    convkit process writing the same target fails (OutputError) instead of
    replacing the first one's output.
    """
    check_folder_target(target, force)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {target.parent}: {exc.strerror or exc}",
                          "check the path and its permissions") from exc
    with claimed(target), _staging(target.parent, f".{_short(target.name)}.convkit-") as staging:
        check_folder_target(target, force)  # again: it may have been written meanwhile
        try:
            staging.chmod(0o777 & ~_umask())  # private while staged; the result should not be
            yield staging
            _replace_folder(staging, target)
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}",
                              "check free space and permissions") from exc


def _replace_folder(staging: Path, target: Path) -> None:
    """staging becomes target; an old target (checked, under the lock) is removed."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = staging.with_name(staging.name + ".old")
    os.replace(target, old)
    replaced = False
    try:
        os.replace(staging, target)
        replaced = True
    except BaseException:
        if not replaced:
            os.replace(old, target)  # put the old content back
        raise
    finally:
        if replaced:
            shutil.rmtree(old, ignore_errors=True)


def _short(name: str) -> str:
    return fit_name(name, _STAGING_NAME_BYTES)


#: Held for the whole write of a folder target (see staged_folder).
LOCK_SUFFIX = ".convkit-lock"


@contextmanager
def claimed(target: Path) -> Iterator[None]:
    """Hold the lock of target (a file in its parent) or raise OutputError at once.

    The lock is an flock on `.NAME.convkit-lock` where the OS has flock (released by
    the OS when the process dies, so a killed run never blocks the next), else the
    file itself, created exclusively. The lock file is removed on release.
    """
    lock = target.parent / f".{_short(target.name)}{LOCK_SUFFIX}"
    try:
        descriptor = _lock(lock)
    except OSError as exc:
        raise OutputError(f"cannot write to {target.parent}: {exc.strerror or exc}",
                          "check the path and its permissions") from exc
    if descriptor is None:
        raise OutputError(f"output is being written by another convkit process: {target}",
                          f"wait for it to finish (or remove {lock} if no convkit is running)")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still holding it: a waiting process locks anew
        os.close(descriptor)


def _lock(lock: Path) -> int | None:
    """An open descriptor holding lock, or None when another process holds it."""
    if not _FLOCK:  # Windows: the lock is the file's exclusive creation
        try:
            return os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    while True:
        descriptor = _flocked(os.open(lock, flags, 0o644))
        if descriptor is None:
            return None
        try:  # the holder before us may have removed the file: then lock the new one
            if os.path.samestat(os.fstat(descriptor), os.stat(lock)):
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


#: Writes at least this large are hashed on a second thread while they are written.
_THREADED_HASH_BYTES = 1 << 20
#: sha256 of the files written through hashed_file, by stat key (device, inode, size,
#: mtime_ns): what recorded_sha256 answers (bounded; a run's outputs are few).
_WRITTEN: dict[tuple[int, int, int, int], str] = {}
_WRITTEN_MAX = 4096
_HASH_LOCK = threading.Lock()


class HashingWriter:
    """A binary file being written, and the sha256 of what was written to it: each large
    write is hashed on a second thread while it goes to the file (hashlib and the write
    both release the GIL), so knowing an output's hash costs no second pass over it. The
    thread is the writer's own, ended when the file is closed: a process that converted
    leaves no thread behind, and may still fork its workers (convkit.processes)."""

    def __init__(self, handle: BinaryIO, threaded: bool) -> None:
        self._handle, self._threaded = handle, threaded
        self._thread: ThreadPoolExecutor | None = None
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._threaded and len(data) >= _THREADED_HASH_BYTES:
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="convkit-sha256")
            hashed = self._thread.submit(self.sha256.update, data)
            written = self._handle.write(data)
            hashed.result()
            return written
        self.sha256.update(data)
        return self._handle.write(data)

    def end_thread(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None


@contextmanager
def hashed_file(path: Path, threaded: bool = True) -> Iterator[HashingWriter]:
    """Open path for writing through a HashingWriter; when it is closed, remember the
    sha256 of its content for the file's stat key (recorded_sha256)."""
    with open(path, "wb") as handle:
        writer = HashingWriter(handle, threaded)
        try:
            yield writer
        finally:
            writer.end_thread()
    info = os.stat(path)
    with _HASH_LOCK:
        if len(_WRITTEN) >= _WRITTEN_MAX:
            _WRITTEN.clear()
        _WRITTEN[_written_key(info)] = writer.sha256.hexdigest()


def recorded_sha256(info: os.stat_result) -> str | None:
    """The sha256 hashed_file computed for a file, while its device, inode, size and mtime
    are still those it had when it was closed (a rename keeps them), else None."""
    with _HASH_LOCK:
        return _WRITTEN.get(_written_key(info))


def _written_key(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns
