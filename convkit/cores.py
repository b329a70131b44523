"""How many cores convkit may use: the one owner of that number.

A process may use the cores its affinity allows (os.sched_getaffinity; os.cpu_count where
there is none). A run's `jobs` (dicom2nii --jobs, audit --jobs, ...) is the number of cores
the whole run may use, as with make -j and pigz -p; 0 means every core available.

Within a run, threads() is what one piece of work (one series being converted) may use:
its deflate threads (formats.deflate) and its decode worker processes (dicom.pixels).
limited(n) sets it for the code run inside, in this thread: a run with jobs 1 keeps to
one core, and N series converted at once get share(N cores, N series) = 1 thread each,
while a single series alone may use all N.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: The cores one piece of work may use in this thread (None: every core available).
_LIMIT: ContextVar[int | None] = ContextVar("convkit_cores", default=None)


def available() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def for_jobs(jobs: int) -> int:
    """The cores a run given `jobs` may use: jobs itself, or every core for 0."""
    return jobs if jobs > 0 else available()


def threads() -> int:
    """The threads (or worker processes) one piece of work may use here and now."""
    limit = _LIMIT.get()
    return available() if limit is None else limit


def share(cores: int, parallel: int) -> int:
    """The threads each of `parallel` tasks run at once gets out of `cores` (at least 1)."""
    return max(1, cores // max(parallel, 1))


@contextmanager
def limited(cores: int | None) -> Iterator[None]:
    """threads() is `cores` inside (None or 0: every core available)."""
    token = _LIMIT.set(max(1, cores) if cores else None)
    try:
        yield
    finally:
        _LIMIT.reset(token)


__all__ = ["available", "for_jobs", "limited", "share", "threads"]
