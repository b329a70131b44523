"""Discovery: every file under a folder read (headers only) and grouped into series.

Every file is accounted for exactly once (FileRecord.status): used, duplicate,
conflict, not-dicom, dicomdir, unreadable (with the reason) or skipped (with the reason).

Files that share a SOPInstanceUID are one instance copied (duplicate: the first in
path order is read) when they are byte-identical, or when their headers agree and
their pixels decode to the same values (the same instance in another transfer
syntax). Otherwise they conflict: every version is reported, and each stays in
its series with a problem, so that dicom2nii refuses the series rather than pick one
by path order.
Big trees are read by worker processes; grouping and naming follow (group.py,
naming.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import filecmp
import functools
import itertools
import operator
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from convkit import cores
from convkit.dicom.dataset import is_read_error, read_dataset, read_reason, warnings_caught
from convkit.dicom.group import SeriesGroup, group_series
from convkit.dicom.header import FileRecord, FileStatus, SliceHeader, read_header
from convkit.dicom.naming import name_series
from convkit.processes import process_pool

ProgressCallback = Callable[[int, int], None]
#: What reading one file gives: its images, or its fate when it gives none.
Outcome = list[SliceHeader] | FileRecord


class HeaderCache(Protocol):
    """Outcomes of files read before (convkit.index): scan_folder reads only the others."""

    def split(self, paths: Iterable[Path]) -> tuple[Iterable[Path], list[Outcome]]:
        """(paths to read, outcomes known for the other paths)."""

    def learned(self, outcomes: list[Outcome], fields: list | None = None) -> list[Outcome]:
        """The outcomes of the paths split() gave to read, in their order (and their
        outcome_fields when header workers sent them so); returns the outcomes of other
        paths that could only be settled once these were known."""

    def differences(self, other: list[SliceHeader], mine: list[SliceHeader],
                    compute: Callable[[], list[Difference]]) -> list[Difference]:
        """compute() (how two files of one SOPInstanceUID differ, see _differences), or
        what it gave before for the same two files, both unchanged since."""


@dataclass
class ScanResult:
    """All series found under a folder, and what happened to every file."""

    root: Path
    series: list[SeriesGroup] = field(default_factory=list)
    files: list[FileRecord] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for record in self.files if record.status == status)


class Workers(Protocol):
    """Worker processes started by the caller (a ProcessPoolExecutor, batch's LocalPool)."""

    def submit(self, function: Callable[..., Any], /, *args: Any) -> Any: ...


def iter_files(root: Path) -> Iterable[Path]:
    """Every file under root (or root itself), in a stable order: a folder's own files by
    name, then its sub-folders by name, depth first (what os.walk gives, top-down with
    sorted names). Iterative, so that a tree thousands of levels deep is no RecursionError
    (os.walk recurses once per level); links to folders are not followed."""
    for text in iter_file_texts(root):
        yield Path(text)


def iter_file_texts(root: Path) -> Iterable[str]:
    """iter_files as text (str of each Path it gives), for walks that need no Path."""
    if root.is_file():
        yield str(root)
        return
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                listed = [(entry.name, _is_folder(entry)) for entry in entries]
        except OSError:  # unreadable or vanished folder: os.walk skips it too
            continue
        prefix = "" if folder == "." else os.path.join(folder, "")  # as Path writes it
        for name, _ in sorted(item for item in listed if not item[1]):
            yield prefix + name
        subfolders = sorted(name for name, is_folder in listed if is_folder)
        stack.extend(os.path.join(folder, name) for name in reversed(subfolders)
                     if not os.path.islink(os.path.join(folder, name)))


def _is_folder(entry: os.DirEntry) -> bool:
    """As os.walk sorts entries: a link to a folder is a folder (and is not descended)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def scan_folder(
    root: Path | str,
    progress: ProgressCallback | None = None,
    jobs: int = 1,
    while_waiting: Callable[[list[Path]], object] | None = None,
    cache: HeaderCache | None = None,
    workers: Workers | None = None,
) -> ScanResult:
    """Read the headers of every file under root and group the DICOM images into series.

    jobs: worker processes reading headers (1: in this process; 0: one per core).
    while_waiting: called with every path found, in this process, once the worker
        processes have all the work (this process would otherwise only wait); the audit
        imports its volume readers there. Not called without workers.
    cache: outcomes known from before (the index); only the other files are read.
    workers: worker processes the caller started (and stops), used instead of jobs ones.
    """
    root = Path(root)
    result = ScanResult(root)
    headers: list[SliceHeader] = []
    known: list[Outcome] = []
    if cache is None:
        outcomes, _ = _read_headers(iter_files(root), jobs, progress, while_waiting, workers)
    else:
        to_read, known = cache.split(iter_files(root))
        outcomes, fields = _read_headers(to_read, jobs, progress, while_waiting, workers)
        known = [*known, *cache.learned(outcomes, fields)]
    for outcome in itertools.chain(known, outcomes):
        if isinstance(outcome, FileRecord):
            result.files.append(outcome)
        else:
            headers.extend(outcome)
    unique, duplicates = _drop_duplicates(headers, root, cache)
    result.files.extend(duplicates)
    result.series = group_series(unique)
    name_series(result.series)
    labels: dict[Path, list[str]] = {}
    sizes: dict[Path, int | None] = {}
    for group in result.series:
        for header in group.headers:
            sizes[header.path] = header.file_size
        for path in dict.fromkeys(h.path for h in group.headers):
            labels.setdefault(path, []).append(group.label)
    conflicts = {record.path: record for record in duplicates
                 if record.status == FileStatus.CONFLICT}
    for record in conflicts.values():
        record.series = ", ".join(labels.get(record.path, []))
    result.files.extend(FileRecord(path, FileStatus.USED, series=", ".join(names), size=sizes[path])
                        for path, names in labels.items() if path not in conflicts)
    result.files.sort(key=lambda record: str(record.path))
    return result


#: Below this many files a process pool costs more (start-up, imports) than it saves.
PARALLEL_MIN_FILES = 2000
_CHUNK = 256


def _read_headers(paths: Iterable[Path], jobs: int, progress: ProgressCallback | None,
                  while_waiting: Callable[[list[Path]], object] | None = None,
                  started: Workers | None = None,
                  ) -> tuple[list[Outcome], list[list[tuple] | tuple] | None]:
    """read_header over paths, in order; in worker processes for big trees when jobs != 1.
    Returns the outcomes, and the outcome_fields the workers sent (None when read here): an
    index stores those, and would otherwise make them again.

    Chunks go to the workers while the folder is still being walked, so that the walk
    overlaps the reading.
    """
    workers = cores.for_jobs(jobs)
    paths = iter(paths)
    first = list(itertools.islice(paths, PARALLEL_MIN_FILES))
    if (workers == 1 and started is None) or len(first) < PARALLEL_MIN_FILES:
        everything = first + list(paths)
        outcomes = []
        for path in everything:
            outcomes.append(read_header(path))
            if progress:
                progress(len(outcomes), len(everything))
        return outcomes, None
    chunks: list[list[Path]] = []
    outcomes = []
    fields: list[list[tuple] | tuple] = []
    with (contextlib.nullcontext(started) if started is not None
          else process_pool(workers)) as pool:
        futures = []
        for chunk in _batches(itertools.chain(first, paths), _CHUNK):
            chunks.append(chunk)
            futures.append(pool.submit(_read_chunk, [str(path) for path in chunk]))
        total = sum(len(chunk) for chunk in chunks)
        if while_waiting:  # every worker is forked by now: imports here cannot race a fork
            while_waiting([path for chunk in chunks for path in chunk])
        for chunk, future in zip(chunks, futures, strict=True):
            sent = future.result()
            fields.extend(sent)
            outcomes.extend(_received(chunk, sent))
            if progress:
                progress(len(outcomes), total)
    return outcomes, fields


def _batches(items: Iterable[Path], size: int) -> Iterable[list[Path]]:
    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch


#: A worker sends each header (and file record) back as a tuple of its fields, without the
#: path (the parent has its own Path objects): pickling dataclasses and paths cost more than
#: the reading.
_FIELDS = tuple(field.name for field in dataclasses.fields(SliceHeader))
_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(FileRecord))


def outcome_fields(outcome: Outcome) -> list[tuple] | tuple:
    """An outcome as plain tuples of its fields, without the path (outcome_from_fields
    gives it back): what workers send, and what the index stores."""
    if isinstance(outcome, FileRecord):
        return tuple(getattr(outcome, name) for name in _RECORD_FIELDS[1:])
    return [tuple(getattr(header, name) for name in _FIELDS[1:]) for header in outcome]


def outcome_from_fields(path: Path, item: list[tuple] | tuple) -> Outcome:
    if isinstance(item, tuple):
        return FileRecord(path, *item)
    return [SliceHeader(path, *fields) for fields in item]


def _read_chunk(texts: list[str]) -> list[list[tuple] | tuple]:
    """read_header in a worker process, for a chunk of paths given as text."""
    return [outcome_fields(read_header(Path(text))) for text in texts]


def _received(chunk: list[Path], sent: list[list[tuple] | tuple],
              ) -> list[list[SliceHeader] | FileRecord]:
    """_read_chunk's results back as FileRecords and SliceHeaders, with the parent's paths."""
    return [outcome_from_fields(path, item) for path, item in zip(chunk, sent, strict=True)]


#: One version of an instance: its first file (path as text), its headers, its copies
#: (path as text, bytes).
Version = tuple[str, list[SliceHeader], list[tuple[str, int | None]]]


def _drop_duplicates(headers: list[SliceHeader], root: Path, cache: HeaderCache | None = None,
                     ) -> tuple[list[SliceHeader], list[FileRecord]]:
    """Keep one file of each SOPInstanceUID: the first in path order, and report the other
    copies once (duplicate). Versions that differ (see _difference) are all kept, each
    with a problem that refuses its series, and reported as conflicts."""
    # Paths as text: Path hashing and comparison cost more than the rest with 10^4 files.
    by_uid: dict[str, dict[str, list[SliceHeader]]] = {}
    for text, _, header in sorted((str(h.path), h.frame, h) for h in headers):
        by_uid.setdefault(header.sop_instance_uid, {}).setdefault(text, []).append(header)
    prefix = len(os.path.join(root, "")) if root.is_dir() else None  # "/" and "/a/" alike

    def where(text: str) -> str:
        return text[prefix:] if prefix else Path(text).name

    unique: list[SliceHeader] = []
    records: dict[str, FileRecord] = {}
    compared: PixelMemo = {}

    def differ(other: list[SliceHeader], mine: list[SliceHeader],
               alike: list[Path] | None = None) -> list[Difference]:
        compute = functools.partial(_differences, other, mine, compared, alike)
        return compute() if cache is None else cache.differences(other, mine, compute)

    for files in by_uid.values():
        versions = _versions(files, differ)  # [(first path, its headers, [(copy, size)])]
        if len(versions) == 1:
            unique.extend(versions[0][1])
        else:
            unique.extend(_conflicting(versions, where, records, differ))
        for kept, _, copies in versions:
            for text, size in copies:
                if text not in records:  # its headers' Path: making 10^4 Paths costs
                    records[text] = FileRecord(
                        files[text][0].path, FileStatus.DUPLICATE,
                        f"same SOPInstanceUID as {where(kept)}", size=size)
    return unique, list(records.values())


def _versions(files: dict[str, list[SliceHeader]], differ: Differ) -> list[Version]:
    """The files of one SOPInstanceUID (path order) as distinct versions: each the first
    file of its kind, its headers, and the later files that are copies of it."""
    versions: list[Version] = []
    alike: list[list[Path]] = []  # per version: its copies that are other bytes, same pixels
    for text, members in files.items():
        for (_, kept_headers, copies), others in zip(versions, alike, strict=True):
            if not differ(kept_headers, members, others):
                copies.append((text, members[0].file_size))
                break
        else:
            versions.append((text, members, []))
            alike.append([])
    return versions


def _conflicting(versions: list[Version], where: Callable[[str], str],
                 records: dict[str, FileRecord], differ: Differ) -> list[SliceHeader]:
    """The headers of each version of a SOPInstanceUID, each with a problem naming the
    first other version and how it differs (so that its series is refused); each
    version's file is recorded as a conflict."""
    kept: list[SliceHeader] = []
    for index, (text, members, _) in enumerate(versions):
        other_text, other_members, _ = versions[1 if index == 0 else 0]
        differences = differ(other_members, members)
        reason = (f"shares its SOPInstanceUID with {where(other_text)}, which differs in "
                  f"{_describe(differences)}")
        if len(versions) > 2:
            reason += f" ({len(versions)} different files share it)"
        records[text] = FileRecord(Path(text), FileStatus.CONFLICT, reason,
                                   size=members[0].file_size)
        kept.extend(dataclasses.replace(header, problem=header.problem or
                                        f"SOPInstanceUID conflict: {reason}")
                    for header in members)
    return kept


#: SliceHeader fields that two copies of one instance may differ in: where the file is,
#: how it is encoded, what reading it noted, and objects compared by identity.
_NOT_COMPARED = frozenset({"path", "transfer_syntax", "file_size", "notes", "mosaic",
                           "problem", "pixel_offset"})
_COMPARED = tuple(name for name in _FIELDS if name not in _NOT_COMPARED)
#: The compared fields of a header as one tuple (one C call: most copies are equal).
_compared_values = operator.attrgetter(*_COMPARED)
#: A difference: (what, value in the other file, value in this one).
Difference = tuple[str, Any, Any]
_SHOWN = 3
#: A file as stored: (device, inode, size, mtime in ns); hard links to one file share it.
FileIdentity = tuple[int, int, int, int]
#: The pixel comparisons of one scan (_pixel_difference's answers), by the files' identities:
#: a tree of hard links (replicas, deduplicated archives) decodes each pair of files once.
PixelMemo = dict[tuple[FileIdentity, FileIdentity], str]
#: In a difference when two files' pixel data could not be read (not a lasting answer).
UNCOMPARED = "they could not be compared"
#: (other, mine[, alike]) -> their differences: _differences, through a HeaderCache if any.
Differ = Callable[..., list[Difference]]


def _differences(other: list[SliceHeader], mine: list[SliceHeader], compared: PixelMemo,
                 alike: list[Path] | None = None) -> list[Difference]:
    """How two files of one SOPInstanceUID differ ([] when mine is a copy): the header
    attributes that differ, else the pixel data when the pixels differ (compared only when
    the files are not byte-identical: hard links to one file are, without reading them).

    alike: files already found to be copies of other with other bytes (another encoding);
    mine is a copy when it is byte-identical to one of them, and is added to them when its
    pixels are compared and found the same (each encoding is decoded once per version)."""
    if len(other) != len(mine):
        return [("number of images", len(other), len(mine))]
    if any(_compared_values(a) != _compared_values(b) for a, b in zip(other, mine, strict=True)):
        found = [(_keyword(name), getattr(a, name), getattr(b, name))
                 for a, b in zip(other, mine, strict=True) for name in _COMPARED
                 if getattr(a, name) != getattr(b, name)]
        if found:
            return list({item[0]: item for item in found}.values())  # each attribute once
    pair = _identities(other[0].path, mine[0].path)
    if _one_file(pair):
        return []  # one file (device and inode) under two names
    if filecmp.cmp(other[0].path, mine[0].path, shallow=False):
        return []
    if alike and any(_same_bytes(path, mine[0].path) for path in alike):
        return []  # a copy of a copy
    key = pair if pair is not None and pair[0][1] and pair[1][1] else None  # inodes known
    pixels = compared.get(key) if key is not None else None
    if pixels is None:
        pixels = _pixel_difference(other[0], mine[0])
        if key is not None:
            compared[key] = pixels
    if not pixels and alike is not None:
        alike.append(mine[0].path)
    return [(pixels, None, None)] if pixels else []


def _same_bytes(first: Path, second: Path) -> bool:
    """Byte-identical files: one file under two names (hard links), or equal contents."""
    if _one_file(_identities(first, second)):
        return True
    return filecmp.cmp(first, second, shallow=False)


def _one_file(pair: tuple[FileIdentity, FileIdentity] | None) -> bool:
    """Both names are one file: the same device and inode (a file system without inode
    numbers, which reports 0, proves nothing)."""
    return pair is not None and pair[0][1] != 0 and pair[0][:2] == pair[1][:2]


def _identities(first: Path, second: Path) -> tuple[FileIdentity, FileIdentity] | None:
    """The two files' identities, or None when one cannot be looked at (then they are read
    and compared as before, which reports the problem)."""
    try:
        a, b = os.stat(first), os.stat(second)
    except OSError:
        return None
    return ((a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns),
            (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns))


def _describe(differences: list[Difference]) -> str:
    """'SeriesInstanceUID, SeriesNumber (2 there, 1 here)'; UIDs without their values."""
    parts = [what if there is None or "UID" in what else f"{what} ({there!r} there, {here!r} here)"
             for what, there, here in differences[:_SHOWN]]
    more = len(differences) - _SHOWN
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _keyword(name: str) -> str:
    """A SliceHeader field's name as the DICOM keyword it mostly comes from."""
    return "".join(part.capitalize() for part in name.split("_")).replace("Uid", "UID")


def _pixel_difference(first: SliceHeader, second: SliceHeader) -> str:
    """'' when the two files' pixel data are the same (as stored when both use one
    transfer syntax, else as decoded), else what differs."""
    try:
        with warnings_caught():
            a = read_dataset(first.path, stop_before_pixels=False)
            b = read_dataset(second.path, stop_before_pixels=False)
            if first.transfer_syntax == second.transfer_syntax:
                same = a.get("PixelData") == b.get("PixelData")
            else:
                import numpy as np

                same = bool(np.array_equal(a.pixel_array, b.pixel_array))
    except Exception as exc:
        if not is_read_error(exc):
            raise
        return f"pixel data ({UNCOMPARED}: {read_reason(exc)})"
    return "" if same else "pixel data"
