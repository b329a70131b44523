"""The plan of a batch: which series need converting, what a worker is given, and how many
workers fit in memory.

A series is up to date when the manifest's row for its label has the same fingerprint of
its source files, the same options and convkit version, status written, and every output
on disk with its recorded size and sha256. Anything else is converted again (a failed
series only with retry_failed; force redoes everything).

An output is hashed again only when its stat key (size, mtime_ns, inode, ctime_ns) is not
the one recorded when it was hashed (batch.statkeys: when a key can be trusted).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from convkit import __version__
from convkit.batch.manifest import PENDING, Output, Row
from convkit.batch.rerun import options_text
from convkit.batch.statkeys import RACY_NS, unchanged_since_hashed
from convkit.batch.statkeys import stat_key as _key
from convkit.dicom.group import SeriesGroup
from convkit.dicom.plan import ConvertOptions, memory_needed, plan_series
from convkit.errors import ConvkitError
from convkit.formats.output import recorded_sha256
from convkit.outcomes import Outcome

#: Bytes read at a time when hashing an output.
_HASH_CHUNK = 1 << 20


class Why(StrEnum):
    """Why a series is (or is not) converted in this run."""

    NEW = "new"
    CHANGED = "changed"  # its source files, the options or convkit changed
    INTERRUPTED = "interrupted"  # pending: the last run stopped while converting it
    OUTPUT_CHANGED = "output missing or altered"
    FORCED = "forced"
    RETRIED = "retried"
    UP_TO_DATE = "up to date"
    FAILED_BEFORE = "failed before"  # not retried without retry_failed
    REFUSED_BEFORE = "refused before"  # the same files and options: refused again


#: The decisions that convert the series.
CONVERT = frozenset({Why.NEW, Why.CHANGED, Why.INTERRUPTED, Why.OUTPUT_CHANGED, Why.FORCED,
                     Why.RETRIED})


@dataclass
class SeriesTask:
    """One series to convert: what a worker (a local process, a Dask worker) is given."""

    group: SeriesGroup
    input: str  # the input folder as given (the sidecar's source paths are relative to it)
    out_dir: str
    suffix: str
    options: ConvertOptions
    force: bool  # replace existing outputs (the user's --force, or the series' own outputs)
    overlays: bool
    max_bytes: int  # the memory limit in force (volume.max_volume_bytes) in the parent
    source_bytes: int = 0
    cwd: str = ""  # local workers: the parent's working folder (paths may be relative to it)
    #: the threads converting it may use (convkit.cores; 0: every core of its worker)
    threads: int = 0


@dataclass
class TaskOutcome:
    """What converting one series gave: its SeriesResult, and its outputs' digests."""

    result: Any  # dicom2nii.SeriesResult
    output_failed: bool = False
    outputs: list[Output] = field(default_factory=list)


@dataclass
class Item:
    """One series of the batch and the decision about it."""

    group: SeriesGroup
    why: Why
    fingerprint: str
    row: Row | None  # what the manifest held before this run
    owned: bool  # every existing file under its names was written by convkit (manifest)

    @property
    def converts(self) -> bool:
        return self.why in CONVERT


def plan_items(groups: list[SeriesGroup], rows: dict[str, Row], root: Path, key: str,
               out_dir: Path, targets: Callable[[SeriesGroup], list[Path]], *, force: bool,
               retry_failed: bool, stat_of: StatOf | None = None) -> list[Item]:
    """The decision for every series. targets(group): every name a series may write;
    stat_of: as fingerprint's."""
    items = []
    for group in groups:
        row = rows.get(group.label)
        print_ = fingerprint(group, root, stat_of or stat_now)
        why = decide(row, print_, key, out_dir, force=force, retry_failed=retry_failed)
        existing = {path for path in targets(group) if os.path.lexists(path)}
        # convkit's own files of this series (not of another that had its label) are replaced
        mine = row is not None and row.series_uid == group.series_uid \
            and existing <= owned(row, out_dir)
        items.append(Item(group, why, print_, row, mine))
    return items


#: (size, mtime_ns) of a file given as text, or None when it cannot be stat'ed.
StatOf = Callable[[str], tuple[int, int] | None]


def stat_now(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def fingerprint(group: SeriesGroup, root: Path, stat_of: StatOf = stat_now) -> str:
    """sha256 of the series' source files: paths (relative to root), sizes, mtimes (ns) and
    SOPInstanceUIDs. A file that cannot be stat'ed counts as changed. stat_of: the stat
    taken when the scan found the file (batch.headers), which is what its headers were
    read from; by default, the stat now."""
    files = []
    for path in sorted({str(h.path) for h in group.headers}):
        files.append((os.path.relpath(path, root), stat_of(path)))
    uids = sorted({h.sop_instance_uid for h in group.headers})
    text = json.dumps({"files": files, "sop": uids}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def options_key(options: ConvertOptions, fmt: str, overlays: bool) -> str:
    """What the options that shape a series' outputs are, as text (compared, not hashed, so
    that the manifest shows them): rerun.options_text of the options' fields."""
    return options_text(asdict(options), fmt, overlays)


def source_bytes(group: SeriesGroup) -> int:
    """Bytes of a series' source files (its share of the progress bar)."""
    sizes = {str(h.path): h.file_size or 0 for h in group.headers}
    return sum(sizes.values())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digests(paths: list[str], out_dir: Path) -> list[Output]:
    """Each written file: path relative to out_dir, size, sha256 and stat key (None when the
    file changed while it was hashed)."""
    found = []
    for text in paths:
        checked = time.time_ns()
        before = os.stat(text)
        sha256 = recorded_sha256(before) or sha256_file(Path(text))
        after = os.stat(text)
        key = (before.st_mtime_ns, before.st_ino, before.st_ctime_ns, checked)
        same = _key(before) == _key(after)
        found.append(Output(os.path.relpath(text, out_dir), before.st_size, sha256,
                            key if same else None))
    return found



def outputs_intact(row: Row, out_dir: Path) -> bool:
    """Every recorded output is there, a regular file with its recorded size and sha256
    (hashed only when its stat key is not the one recorded, or is not trusted). An output
    found intact by its hash gets its stat key of now (row.refreshed: to be recorded), so
    that the next run need not hash it."""
    for output in row.outputs:
        path = out_dir / output.path
        try:
            checked = time.time_ns()
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_size != output.size:
                return False
            if unchanged_since_hashed(output, info):
                continue
            if sha256_file(path) != output.sha256:
                return False
            if _key(os.lstat(path)) == _key(info):  # not written while it was hashed
                output.stat = (info.st_mtime_ns, info.st_ino, info.st_ctime_ns, checked)
                row.refreshed = True
        except OSError:
            return False
    return bool(row.outputs)


def decide(row: Row | None, print_: str, key: str, out_dir: Path, *, force: bool,
           retry_failed: bool) -> Why:
    """Whether the series with fingerprint print_ and options key is converted, and why."""
    if row is None:
        return Why.NEW
    if force:
        return Why.FORCED
    if (row.fingerprint, row.options, row.convkit_version) != (print_, key, __version__):
        return Why.CHANGED
    if row.status == PENDING:
        return Why.INTERRUPTED
    if row.status == Outcome.FAILED:
        return Why.RETRIED if retry_failed else Why.FAILED_BEFORE
    if row.status == Outcome.REFUSED:
        return Why.REFUSED_BEFORE
    return Why.UP_TO_DATE if outputs_intact(row, out_dir) else Why.OUTPUT_CHANGED


def owned(row: Row | None, out_dir: Path) -> set[Path]:
    """The files of a label that the manifest says convkit wrote (or was writing)."""
    return {out_dir / output.path for output in row.outputs} if row else set()


def peak_bytes(group: SeriesGroup, options: ConvertOptions) -> int:
    """The memory converting a series takes at its peak (plan.memory_needed), or the size of
    its images when it cannot be planned (it is refused then, early)."""
    try:
        plan = plan_series(group, options)
    except ConvkitError:
        first = group.first
        return first.rows * first.columns * len(group.headers) * max(first.bits_allocated // 8, 1)
    return memory_needed(group, plan.grid, options.philips_precise)


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none: not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def jobs_that_fit(jobs: int, largest: int, available: int | None) -> int:
    """jobs, lowered so that jobs series of `largest` bytes fit in the memory available."""
    if available is None or largest <= 0 or largest * jobs <= available:
        return jobs
    return max(1, available // largest)


__all__ = ["CONVERT", "RACY_NS", "Item", "SeriesTask", "TaskOutcome", "Why", "available_memory",
           "decide", "digests", "fingerprint", "jobs_that_fit", "options_key", "outputs_intact",
           "owned", "peak_bytes", "plan_items", "source_bytes", "stat_now",
           "unchanged_since_hashed"]
