"""What the audit learns about each file, kept while the file's stat key is unchanged.

A file's facts are what reading it gave: the scan outcome (its SliceHeaders, or its
FileRecord), the content kind of a non-DICOM file, a volume header, a JSON sidecar's
data, the identifying attributes of a series' first file. An indexed audit asks
FileFacts for them; FileFacts answers from the index when the file's stat key
(size, mtime_ns, inode, ctime_ns) is the one stored with them, and otherwise
computes them (reads the file) and remembers them for the index.

Facts are stored as pickles, each sealed with its CRC-32 (checked before it is read:
SQLite checks the structure of its pages, not the values in them, so a byte damaged on
disk would otherwise be read as another position or UID), and loaded by an unpickler that
builds only the classes listed in SAFE_GLOBALS: a crafted index file cannot run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from convkit import __version__
from convkit.audit.volumes import SizeCheck, VolumeHeader
from convkit.dicom.diffusion import Diffusion, DirectionKind
from convkit.dicom.header import FileRecord, SliceHeader
from convkit.dicom.mosaic import MosaicLayout
from convkit.dicom.scan import UNCOMPARED, Outcome, outcome_fields, outcome_from_fields
from convkit.errors import exception_reason
from convkit.index.errors import IndexFileError

T = TypeVar("T")
#: (st_size, st_mtime_ns, st_ino, st_ctime_ns): a file whose key is unchanged is not read
#: again. ctime also changes with permissions and with a rewrite that restores the mtime.
StatKey = tuple[int, int, int, int]
#: Protocol 3: its memo entries carry explicit numbers, so that many pickles can be read
#: by one unpickler in a row (protocol 4's implicit numbering would run on across them).
PICKLE_PROTOCOL = 3
#: How a facts blob is laid out: 2 = the pickle, then its CRC-32 (4 bytes, little endian).
#: Part of facts_version: blobs of another layout are read again, never misread.
FACTS_LAYOUT = 2
_SEAL = 4

#: Globals the index's pickles may name: numpy arrays and scalars, paths, convkit's own
#: value classes. Anything else is refused (a foreign or crafted index).
SAFE_GLOBALS = {
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"),
    ("builtins", "bytearray"), ("collections", "OrderedDict"),
    *((cls.__module__, cls.__qualname__) for cls in (MosaicLayout, Diffusion, VolumeHeader,
                                                      SizeCheck)),
    ("convkit.dicom.header", "FileStatus"), ("convkit.audit.findings", "Severity"),
    (DirectionKind.__module__, DirectionKind.__qualname__),
    ("convkit.audit.identifiers", "IdentifiersUnchecked"),
}


def facts_version() -> str:
    """convkit's version and the fields of every stored class: facts written by another
    convkit (or another shape of these classes) are read again, never misread."""
    shapes = [f"{cls.__name__}:{','.join(f.name for f in dataclasses.fields(cls))}"
              for cls in (SliceHeader, FileRecord, VolumeHeader, SizeCheck, MosaicLayout,
                          Diffusion)]
    digest = hashlib.sha256(";".join(shapes).encode()).hexdigest()[:16]
    return f"{__version__}:{FACTS_LAYOUT}:{digest}"


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not a class the index stores")
        return super().find_class(module, name)


def dump_facts(facts: dict[str, Any]) -> bytes:
    return seal(pickle.dumps(facts, PICKLE_PROTOCOL))


def seal(data: bytes) -> bytes:
    """data followed by its CRC-32: what a stored facts blob is (FACTS_LAYOUT)."""
    return data + zlib.crc32(data).to_bytes(_SEAL, "little")


def load_facts(blobs: list[bytes]) -> list[dict[str, Any]]:
    """Unpickle many facts at once (one unpickler over the joined pickles: fast), each
    checked against its seal first (ValueError when one is damaged)."""
    if not blobs:
        return []
    pickles = []
    for blob in blobs:
        data = memoryview(blob)[:-_SEAL]
        if len(blob) <= _SEAL or zlib.crc32(data).to_bytes(_SEAL, "little") != blob[-_SEAL:]:
            raise ValueError("a stored facts blob does not match its CRC-32")
        pickles.append(data)
    unpickler = _SafeUnpickler(io.BytesIO(b"".join(pickles)))
    return [unpickler.load() for _ in blobs]


def stat_key(path: str) -> StatKey | None:
    """The key of a regular file (through links), or None (never cached: always read)."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return (status.st_size, status.st_mtime_ns, status.st_ino, status.st_ctime_ns)


@dataclass(slots=True)
class Stored:
    """A file as the index holds it."""

    key: StatKey | None  # None: its facts are not to be trusted (read it again)
    row: tuple  # (kind, status, reason, series) in the last audit's files table


@dataclass
class Copies:
    """What the last audit of this root (same options) said about its duplicates, so that
    a re-audit settles the copies of instances nothing touched without loading them.

    A duplicate's row (status, reason, bytes) depends only on the files that share its
    SOPInstanceUID: while none of them is new, changed or gone, the scan would find the
    same copies of the same first file again."""

    rows: dict[str, tuple[str, int | None]]  # path as the scan gives it -> (reason, bytes)
    conflicts: list[str]  # absolute paths of its conflicts (their instances: worked out again)
    #: the stored SOPInstanceUIDs of files (absolute paths): Index.instances_of
    instances_of: Callable[[list[str]], set[str]]
    #: the files (absolute paths) with a stored image of any of these UIDs: Index.holding
    holding: Callable[[set[str]], set[str]]
    #: the stored facts of files (absolute paths): Index.facts_of
    facts_of: Callable[[list[str]], dict[str, bytes]]


@dataclass(slots=True)
class Entry:
    """One file in this run: its key now and the facts known for that key."""

    path: str  # absolute
    key: StatKey | None
    facts: dict[str, Any] = field(default_factory=dict)
    learned: bool = False  # facts computed in this run (to be written to the index)


class FileFacts:
    """Facts of the files under one root: from the index when a file's key is unchanged.

    Implements scan.HeaderCache (split / learned) for the header scan, and fact() for
    the audit's other reads. Counts: read (files whose header was read), from_index.
    """

    def __init__(self, stored: dict[str, Stored], blobs: Callable[[], dict[str, bytes]],
                 whole_folders: bool = True) -> None:
        self.stored = stored  # absolute path -> Stored
        self.blobs = blobs  # the stored facts, fetched only when the scan needs them
        self.whole_folders = whole_folders  # the walk lists every file of its folders
        self.entries: dict[str, Entry] = {}  # path as the scan gives it -> Entry
        self.read = 0
        self.from_index = 0
        self._survey: tuple[list[str], list[str]] | None = None  # (to read, unchanged)
        self._listed: dict[str, list[Entry]] | None = None  # folder -> its files' entries
        self._folders: dict[str, str] = {}  # folder -> folder_key
        self._reading: list[Path] = []  # the paths split() gave to read, in order
        self.copies: Copies | None = None  # duplicates to settle without loading (audit)
        self._deferred: list[str] = []  # unchanged duplicates, settled once learned()
        self._settled: list[tuple[str, str, int | None]] = []  # (path, reason, bytes)
        self._blobs: dict[str, bytes] = {}

    # -- the walk ------------------------------------------------------------------------

    def survey(self, texts: Iterable[str], absolute: bool = False) -> bool:
        """Stat every file (paths as text: scan.iter_file_texts; absolute: they are absolute
        and normal already); True when every file is in the index, unchanged, and no file
        of the index has gone (the tree is as the index last saw it)."""
        to_read, unchanged = [], []
        entries, stored_files = self.entries, self.stored
        for text in texts:
            path = text if absolute else os.path.abspath(text)
            entry = entries[text] = Entry(path, stat_key(path))
            stored = stored_files.get(path)
            if entry.key is not None and stored is not None and stored.key == entry.key:
                unchanged.append(text)
            else:
                to_read.append(text)
        self._survey = (to_read, unchanged)
        return not to_read and len(unchanged) == len(self.stored)

    def _new_entry(self, text: str) -> Entry:
        absolute = os.path.abspath(text)
        entry = self.entries[text] = Entry(absolute, stat_key(absolute))
        return entry

    def _unsurveyed(self, paths: Iterable[Path]) -> Iterator[Path]:
        """Every path, stat'ed as the walk goes (the walk then overlaps the reading)."""
        for path in paths:
            self._new_entry(str(path))
            self._reading.append(path)
            yield path

    @property
    def removed(self) -> list[str]:
        """Absolute paths the index holds under the root that the walk did not find."""
        seen = {entry.path for entry in self.entries.values()}
        return [path for path in self.stored if path not in seen]

    def folder_key(self, path: Path) -> str | None:
        """A digest of the names and keys of every file in path's folder (None when the
        walk did not list the whole folder): what a volume's detached data can change."""
        if not self.whole_folders:
            return None
        if self._listed is None:  # the files of each folder, digested when asked for
            listed: dict[str, list[Entry]] = {}
            for entry in list(self.entries.values()):
                listed.setdefault(os.path.dirname(entry.path), []).append(entry)
            self._listed = listed
        folder = os.path.dirname(self.entry(path).path)
        digest = self._folders.get(folder)
        if digest is None and folder in self._listed:
            items = sorted(f"{entry.path}\0{entry.key}" for entry in self._listed[folder])
            digest = self._folders[folder] = hashlib.sha256("\n".join(items).encode()).hexdigest()
        return digest

    # -- scan.HeaderCache ----------------------------------------------------------------

    def split(self, paths: Iterable[Path]) -> tuple[Iterable[Path], list[Outcome]]:
        """(paths to read, outcomes of the others). Without survey() before (with the same
        walk), every path is read (an index that holds nothing under the root). The stored
        duplicates of `copies` are left for learned(), which knows what changed."""
        if self._survey is None:
            if self.stored:
                self.survey(str(path) for path in paths)
            else:
                return self._unsurveyed(paths), []
        assert self._survey is not None
        to_read, unchanged = self._survey
        self._reading = [Path(text) for text in to_read]
        self.from_index = len(unchanged)
        if self.copies is None:
            self._blobs = self.blobs() if unchanged else {}
            return self._reading, self._load(unchanged)
        copies = self.copies.rows
        self._deferred = [text for text in unchanged if text in copies]
        now = [text for text in unchanged if text not in copies]
        self._blobs = self.copies.facts_of([self.entries[text].path for text in now])
        return self._reading, self._load(now)

    def _load(self, texts: list[str]) -> list[Outcome]:
        """The stored outcomes of unchanged files (their facts loaded)."""
        blobs = [self._blobs.get(self.entries[text].path) for text in texts]
        known = []
        for text, facts in zip(texts, _loaded(blobs), strict=True):
            self.entries[text].facts = facts
            known.append(outcome_from_fields(Path(text), facts["scan"]))
        return known

    def learned(self, outcomes: list[Outcome], fields: list | None = None) -> list[Outcome]:
        """The outcomes of the paths split() gave to read, in their order (fields: their
        outcome_fields, when known); returns those of the duplicates split() left whose
        SOPInstanceUIDs a file read now or gone shares (loaded); the others are settled as
        the last audit had them (settled_copies)."""
        self.read = len(outcomes)
        if fields is None:
            fields = [outcome_fields(outcome) for outcome in outcomes]
        for path, scanned in zip(self._reading, fields, strict=True):
            entry = self.entries[str(path)]
            entry.facts = {"scan": scanned}
            entry.learned = True
        if not self._deferred:
            return []
        assert self.copies is not None
        touched = self.copies.holding(self._touched(outcomes))
        rows = self.copies.rows
        load = []
        for text in self._deferred:
            if self.entries[text].path in touched:
                load.append(text)
            else:
                reason, size = rows[text]
                self._settled.append((text, reason, size))
        self._deferred = []
        self._settled.sort()
        self._blobs = self.copies.facts_of([self.entries[text].path for text in load])
        return self._load(load)

    def settled_copies(self) -> list[tuple[str, str, int | None]]:
        """The duplicates settled without loading them, as (path, reason, bytes) in path
        order: their rows and findings are the last audit's (core.audit_path adds them)."""
        return self._settled

    def _touched(self, outcomes: list[Outcome]) -> set[str]:
        """SOPInstanceUIDs whose files are not as the last audit saw them: those of the files
        read now (before and after) and of the files gone, and those of its conflicts."""
        assert self.copies is not None
        touched = {header.sop_instance_uid for outcome in outcomes
                   if not isinstance(outcome, FileRecord) for header in outcome}
        before = [*(self.entries[str(path)].path for path in self._reading), *self.removed,
                  *self.copies.conflicts]
        return touched | self.copies.instances_of(before)

    def differences(self, other: list[SliceHeader], mine: list[SliceHeader],
                    compute: Callable[[], list[Any]]) -> list[Any]:
        """How two files of one SOPInstanceUID differ (their headers, else their bytes,
        else their pixel data: scan._differences): kept with the second file, valid while
        both files' keys are those it was computed with."""
        entry, first = self.entry(mine[0].path), self.entry(other[0].path)
        if entry.key is None or first.key is None:
            return compute()
        compared = entry.facts.get("differences", {})
        known = compared.get(first.path)
        if known is not None and known[0] == first.key:
            return list(known[1])
        value = compute()
        if not any(UNCOMPARED in str(item[0]) for item in value):  # a read error: not kept
            entry.facts["differences"] = {**compared, first.path: (first.key, value)}
            entry.learned = True
        return value

    # -- other facts -----------------------------------------------------------------------

    def entry(self, path: Path) -> Entry:
        text = str(path)
        entry = self.entries.get(text)
        if entry is None:  # a file outside the walk (a single file's neighbour)
            absolute = os.path.abspath(text)
            entry = self.entries[text] = Entry(absolute, stat_key(absolute))
        return entry

    def fact(self, path: Path, name: str, compute: Callable[[], T],
             valid: Callable[[T], bool] | None = None) -> T:
        """The fact `name` of a file: known (and still valid), or computed now."""
        entry = self.entry(path)
        if name in entry.facts and (valid is None or valid(entry.facts[name])):
            return entry.facts[name]
        value = compute()
        if entry.key is not None:
            entry.facts[name] = value
            entry.learned = True
        return value


def _loaded(blobs: list[bytes | None]) -> list[dict[str, Any]]:
    try:
        return load_facts([blob or b"" for blob in blobs])
    except Exception as exc:  # any damage in a pickle: the index is not trustworthy
        raise IndexFileError(f"the index holds damaged file facts ({exception_reason(exc)})",
                             ) from exc
