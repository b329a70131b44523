"""Atomic output: files appear complete, all together, or not at all.

Writers write into a hidden staging folder inside the target folder (same file
system, so the final rename is atomic); nothing is overwritten unless asked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from convkit.errors import OutputError


def check_targets(paths: list[Path], force: bool) -> None:
    """Refuse (exit 5) when a target exists and force is not set."""
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise OutputError(f"output exists: {shown}", "use --force to overwrite")


@contextmanager
def staged_files(folder: Path, force: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success move every file in it into folder.

    On any exception the staging folder and everything in it are removed, so a
    failed write leaves nothing behind.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".convkit-", dir=folder))
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}",
                          "check the path and its permissions") from exc
    try:
        yield staging
        staged = sorted(staging.iterdir())
        check_targets([folder / p.name for p in staged], force)
        for path in staged:
            os.replace(path, folder / path.name)
    except OSError as exc:
        raise OutputError(f"cannot write to {folder}: {exc.strerror or exc}",
                          "check free space and permissions") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_folder(target: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside target; on success it becomes target.

    target must not exist or be empty unless force (then the old content is
    replaced as a whole, never merged). On failure nothing is left behind.
    """
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise OutputError(f"output exists: {target}", "use --force to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.convkit-", dir=target.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    except OSError as exc:
        raise OutputError(f"cannot write to {target.parent}: {exc.strerror or exc}",
                          "check the path and its permissions") from exc
    try:
        yield staging
        if target.exists():
            old = staging.with_name(staging.name + ".old")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or exc}",
                          "check free space and permissions") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
