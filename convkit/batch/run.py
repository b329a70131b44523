"""One batch run: where its series are converted (here, local workers, Dask) and the order in
which each is recorded in the manifest: pending before its conversion starts, its result after
its outputs are published.

The command gives what is its own (Hooks): how one series is converted (a function of its
SeriesTask, run in the workers), the result of a series that is not converted, and the names a
series may write. dicom2nii.convert_folder is the caller.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convkit import __version__, cores
from convkit.batch.errors import ManifestFileError
from convkit.batch.executors import DaskCluster, Executor, LocalPool
from convkit.batch.manifest import (
    MANIFEST_FOLDER,
    MANIFEST_NAME,
    PENDING,
    Manifest,
    Output,
    Row,
    open_manifest,
)
from convkit.batch.work import (
    Item,
    SeriesTask,
    TaskOutcome,
    available_memory,
    jobs_that_fit,
    peak_bytes,
    source_bytes,
)
from convkit.dicom.group import SeriesGroup
from convkit.dicom.plan import ConvertOptions
from convkit.errors import OutputError
from convkit.formats.output import claimed, file_states

#: progress(stage, done, total) of series converted by workers: series done, and their bytes.
BATCH_SERIES = "batch:series"
BATCH_BYTES = "batch:bytes"
#: With jobs 0 (one per core), series are converted in worker processes only when they hold
#: this many bytes: below, starting the workers costs more than it saves.
PARALLEL_MIN_BYTES = 64 * 2**20


@dataclass
class Hooks:
    """What the command gives a batch run."""

    #: convert(task, progress) -> TaskOutcome: one series (module-level: workers import it)
    convert: Callable[..., TaskOutcome]
    #: the result of a series that is not converted in this run, or None to convert it
    settled: Callable[[Item], Any | None]
    #: every name a series may write (recorded while it is pending: convkit's own files)
    targets: Callable[[SeriesGroup], list[Path]]
    #: the names whose states tell that an interrupted series was written (see `before`)
    published: Callable[[SeriesGroup], list[Path]]


@dataclass
class BatchRun:
    """The series of one run, converted and recorded; results in `results` (their SeriesResult),
    labels whose outputs could not be written in `output_failed`."""

    manifest: Manifest
    hooks: Hooks
    template: SeriesTask  # the folders, format and options every task shares
    options_key: str
    progress: Callable[[str, int, int], None] | None = None
    results: list[Any] = field(default_factory=list)
    output_failed: list[str] = field(default_factory=list)
    #: file_states of the series being converted in this process (an interrupt's report)
    before: dict = field(default_factory=dict)
    #: work of this process that no series waits for: done while workers convert (once
    #: every task is submitted), or first in a serial run
    meanwhile: Callable[[], None] | None = None

    def task(self, item: Item, cwd: str = "") -> SeriesTask:
        template = self.template
        return SeriesTask(item.group, template.input, template.out_dir, template.suffix,
                          template.options, template.force or item.owned, template.overlays,
                          template.max_bytes, source_bytes(item.group), cwd, template.threads)

    def pending(self, item: Item) -> Row:
        group, out_dir = item.group, Path(self.template.out_dir)
        outputs = [Output(str(path.relative_to(out_dir))) for path in self.hooks.targets(group)]
        return Row(group.label, group.series_uid, item.fingerprint, self.options_key,
                   __version__, PENDING, "", {}, None, outputs)

    def finish(self, item: Item, outcome: TaskOutcome) -> None:
        """Record a converted series (its outputs are in place by now), then report it."""
        result, group = outcome.result, item.group
        self.manifest.record(Row(group.label, group.series_uid, item.fingerprint,
                                 self.options_key, __version__, result.status, result.reason,
                                 asdict(result), result.seconds, outcome.outputs))
        self.results.append(result)
        if outcome.output_failed:
            self.output_failed.append(result.label)

    def settle(self, item: Item, result: Any) -> None:
        """A series not converted in this run: its result; the stat keys of its outputs
        recorded when they were verified by their hash (work.outputs_intact)."""
        if item.row is not None and item.row.refreshed and not item.converts:
            self.manifest.record(item.row)
        self.results.append(result)

    def serial(self, items: list[Item]) -> None:
        """Convert the series in this process, one after the other."""
        self._meanwhile()
        for item in items:
            settled = self.hooks.settled(item)
            if settled is not None:
                self.settle(item, settled)
                continue
            self.before = file_states(self.hooks.published(item.group))
            self.manifest.begin(self.pending(item))
            self.finish(item, self.hooks.convert(self.task(item), self.progress))
            self.before = {}

    def parallel(self, items: list[Item], executor: Executor) -> None:
        """Convert the series on an executor's workers; results in the order of items."""
        self.template.threads = executor.threads
        todo = []
        for item in items:
            settled = self.hooks.settled(item)
            if settled is None:
                todo.append(item)
            else:
                self.settle(item, settled)
        for item in todo:
            self.manifest.begin(self.pending(item))
        # the largest first: the last series to finish are small ones, so workers end together
        tasks = sorted((self.task(item, os.getcwd()) for item in todo),
                       key=lambda task: -task.source_bytes)
        by_label = {item.group.label: item for item in todo}
        total = sum(task.source_bytes for task in tasks)
        done = [0, 0]
        self._progress(done, len(tasks), total)
        finished = executor.run(self.hooks.convert, tasks)
        self._meanwhile()
        for task, outcome in finished:
            self.finish(by_label[task.group.label], outcome)
            done[0] += 1
            done[1] += task.source_bytes
            self._progress(done, len(tasks), total)
        in_order(self.results, [item.group for item in items])

    def _meanwhile(self) -> None:
        if self.meanwhile is not None:
            self.meanwhile()

    def _progress(self, done: list[int], series: int, total: int) -> None:
        if self.progress:
            self.progress(BATCH_SERIES, done[0], series)
            self.progress(BATCH_BYTES, done[1], total)


@contextmanager
def one_run(out_dir: Path) -> Iterator[Manifest]:
    """The manifest of out_dir for one run, under a lock (formats.output.claimed: a second
    run into the same folder fails at once with OutputError, so that two runs never both
    write one output); removed again, with out_dir when the run made it, if no series was
    ever written there. The snapshot of the last complete run (batch.rerun) is forgotten
    first: this run may change what it describes."""
    existed = out_dir.exists()
    folder = out_dir / MANIFEST_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write to {out_dir}: {exc.strerror or exc}",
                          "check the path and its permissions") from exc
    try:
        with claimed(folder / MANIFEST_NAME), open_manifest(out_dir) as manifest:
            manifest.set_rerun(None)
            yield manifest
    finally:
        _drop_if_nothing_written(out_dir, existed)


def _drop_if_nothing_written(out_dir: Path, existed: bool) -> None:
    try:
        with open_manifest(out_dir) as manifest:
            manifest.drop_if_nothing_written()
    except ManifestFileError:  # not convkit's to remove
        return
    if not existed:
        try:
            out_dir.rmdir()  # only when empty
        except OSError:
            pass


def in_order(results: list[Any], groups: list[SeriesGroup]) -> None:
    """Results (with a label) sorted in the order of the groups: workers finish in any order."""
    rank = {group.label: n for n, group in enumerate(groups)}
    results.sort(key=lambda result: rank.get(result.label, len(rank)))


def workers_likely(source_bytes: int, folders: int, jobs: int, scheduler: str | None) -> bool:
    """Whether choose_executor will likely start local workers for a tree of source_bytes in
    `folders` folders (known before the scan: the caller warms them up meanwhile,
    processes.warm_up). A tree of one folder is taken for one series: warming workers up
    would take a core from the scan and the conversion for nothing (a 300-slice CT took
    0.1 s longer); if it holds several, its workers start cold."""
    return not scheduler and cores.for_jobs(jobs) > 1 and folders > 1 \
        and (jobs > 1 or source_bytes >= PARALLEL_MIN_BYTES)


def choose_executor(items: list[Item], jobs: int, scheduler: str | None,
                    options: ConvertOptions, notes: list[str],
                    started: LocalPool | None = None) -> Executor | None:
    """Where the series are converted: None (here, one after the other, each on the run's
    cores: cores.for_jobs), a Dask cluster, or worker processes (at most one per series, as
    many as fit in memory: else a note), which share the run's cores: `started` unless
    fewer fit in memory than it has (more than series is harmless: they wait)."""
    todo = [item for item in items if item.converts]
    wanted = cores.for_jobs(jobs)
    if scheduler:
        return DaskCluster(scheduler, wanted)
    workers = min(wanted, len(todo))
    if workers <= 1 or (jobs == 0 and sum(source_bytes(item.group) for item in todo)
                        < PARALLEL_MIN_BYTES):
        return None
    largest = max(peak_bytes(item.group, options) for item in todo)
    available = available_memory()
    fit = jobs_that_fit(workers, largest, available)
    if fit < workers:
        notes.append(f"{fit} worker process{'es' if fit > 1 else ''} instead of {workers}: "
                     f"the largest series needs {largest / 2**30:.1f} GiB and "
                     f"{(available or 0) / 2**30:.1f} GiB of memory is available")
    if fit <= 1:
        return None
    if started is not None and fit == workers <= started.workers:
        started.threads = cores.share(wanted, fit)
        return started
    return LocalPool(fit, cores.share(wanted, fit))


__all__ = ["BATCH_BYTES", "BATCH_SERIES", "BatchRun", "Hooks", "PARALLEL_MIN_BYTES",
           "choose_executor", "in_order", "one_run", "workers_likely"]
