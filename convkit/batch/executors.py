"""Where the series of a batch are converted: a pool of local worker processes, or a Dask
distributed cluster. Both run one task per series (a pure function of its SeriesTask) and
hand back (task, outcome) pairs as they finish; the caller keeps the manifest and the
progress bar.

Local workers are started as convkit.processes says: forked before the scan while the
command's process still runs one thread (LocalPool.forked_now: they get its imports for free,
and read the tree's headers before they convert), else started by the forkserver. They ignore SIGINT
(Ctrl-C reaches the whole process group; the parent decides) and turn SIGTERM into a
KeyboardInterrupt while converting, so that the staging folder of the series in progress is
removed (formats.output) before they exit; a second SIGTERM meanwhile is ignored, as the
command's own process ignores a second signal.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

from convkit.batch.work import SeriesTask, TaskOutcome
from convkit.errors import UsageError
from convkit.processes import forked_pool, started_pool, stop

#: Seconds between two looks at the running tasks (the main thread stays in convkit's code,
#: where an interrupt can be raised at once: cli/signals.py defers it inside pool code).
POLL_SECONDS = 0.05
#: Dask: times a task is run again after an error (a lost worker is Dask's own retry).
DASK_RETRIES = 2
#: Seconds to wait for a Dask scheduler to answer.
DASK_CONNECT_SECONDS = 10
TaskFunction = Callable[[SeriesTask], TaskOutcome]


class Executor(Protocol):
    """Runs tasks somewhere else; a context manager that stops its workers on the way out."""

    workers: int
    where: str
    #: the threads one series may use on a worker (convkit.cores; 0: the worker's cores)
    threads: int

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: Any) -> None: ...

    def run(self, function: TaskFunction, tasks: list[SeriesTask],
            ) -> Iterator[tuple[SeriesTask, TaskOutcome]]:
        """Submit every task now; then (task, outcome) as each finishes."""
        ...


def _as_finished(futures: dict[Any, SeriesTask]) -> Iterator[tuple[SeriesTask, Any]]:
    """(task, result) of each future (concurrent.futures or distributed) as it finishes."""
    pending = dict(futures)
    while pending:
        finished = [future for future in pending if future.done()]
        if not finished:
            time.sleep(POLL_SECONDS)
            continue
        for future in finished:
            task = pending.pop(future)
            yield task, future.result()


# -- local worker processes ----------------------------------------------------------------

#: Set by item assignment only: a call would let a signal handler run in between.
_BUSY = {"converting": False, "stopping": False}


def _worker_setup() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)


def _worker_sigterm(signum: int, frame: FrameType | None) -> None:
    if _BUSY["stopping"]:  # a second SIGTERM (the pool terminates the other workers again
        return  # once one has ended) must not cut the clean-up short: the exit follows it
    if _BUSY["converting"]:
        _BUSY["stopping"] = True
        raise KeyboardInterrupt  # unwinds the staging folder of the series in progress
    os._exit(128 + signum)


def _worker_call(function: TaskFunction, task: SeriesTask) -> TaskOutcome:
    _BUSY["converting"] = True
    try:
        outcome = function(task)
    except KeyboardInterrupt:
        os._exit(128 + signal.SIGTERM)
    finally:
        _BUSY["converting"] = False
    if _BUSY["stopping"]:  # terminated, and the interrupt was absorbed on the way: end now
        os._exit(128 + signal.SIGTERM)
    return outcome


class LocalPool:
    """jobs worker processes on this machine, converting a series on `threads` threads."""

    def __init__(self, jobs: int, threads: int = 1) -> None:
        self.workers = jobs
        self.threads = threads
        self.where = f"{jobs} worker processes"
        self.pool: Any = None

    @classmethod
    def forked_now(cls, jobs: int) -> LocalPool | None:
        """jobs workers forked from this process at once, or None where that is not safe
        (can_fork). Forked before the tree is read, they start in milliseconds with this
        process's imports and little of its memory; a forkserver imports convkit and
        pydicom again (0.3-1 s of CPU). Enter it (or close it) as any LocalPool."""
        executor = forked_pool(jobs, _worker_setup)
        if executor is None:
            return None
        pool = cls(jobs)
        pool.pool = executor
        return pool

    def __enter__(self) -> LocalPool:
        if self.pool is None:  # from the forkserver, which warm_up started
            self.pool = started_pool(self.workers, _worker_setup)
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if self.pool is None:  # closed already
            return
        if kind is not None:  # interrupted or failed: the series in progress are abandoned
            stop(self.pool)
        else:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None

    def close(self) -> None:
        self.__exit__(None)

    def submit(self, function: Callable[..., Any], *args: Any) -> Any:
        """A Future of function(*args) on a worker (the scan's header chunks)."""
        return self.pool.submit(function, *args)

    def run(self, function: TaskFunction, tasks: list[SeriesTask],
            ) -> Iterator[tuple[SeriesTask, TaskOutcome]]:
        futures = {self.pool.submit(_worker_call, function, task): task for task in tasks}
        return _as_finished(futures)


# -- Dask distributed ----------------------------------------------------------------------

LOCAL_SCHEDULER = "local"


class DaskCluster:
    """An existing Dask scheduler (an address such as tcp://host:8786), or a LocalCluster of
    `jobs` worker processes on 127.0.0.1 (address 'local'), one thread each. Workers read the
    input and write the output where the client sees them (shared storage), atomically; on a
    cluster elsewhere a series may use every core of its worker."""

    def __init__(self, address: str, jobs: int) -> None:
        self.address = address
        self.workers = jobs
        self.threads = 1 if address == LOCAL_SCHEDULER else 0
        self.where = f"Dask scheduler {address}"
        self.client: Any = None
        self.cluster: Any = None

    def __enter__(self) -> DaskCluster:
        try:
            import distributed
        except ImportError as exc:
            raise UsageError("--scheduler needs Dask distributed, which is not installed",
                             "pip install 'convkit[dask]'") from exc
        try:
            if self.address == LOCAL_SCHEDULER:
                self.cluster = distributed.LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0")
                self.client = distributed.Client(self.cluster)
                self.where = f"Dask LocalCluster ({self.workers} workers, dashboard " \
                             f"{self.client.dashboard_link})"
            else:
                self.client = distributed.Client(self.address, timeout=DASK_CONNECT_SECONDS)
        except (OSError, TimeoutError, ValueError) as exc:
            self.close()
            raise UsageError(f"cannot reach the Dask scheduler {self.address}: {exc}",
                             "start one (dask scheduler; dask worker ADDRESS) or check the "
                             "address (tcp://host:8786), or use --scheduler local") from exc
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def run(self, function: TaskFunction, tasks: list[SeriesTask],
            ) -> Iterator[tuple[SeriesTask, TaskOutcome]]:
        token = os.urandom(4).hex()
        futures = {self.client.submit(function, task, key=f"convkit-{token}-{n}", pure=False,
                                      retries=DASK_RETRIES): task
                   for n, task in enumerate(tasks)}
        return self._finished(futures)

    def _finished(self, futures: dict[Any, SeriesTask],
                  ) -> Iterator[tuple[SeriesTask, TaskOutcome]]:
        try:
            yield from _as_finished(futures)
        finally:
            self.client.cancel([f for f in futures if not f.done()])


__all__ = ["DaskCluster", "Executor", "LOCAL_SCHEDULER", "LocalPool"]
