"""How convkit starts worker processes: one rule for every pool (the scan's header readers,
the decoders of compressed images, the report's picture drawers, the batch's converters).

A worker is forked from the process that needs it while that process runs one thread: it
starts in milliseconds with the imports already made. Forked beside another thread, a child
could inherit a lock that thread held at that moment, and wait for it forever. So beside a
thread that cannot stop for a moment (a library user's, OpenBLAS's, a Dask client's; a
progress bar's redrawing can: `pausable`), where a fork fails (a process limit) and off
Linux, workers come from a forkserver: a clean process that has imported PRELOAD
once. Where there is no forkserver (Windows), they are spawned.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a pool is made (_context, _pool)
    from concurrent.futures import ProcessPoolExecutor

#: Stops a thread of this process and returns what starts it again (None: it was not running).
Pause = Callable[[], Callable[[], None] | None]
#: What the forkserver imports before it forks a worker: the conversion and the libraries it
#: imports on first use (pydicom decodes compressed series, ISA-L deflates); one list for
#: every pool, as a process has one forkserver.
PRELOAD = ["convkit.dicom2nii", "pydicom", "isal.isal_zlib"]


def can_fork() -> bool:
    """Whether worker processes may be forked from this process now: on Linux, while it runs
    one thread (native threads included: /proc/self/task)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def _forkserver_context() -> Any:
    """The forkserver start method, preloading PRELOAD (ValueError where there is none)."""
    context = _context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def process_pool(workers: int, initializer: Callable[[], object] | None = None,
                 ) -> ProcessPoolExecutor:
    """A pool of `workers` processes: forked now when this process may fork (forked_pool),
    else started by the forkserver (started_pool)."""
    return forked_pool(workers, initializer) or started_pool(workers, initializer)


def forked_pool(workers: int, initializer: Callable[[], object] | None = None,
                ) -> ProcessPoolExecutor | None:
    """A pool whose `workers` processes are all forked now, or None when this process may
    not fork (can_fork) or cannot (a process limit, no memory: the fork raises OSError).
    The threads registered with `pausable` are stopped meanwhile."""
    resumes = [resume for resume in (pause() for pause in list(_PAUSABLE)) if resume]
    try:
        if not (can_fork() or resumes and _alone_soon()):
            return None
        pool = _pool(workers, initializer, _context("fork"))
        try:  # a fork pool forks all its workers at its first task, before its own thread
            pool.submit(int)
        except OSError:
            stop(pool)  # the workers forked before the one that failed
            return None
        return pool
    finally:
        for resume in resumes:
            resume()


#: The pause() callables of `pausable`.
_PAUSABLE: list[Pause] = []
#: Seconds a thread just ended may still be listed in /proc/self/task (about 1 join in 130).
_THREAD_END_SECONDS = 0.05


@contextmanager
def pausable(pause: Pause) -> Iterator[None]:
    """Inside, workers may be forked beside a thread that can stop for a moment (a progress
    bar's redrawing): forked_pool calls pause(), which stops it and waits for its end (or
    returns None when it is not running), forks, then calls what pause() returned, which
    starts it again."""
    _PAUSABLE.append(pause)
    try:
        yield
    finally:
        _PAUSABLE.remove(pause)


def _alone_soon() -> bool:
    """can_fork, allowing a thread that has just ended to leave /proc/self/task."""
    deadline = time.monotonic() + _THREAD_END_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.001)
        if can_fork():
            return True
    return False


def started_pool(workers: int, initializer: Callable[[], object] | None = None,
                 ) -> ProcessPoolExecutor:
    """A pool whose processes come from the forkserver (spawned where there is none), never
    forked from this process; they start when the pool's first tasks are given."""
    try:
        context = _forkserver_context()
    except ValueError:
        context = _context("spawn")
    return _pool(workers, initializer, context)


def _context(method: str) -> Any:
    import multiprocessing  # here: a command that makes no pool (a rerun) never loads it

    return multiprocessing.get_context(method)


def _pool(workers: int, initializer: Callable[[], object] | None, context: Any,
          ) -> ProcessPoolExecutor:
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=context, initializer=initializer)


def stop(pool: ProcessPoolExecutor) -> None:
    """End a pool at once: its running tasks are abandoned, its workers terminated."""
    for process in list((pool._processes or {}).values()):
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def warm_up() -> None:
    """Start the forkserver, which imports PRELOAD, so that it gets ready on another core
    while this one works (not waited for here). Where there is none (Windows), nothing."""
    try:
        _forkserver_context()
    except ValueError:
        return
    from multiprocessing import forkserver

    forkserver.ensure_running()


__all__ = ["PRELOAD", "can_fork", "forked_pool", "pausable", "process_pool", "started_pool",
           "stop", "warm_up"]
