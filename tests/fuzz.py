"""Fuzz harness (issue 18): seeded mutations of small valid inputs, every command, one oracle.

Seeds are small valid inputs written here, byte for byte the same on every run: a DICOM
series in seven transfer syntaxes (explicit/implicit little endian, big endian, deflated,
RLE, JPEG-LS lossless, JPEG 2000 lossless), an enhanced multi-frame file, NIfTI (.nii,
.nii.gz), NRRD (attached and detached, raw and gzip) and MetaImage (.mha raw and zlib,
.mhd + .raw). A mutator is a small named function that takes the input's files (or one
file's bytes) and a `random.Random` and breaks the input in one way of one class of the
issue (MUTATORS). Every command that applies runs on every mutated input (COMMANDS), in a
forked child under a time and memory limit, and the oracle (`check`) holds for each:

- the exit code is a documented one (never 70, 1 only where it means "found"), no
  traceback, no raw Python warning, nothing printed past the CLI's own streams;
- it finishes within the time limit (a hang is a failure) and the child is not killed by
  a signal or the memory limit (MemoryError under the limit: sizes not checked first);
- nothing is written, changed or removed outside the output folder; no `.convkit-*`
  staging left behind; on exit 2-5 no output under its final name;
- exit 0 only with sane output: readable, finite affine and values, strict JSON; and no
  success at all (exit 0, or 1 for compare) from a command that reads voxels when the
  mutator says none can be read (`Input.must_fail`: a gzip CRC or zlib Adler-32 that does
  not match, voxel data truncated, missing, a FIFO or directory, or shorter than the
  header's sizes).

A case is (command, mutator, seed, variant); the mutation depends on (base seed, mutator,
seed, variant) only, so every command sees the same broken input. `cases()` gives the
default run (about 420 cases) or, scaled, an extended one. Replay one case from its id:

    .venv/bin/python tests/fuzz.py CASE_ID [FOLDER]     # writes the input, prints the command
    .venv/bin/python tests/fuzz.py CASE_ID FOLDER --run # and runs it through the oracle

New reader, new mutator: write `def my_mutator(inp, rng) -> str` (or a byte-level
`(data, rng) -> (bytes, note)` wrapped by `on_one_file`), give it a `Mutator(...)` entry
with the seed tags it needs and a weight, and add a seed when the format is new (SEEDS).
"""

from __future__ import annotations

import faulthandler
import gzip
import json
import os
import pickle
import random
import re
import resource
import select
import shlex
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The default base seed (the issue's number); CONVKIT_FUZZ_SEED overrides it.
FUZZ_SEED = int(os.environ.get("CONVKIT_FUZZ_SEED", "18"))
#: Seconds one command may take on one tiny input (CONVKIT_FUZZ_TIMEOUT); beyond it: a hang.
TIMEOUT_S = float(os.environ.get("CONVKIT_FUZZ_TIMEOUT", "5"))
#: Memory a command may add to the test process (address space), MiB (CONVKIT_FUZZ_MEMORY_MB).
MEMORY_MB = int(os.environ.get("CONVKIT_FUZZ_MEMORY_MB", "2048"))

# ------------------------------------------------------------------------------------------
# Seeds: small valid inputs, deterministic to the byte.

SHAPE = (4, 16, 16)  # slices, rows, columns
PIXEL_SPACING = (0.8, 0.9)  # DICOM: between rows, between columns
SLICE_SPACING = 2.0
ORIGIN_LPS = (-10.0, 20.0, 30.0)
INTERCEPT = -1024.0
SYNTAXES = {
    "explicit": "1.2.840.10008.1.2.1",
    "implicit": "1.2.840.10008.1.2",
    "bigendian": "1.2.840.10008.1.2.2",
    "deflated": "1.2.840.10008.1.2.1.99",
    "rle": "1.2.840.10008.1.2.5",
    # pydicom has no encoder for JPEG lossless process 14 (.4.70): JPEG-LS lossless stands
    # for the lossless JPEG family, as in tests/test_cli.py.
    "jpegls": "1.2.840.10008.1.2.4.80",
    "j2k": "1.2.840.10008.1.2.4.90",  # the encoder needs 32 pixels a side
}


@dataclass(frozen=True)
class Seed:
    """One valid input: its files live in a folder of their own; `entry` is what commands get."""

    name: str
    kind: str  # "dicom" | "nifti" | "nrrd" | "mha": picks the commands
    entry: str  # relative to the seed folder: "series" (a DICOM folder) or the volume file
    tags: frozenset[str]  # what mutators ask for (Mutator.needs)
    write: Callable[[Path], None] = field(compare=False, repr=False)


def _stored(rows: int = SHAPE[1], cols: int = SHAPE[2], n: int = SHAPE[0]) -> np.ndarray:
    return np.random.default_rng(18).integers(-1000, 3000, size=(n, rows, cols)).astype(np.int16)


def _write_dicom_series(syntax: str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        from convkit.testing.synthetic import regular_positions, write_series

        side = 32 if syntax == SYNTAXES["j2k"] else SHAPE[1]
        stored = _stored(side, side, 3 if side == 32 else SHAPE[0])
        positions = regular_positions(len(stored), origin=ORIGIN_LPS, spacing=SLICE_SPACING)
        write_series(folder / "series", stored, positions, pixel_spacing=PIXEL_SPACING,
                     rescale_intercept=INTERCEPT, rescale_slope=1.0, transfer_syntax=syntax,
                     series_description="fuzz seed", seed=18)
    return write


def _write_enhanced(folder: Path) -> None:
    from convkit.testing.synthetic import regular_positions, write_enhanced

    stored = _stored()
    positions = regular_positions(len(stored), origin=ORIGIN_LPS, spacing=SLICE_SPACING)
    orientations = np.tile([1.0, 0, 0, 0, 1, 0], (len(stored), 1))
    write_enhanced(folder / "series" / "enhanced.dcm", stored, positions, orientations,
                   pixel_spacing=PIXEL_SPACING, rescale_intercept=INTERCEPT, seed=18)


def _volume_voxels() -> np.ndarray:
    """(i, j, k) voxels of the volume seeds: the DICOM seed's stored values, column fastest."""
    return _stored().transpose(2, 1, 0)


def _affine_ras() -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = np.diag([PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_SPACING])
    lps[:3, 3] = ORIGIN_LPS
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _write_nifti(name: str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        import nibabel as nib

        image = nib.Nifti1Image(_volume_voxels(), _affine_ras())
        image.set_qform(_affine_ras(), 1)
        image.set_sform(_affine_ras(), 1)
        header = bytearray(image.to_bytes())
        struct.pack_into("<ff", header, NIFTI_SCL_SLOPE, 1.0, INTERCEPT)
        data = bytes(header)
        (folder / name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return write


def _nrrd_header(encoding: str, data_file: str | None) -> bytes:
    sizes = " ".join(str(s) for s in _volume_voxels().shape)
    lines = ["NRRD0004", "type: int16", "dimension: 3", "space: left-posterior-superior",
             f"sizes: {sizes}",
             f"space directions: ({PIXEL_SPACING[1]},0,0) (0,{PIXEL_SPACING[0]},0) "
             f"(0,0,{SLICE_SPACING})",
             "kinds: domain domain domain", "endian: little", f"encoding: {encoding}",
             "space origin: ({},{},{})".format(*ORIGIN_LPS)]
    if data_file:
        lines.append(f"data file: {data_file}")
    return ("\n".join(lines) + "\n\n").encode()


def _voxel_bytes(encoding: str) -> bytes:
    raw = _volume_voxels().astype("<i2").tobytes(order="F")
    return gzip.compress(raw, mtime=0) if encoding == "gzip" else raw


def _write_nrrd(name: str, encoding: str) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        if name.endswith(".nhdr"):
            data_name = "image.raw" + (".gz" if encoding == "gzip" else "")
            (folder / name).write_bytes(_nrrd_header(encoding, data_name))
            (folder / data_name).write_bytes(_voxel_bytes(encoding))
        else:
            (folder / name).write_bytes(_nrrd_header(encoding, None) + _voxel_bytes(encoding))
    return write


def _mha_header(data_file: str, compressed_size: int | None) -> bytes:
    i, j, k = _volume_voxels().shape
    lines = ["ObjectType = Image", "NDims = 3", "BinaryData = True",
             "BinaryDataByteOrderMSB = False",
             f"CompressedData = {'True' if compressed_size is not None else 'False'}"]
    if compressed_size is not None:
        lines.append(f"CompressedDataSize = {compressed_size}")
    lines += ["TransformMatrix = 1 0 0 0 1 0 0 0 1", "Offset = {} {} {}".format(*ORIGIN_LPS),
              "CenterOfRotation = 0 0 0", "AnatomicalOrientation = RAI",
              f"ElementSpacing = {PIXEL_SPACING[1]} {PIXEL_SPACING[0]} {SLICE_SPACING}",
              f"DimSize = {i} {j} {k}", "ElementType = MET_SHORT",
              f"ElementDataFile = {data_file}"]
    return ("\n".join(lines) + "\n").encode()


def _write_mha(name: str, compressed: bool) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        raw = _voxel_bytes("raw")
        data = zlib.compress(raw, 6) if compressed else raw
        size = len(data) if compressed else None
        if name.endswith(".mhd"):
            (folder / name).write_bytes(_mha_header("image.raw", size))
            (folder / "image.raw").write_bytes(data)
        else:
            (folder / name).write_bytes(_mha_header("LOCAL", size) + data)
    return write


def _seeds() -> dict[str, Seed]:
    def volume(name: str, entry: str, tags: str, write: Callable[[Path], None]) -> Seed:
        kind = tags.split()[0]
        return Seed(name, kind, entry, frozenset({"volume", *tags.split()}), write)

    seeds = [Seed(f"dicom_{name}", "dicom", "series", frozenset({"dicom", "series", name}),
                  _write_dicom_series(syntax)) for name, syntax in SYNTAXES.items()]
    seeds += [
        Seed("enhanced", "dicom", "series", frozenset({"dicom", "enhanced"}), _write_enhanced),
        volume("nifti", "image.nii", "nifti", _write_nifti("image.nii")),
        volume("nifti_gz", "image.nii.gz", "nifti compressed", _write_nifti("image.nii.gz")),
        volume("nrrd_raw", "image.nrrd", "nrrd", _write_nrrd("image.nrrd", "raw")),
        volume("nrrd_gzip", "image.nrrd", "nrrd compressed", _write_nrrd("image.nrrd", "gzip")),
        volume("nhdr_raw", "image.nhdr", "nrrd detached", _write_nrrd("image.nhdr", "raw")),
        volume("nhdr_gzip", "image.nhdr", "nrrd detached compressed",
               _write_nrrd("image.nhdr", "gzip")),
        volume("mha", "image.mha", "mha", _write_mha("image.mha", False)),
        volume("mha_zlib", "image.mha", "mha compressed", _write_mha("image.mha", True)),
        volume("mhd", "image.mhd", "mha detached", _write_mha("image.mhd", False)),
    ]
    return {seed.name: seed for seed in seeds}


SEEDS = _seeds()


def write_seeds(root: Path) -> dict[str, Path]:
    """Every seed in a folder of its own under root: name -> folder."""
    folders = {}
    for seed in SEEDS.values():
        folder = root / seed.name
        folder.mkdir(parents=True, exist_ok=True)
        seed.write(folder)
        folders[seed.name] = folder
    return folders


# ------------------------------------------------------------------------------------------
# DICOM as a tree of raw elements: values are bytes, so any value (NaN, odd lengths, huge
# lengths, deep nesting) can be written in any transfer syntax.

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
IMPLICIT, BIG_ENDIAN, DEFLATED = SYNTAXES["implicit"], SYNTAXES["bigendian"], SYNTAXES["deflated"]


def tag_of(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return tag


@dataclass
class Element:
    """One element: raw value bytes, or items (SQ); `raw` is a whole encoded element."""

    tag: int
    vr: str
    value: bytes = b""
    items: list[list[Element]] | None = None
    undefined: bool = False  # undefined length (SQ, encapsulated pixel data)
    length: int | None = None  # written instead of the true length (huge/odd lengths)
    raw: bytes | None = None  # written as it is, header included (deep nesting)


@dataclass
class DicomFile:
    prefix: bytes  # preamble and file meta information, kept as read
    syntax: str
    elements: list[Element]

    @property
    def little(self) -> bool:
        return self.syntax != BIG_ENDIAN

    @property
    def explicit(self) -> bool:
        return self.syntax != IMPLICIT

    def find(self, keyword: str) -> list[Element]:
        """Every element with this keyword, at any depth."""
        return list(_find(self.elements, tag_of(keyword)))

    def number(self, fmt: str, value: int) -> bytes:
        return struct.pack(("<" if self.little else ">") + fmt, value)


def _find(elements: list[Element], tag: int) -> Iterator[Element]:
    for element in elements:
        if element.tag == tag:
            yield element
        for item in element.items or []:
            yield from _find(item, tag)


def _dictionary_vr(tag: int) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


class _Reader:
    def __init__(self, data: bytes, little: bool, explicit: bool) -> None:
        self.data, self.explicit = data, explicit
        self.order = "<" if little else ">"

    def u16(self, pos: int) -> int:
        return struct.unpack_from(self.order + "H", self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return struct.unpack_from(self.order + "I", self.data, pos)[0]

    def tag(self, pos: int) -> int:
        return (self.u16(pos) << 16) | self.u16(pos + 2)

    def elements(self, pos: int, end: int) -> tuple[list[Element], int]:
        """Elements from pos to end, or to an item delimiter (consumed)."""
        found = []
        while pos < end:
            if self.tag(pos) == ITEM_END:
                return found, pos + 8
            element, pos = self.element(pos)
            found.append(element)
        return found, pos

    def element(self, pos: int) -> tuple[Element, int]:
        tag = self.tag(pos)
        if self.explicit and tag >> 16 != 0xFFFE:
            vr = self.data[pos + 4:pos + 6].decode("latin-1")
            length, start = ((self.u32(pos + 8), pos + 12) if vr in LONG_VRS
                             else (self.u16(pos + 6), pos + 8))
        else:
            vr, length, start = _dictionary_vr(tag), self.u32(pos + 4), pos + 8
        if tag == PIXEL_DATA and length == UNDEFINED:
            end = self.fragments_end(start)
            return Element(tag, vr, self.data[start:end], undefined=True), end
        if vr == "SQ" or length == UNDEFINED:
            items, end = self.items(start, length)
            return Element(tag, "SQ", items=items, undefined=length == UNDEFINED), end
        return Element(tag, vr, self.data[start:start + length]), start + length

    def items(self, pos: int, length: int) -> tuple[list[list[Element]], int]:
        end = len(self.data) if length == UNDEFINED else pos + length
        items = []
        while pos < end:
            tag, item_length = self.tag(pos), self.u32(pos + 4)
            if tag == SEQUENCE_END:
                return items, pos + 8
            if tag != ITEM:
                raise ValueError(f"expected an item at {pos}, found {tag:08x}")
            if item_length == UNDEFINED:
                item, pos = self.elements(pos + 8, len(self.data))
            else:
                item, _ = self.elements(pos + 8, pos + 8 + item_length)
                pos += 8 + item_length
            items.append(item)
        return items, pos

    def fragments_end(self, pos: int) -> int:
        while self.tag(pos) != SEQUENCE_END:
            pos += 8 + self.u32(pos + 4)
        return pos + 8


class _Writer:
    def __init__(self, little: bool, explicit: bool) -> None:
        self.explicit = explicit
        self.order = "<" if little else ">"

    def tag(self, tag: int) -> bytes:
        return struct.pack(self.order + "HH", tag >> 16, tag & 0xFFFF)

    def u32(self, value: int) -> bytes:
        return struct.pack(self.order + "I", value & 0xFFFFFFFF)

    def header(self, tag: int, vr: str, length: int) -> bytes:
        if not self.explicit or tag >> 16 == 0xFFFE:
            return self.tag(tag) + self.u32(length)
        if vr in LONG_VRS:
            return self.tag(tag) + vr.encode() + b"\0\0" + self.u32(length)
        return self.tag(tag) + vr.encode() + struct.pack(self.order + "H", min(length, 0xFFFF))

    def elements(self, elements: list[Element]) -> bytes:
        return b"".join(self.element(element) for element in elements)

    def element(self, element: Element) -> bytes:
        if element.raw is not None:
            return element.raw
        if element.items is not None:
            body = b"".join(self.item(item, element.undefined) for item in element.items)
            body += self.tag(SEQUENCE_END) + self.u32(0) if element.undefined else b""
        else:
            body = element.value
        length = UNDEFINED if element.undefined else len(body)
        return self.header(element.tag, element.vr,
                           length if element.length is None else element.length) + body

    def item(self, elements: list[Element], undefined: bool) -> bytes:
        body = self.elements(elements)
        if undefined:
            return (self.tag(ITEM) + self.u32(UNDEFINED) + body + self.tag(ITEM_END)
                    + self.u32(0))
        return self.tag(ITEM) + self.u32(len(body)) + body


def read_dicom(path: Path) -> DicomFile:
    """A Part 10 file as a tree (the file meta information is kept as bytes)."""
    data = path.read_bytes()
    if data[128:132] != b"DICM":
        raise ValueError(f"{path} is not a Part 10 file")
    meta = _Reader(data, True, True)
    pos, syntax = 132, ""
    while pos < len(data) and meta.u16(pos) == 0x0002:
        element, end = meta.element(pos)
        if element.tag == 0x00020010:
            syntax = element.value.rstrip(b"\0 ").decode()
        pos = end
    body = data[pos:]
    if syntax == DEFLATED:
        body = zlib.decompress(body, -15)
    reader = _Reader(body, syntax != BIG_ENDIAN, syntax != IMPLICIT)
    elements, _ = reader.elements(0, len(body))
    return DicomFile(data[:pos], syntax, elements)


def write_dicom(dicom: DicomFile, path: Path) -> None:
    body = _Writer(dicom.little, dicom.explicit).elements(dicom.elements)
    if dicom.syntax == DEFLATED:
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = packer.compress(body) + packer.flush()
    path.write_bytes(dicom.prefix + body)


def text(value: str, pad: bool = True) -> bytes:
    """A text value as stored: latin-1, padded to an even length with a space unless not pad."""
    raw = value.encode("latin-1", "replace")
    return raw + b" " if pad and len(raw) % 2 else raw


def set_element(elements: list[Element], keyword: str, vr: str, value: bytes) -> Element:
    """Set (or insert, in tag order) a top-level element."""
    tag = tag_of(keyword)
    for element in elements:
        if element.tag == tag:
            element.value, element.items = value, None
            return element
    element = Element(tag, vr, value)
    index = next((i for i, e in enumerate(elements) if e.tag > tag), len(elements))
    elements.insert(index, element)
    return element


# ------------------------------------------------------------------------------------------
# Mutators.


@dataclass
class Input:
    """A mutable copy of one seed: its folder, and the outside world next to it."""

    folder: Path  # the seed's files (CASE/in)
    seed: Seed
    variant: int = 0
    #: Set by a mutator whose change leaves no readable voxels (a checksum fails, the data
    #: is missing or shorter than the header says): a command that reads voxels must fail.
    must_fail: str = ""

    @property
    def entry(self) -> Path:
        return self.folder / self.seed.entry

    @property
    def case(self) -> Path:
        """The case folder (the input's parent): where ../ tricks point."""
        return self.folder.parent

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    def dicom_files(self) -> list[Path]:
        return sorted((self.folder / "series").iterdir())

    def pick(self, rng: random.Random, options: list):
        """options[variant] while there are options left (the default run goes through the
        first ones in order: put the important ones first), then random ones."""
        return options[self.variant] if self.variant < len(options) else rng.choice(options)


@dataclass(frozen=True)
class Mutator:
    """name: what the case ids show; cls: the issue's class; needs: seed tags (all of them);
    weight: variants in the default run (each runs through every command)."""

    name: str
    cls: str
    apply: Callable[[Input, random.Random], str] = field(repr=False)
    needs: frozenset[str] = frozenset()
    weight: int = 1

    def applies_to(self, seed: Seed) -> bool:
        return self.needs <= seed.tags


def _biased_offset(size: int, rng: random.Random, head: int = 1024, skip: int = 0) -> int:
    """An offset in [0, size), half the time in the header region [skip, head)."""
    if size <= 1:
        return 0
    if rng.random() < 0.5 and size > skip:
        return rng.randrange(skip, min(size, head))
    return rng.randrange(size)


def _pick_file(inp: Input, rng: random.Random) -> Path:
    files = [p for p in inp.files() if p.stat().st_size]
    return rng.choice(files)


def holds_voxels(inp: Input, path: Path) -> bool:
    """A volume file whose end is voxel data (not a detached header, not DICOM)."""
    return inp.seed.kind != "dicom" and not path.name.endswith((".nhdr", ".mhd"))


def on_one_file(function: Callable[[bytes, random.Random, int], tuple[bytes, str]]
                ) -> Callable[[Input, random.Random], str]:
    """A byte-level mutator (data, rng, header offset) -> (data, note) applied to one file."""
    def apply(inp: Input, rng: random.Random) -> str:
        path = _pick_file(inp, rng)
        skip = 128 if inp.seed.kind == "dicom" else 0  # the DICOM preamble is not read
        before = path.read_bytes()
        data, note = function(before, rng, skip)
        path.write_bytes(data)
        if len(data) < len(before) and holds_voxels(inp, path):
            inp.must_fail = "the voxel data is truncated"
        return f"{path.relative_to(inp.folder)}: {note}"
    apply.__name__ = function.__name__
    return apply


def flip_bytes(data: bytes, rng: random.Random, skip: int = 0) -> tuple[bytes, str]:
    """XOR 1-32 bytes with random masks, half of them in the header region."""
    out = bytearray(data)
    offsets = sorted({_biased_offset(len(out), rng, skip=skip)
                      for _ in range(rng.choice([1, 2, 4, 8, 32]))})
    for offset in offsets:
        out[offset] ^= rng.randrange(1, 256)
    shown = ", ".join(map(str, offsets[:8])) + (" ..." if len(offsets) > 8 else "")
    return bytes(out), f"flipped {len(offsets)} bytes at {shown} of {len(data)}"


def truncate(data: bytes, rng: random.Random, skip: int = 0) -> tuple[bytes, str]:
    """Cut the file at a random offset (half the time in the header region), or to nothing."""
    offset = 0 if rng.random() < 0.05 else _biased_offset(len(data), rng, skip=skip)
    return data[:offset], f"truncated to {offset} of {len(data)} bytes"


def _dicom_targets(inp: Input, rng: random.Random) -> list[Path]:
    """All files of the series, or one of them."""
    files = inp.dicom_files()
    return files if rng.random() < 0.5 else [rng.choice(files)]


def _edit_dicom(inp: Input, rng: random.Random,
                edit: Callable[[DicomFile, random.Random], str]) -> str:
    """Apply edit to all files of the series or one (edit draws from a copy of rng per file,
    so all files get the same change)."""
    return _edit_dicom_files(inp, rng, edit)[0]


def _edit_dicom_files(inp: Input, rng: random.Random,
                      edit: Callable[[DicomFile, random.Random], str]) -> tuple[str, bool]:
    """_edit_dicom, and whether every file of the series was changed."""
    targets = _dicom_targets(inp, rng)
    state = rng.getstate()
    notes = set()
    for path in targets:
        rng.setstate(state)
        dicom = read_dicom(path)
        notes.add(edit(dicom, rng))
        write_dicom(dicom, path)
    everything = len(targets) == len(inp.dicom_files())
    where = "all files" if everything else targets[0].name
    return f"{'; '.join(sorted(notes))} ({where})", everything


HUGE_LONG = [0xFFFFFFFE, 0xFFFFFFF0, 0x7FFFFFFF, 0x80000000, 1 << 30]


def _huge_length(dicom: DicomFile, rng: random.Random) -> str:
    elements = dicom.elements
    pixel = [e for e in elements if e.tag == PIXEL_DATA]
    element = pixel[0] if pixel and rng.random() < 0.4 else rng.choice(elements)
    long_length = not dicom.explicit or element.vr in LONG_VRS or element.items is not None
    if long_length:
        element.length = rng.choice(HUGE_LONG + [len(element.value) + 2, UNDEFINED])
    else:
        element.length = rng.choice([0xFFFF, 0xFFFE, len(element.value) + 2])
    return f"length of ({element.tag >> 16:04X},{element.tag & 0xFFFF:04X}) set to " \
           f"{element.length:#x}"


def dicom_huge_length(inp: Input, rng: random.Random) -> str:
    """An element's length field (often PixelData's) set to a huge or wrong value."""
    return _edit_dicom(inp, rng, _huge_length)


#: (keyword, VR, value, no image can be decoded with it: "all" files, "multiframe" only).
HUGE_DIMS = [("Rows", "US", 65535, "all"), ("Columns", "US", 65535, "all"),
             ("Rows", "US", 0, "all"), ("Columns", "US", 1, ""),
             ("BitsAllocated", "US", 64, "all"), ("BitsAllocated", "US", 0, "all"),
             ("BitsStored", "US", 65535, ""), ("SamplesPerPixel", "US", 65535, "all"),
             ("NumberOfFrames", "IS", "2147483647", "multiframe"),
             ("NumberOfFrames", "IS", "999999999999", "multiframe"),
             ("NumberOfFrames", "IS", "0", ""), ("NumberOfFrames", "IS", "-1", "")]


def dicom_huge_dims(inp: Input, rng: random.Random) -> str:
    """Rows, Columns, NumberOfFrames, BitsAllocated ... huge, zero or negative."""
    changes = rng.sample(HUGE_DIMS, rng.choice([1, 1, 2]))

    def edit(dicom: DicomFile, _: random.Random) -> str:
        for keyword, vr, value, _ in changes:
            raw = dicom.number("H", value) if vr == "US" else text(str(value))
            set_element(dicom.elements, keyword, vr, raw)
        return ", ".join(f"{keyword}={value}" for keyword, _, value, _ in changes)
    note, everything = _edit_dicom_files(inp, rng, edit)
    fatal = {"all", "multiframe"} if "enhanced" in inp.seed.tags else {"all"}
    if everything and any(change[3] in fatal for change in changes):
        inp.must_fail = "no file's pixel data fits its Rows/Columns/Bits/Frames"
    return note


NONFINITE = ["NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e308"]
NONFINITE_IS = ["NaN", "inf", "1e400", "99999999999999999999", "-2147483649", "1.5"]
GEOMETRY_DS = ["ImagePositionPatient", "ImagePositionPatient", "PixelSpacing",
               "ImageOrientationPatient", "RescaleIntercept", "RescaleSlope", "SliceThickness",
               "SliceLocation"]
COUNTS_IS = ["InstanceNumber", "SeriesNumber", "NumberOfFrames"]


def _nonfinite(dicom: DicomFile, rng: random.Random) -> str:
    integer = rng.random() < 0.25
    keyword = rng.choice(COUNTS_IS if integer else GEOMETRY_DS)
    value = rng.choice(NONFINITE_IS if integer else NONFINITE)
    found = dicom.find(keyword)
    if not found:
        found = [set_element(dicom.elements, keyword, "IS" if integer else "DS", b"")]
    for element in found:
        values = element.value.decode("latin-1").strip(" \0").split("\\") or [""]
        index = rng.randrange(len(values))
        values = [value] * len(values) if rng.random() < 0.3 else \
            values[:index] + [value] + values[index + 1:]
        element.value = text("\\".join(values))
    return f"{keyword} -> {value}"


def dicom_nonfinite(inp: Input, rng: random.Random) -> str:
    """NaN/inf/1e400 in geometry and scaling (DS), and in IS values (counts, numbers)."""
    return _edit_dicom(inp, rng, _nonfinite)


DEGENERATE_IOP = ["0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "1\\0\\0\\-1\\0\\0", "0\\1\\0\\0\\1\\0",
                  "1e-30\\0\\0\\0\\1e-30\\0", "1\\0\\0\\0\\0\\0", "1\\0\\0\\0\\1",
                  "1\\0\\0\\0\\1\\0\\0", "0.7\\0.7\\0\\0.7\\0.7\\0"]


def _degenerate_orientation(dicom: DicomFile, rng: random.Random) -> str:
    value = rng.choice(DEGENERATE_IOP)
    for element in dicom.find("ImageOrientationPatient"):
        element.value = text(value)
    return f"ImageOrientationPatient -> {value}"


def dicom_degenerate_orientation(inp: Input, rng: random.Random) -> str:
    """Zero, parallel, tiny or wrong-length ImageOrientationPatient (all files or one)."""
    return _edit_dicom(inp, rng, _degenerate_orientation)


NEST_TAG = 0x0040A730  # ContentSequence


def nested_sequence(dicom: DicomFile, depth: int, undefined: bool) -> bytes:
    """ContentSequence nested depth deep, each level one item, encoded without recursion."""
    writer = _Writer(dicom.little, dicom.explicit)
    if undefined:
        opening = (writer.header(NEST_TAG, "SQ", UNDEFINED) + writer.tag(ITEM)
                   + writer.u32(UNDEFINED))
        closing = writer.tag(ITEM_END) + writer.u32(0) + writer.tag(SEQUENCE_END) + writer.u32(0)
        return opening * depth + closing * depth
    headers, inner = [], 0  # innermost first: an empty item in a sequence
    for _ in range(depth):
        item = writer.tag(ITEM) + writer.u32(inner)
        sequence = writer.header(NEST_TAG, "SQ", len(item) + inner)
        headers.append(sequence + item)
        inner += len(sequence) + len(item)
    return b"".join(reversed(headers))


NESTING = [(2000, True), (50000, True), (5000, False), (300, True), (50, False)]


def dicom_nested_sequences(inp: Input, rng: random.Random) -> str:
    """A sequence nested thousands of items deep (undefined or defined lengths)."""
    depth, undefined = inp.pick(rng, NESTING)

    def edit(dicom: DicomFile, _: random.Random) -> str:
        index = next((i for i, e in enumerate(dicom.elements) if e.tag > NEST_TAG),
                     len(dicom.elements))
        raw = nested_sequence(dicom, depth, undefined)
        dicom.elements.insert(index, Element(NEST_TAG, "SQ", raw=raw))
        return f"ContentSequence nested {depth} deep ({'un' if undefined else ''}defined lengths)"
    return _edit_dicom(inp, rng, edit)


def _descriptions(inp: Input) -> list[str]:
    return ["../../../fuzz-escape", str(inp.case / "fuzz-abs-escape"), "x" * 60000,
            "../../fuzz-escape/x", "..", ".", "a/../../b", "..\\..\\fuzz", "A" * 300,
            "\0../fuzz", "con", "name\nnewline", " ", "~/fuzz", "{SeriesNumber}/../.."]


def dicom_description(inp: Input, rng: random.Random) -> str:
    """A very long SeriesDescription, or one with ../, an absolute path, NUL, newline."""
    value = inp.pick(rng, _descriptions(inp))

    def edit(dicom: DicomFile, _: random.Random) -> str:
        set_element(dicom.elements, "SeriesDescription", "LO", text(value))
        return f"SeriesDescription -> {value[:40]!r}{' ...' if len(value) > 40 else ''}"
    return _edit_dicom(inp, rng, edit)


TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI"}


def _odd_length(dicom: DicomFile, rng: random.Random) -> str:
    texts = [e for e in dicom.elements if e.vr in TEXT_VRS and e.items is None and e.value]
    native = [e for e in dicom.elements if e.tag == PIXEL_DATA and not e.undefined]
    how = rng.choice(["unpadded", "length-1", "length+1"] + (["pixels-1", "pixels+1"]
                                                            if native else []))
    if how.startswith("pixels"):
        element = native[0]
        element.value = element.value[:-1] if how == "pixels-1" else element.value + b"\0"
        return f"PixelData {how} (odd length {len(element.value)})"
    element = rng.choice(texts)
    name = f"({element.tag >> 16:04X},{element.tag & 0xFFFF:04X})"
    if how == "unpadded":
        element.value = element.value.rstrip(b" \0") + b"X"
        if len(element.value) % 2 == 0:
            element.value += b"Y"
        return f"{name} value of odd length {len(element.value)}"
    element.length = len(element.value) + (-1 if how == "length-1" else 1)
    return f"{name} length field {element.length} for {len(element.value)} bytes"


def dicom_odd_length(inp: Input, rng: random.Random) -> str:
    """Odd-length values: unpadded text, length fields one off, odd pixel data."""
    return _edit_dicom(inp, rng, _odd_length)


# NIfTI-1 header fields (byte offsets, little endian as nibabel writes them here).
NIFTI_DIM, NIFTI_DATATYPE, NIFTI_BITPIX, NIFTI_PIXDIM = 40, 70, 72, 76
NIFTI_VOX_OFFSET, NIFTI_SCL_SLOPE, NIFTI_SCL_INTER, NIFTI_DESCRIP = 108, 112, 116, 148
NIFTI_QFORM_CODE, NIFTI_SFORM_CODE, NIFTI_QUATERN, NIFTI_QOFFSET = 252, 254, 256, 268
NIFTI_SROW, NIFTI_INTENT_NAME = 280, 328


def _edit_nifti(inp: Input, rng: random.Random,
                edit: Callable[[bytearray, random.Random], str]) -> str:
    path = inp.entry
    data = path.read_bytes()
    packed = path.name.endswith(".gz")
    header = bytearray(gzip.decompress(data) if packed else data)
    note = edit(header, rng)
    path.write_bytes(gzip.compress(bytes(header), mtime=0) if packed else bytes(header))
    return note


def _packer(fmt: str, offset: int, *values) -> Callable[[bytearray], None]:
    return lambda header: struct.pack_into(fmt, header, offset, *values)


SHORT = "the header claims more voxels than the file holds"
INVALID = "the header is invalid"
#: (what, change, why no voxels can be read or ""), the important ones first.
NIFTI_DIMS = [
    ("dim = 3 32767 32767 32767", _packer("<4h", NIFTI_DIM, 3, 32767, 32767, 32767), SHORT),
    ("datatype float64 for int16 data", _packer("<hh", NIFTI_DATATYPE, 64, 64), SHORT),
    ("dim = 7 16 16 4 32767 32767 32767 32767",
     _packer("<8h", NIFTI_DIM, 7, 16, 16, 4, 32767, 32767, 32767, 32767), SHORT),
    ("vox_offset = 1e12", _packer("<f", NIFTI_VOX_OFFSET, 1e12), SHORT),
    ("dim[1] = -1", _packer("<h", NIFTI_DIM + 2, -1), INVALID),
    ("dim[2] = 0", _packer("<h", NIFTI_DIM + 4, 0), INVALID),
    ("dim[3] = -32768", _packer("<h", NIFTI_DIM + 6, -32768), INVALID),
    ("dim[0] = 0", _packer("<h", NIFTI_DIM, 0), INVALID),
    ("dim[0] = 8", _packer("<h", NIFTI_DIM, 8), INVALID),
    ("vox_offset = 3.4e38", _packer("<f", NIFTI_VOX_OFFSET, 3.4e38), SHORT),
    ("vox_offset = -352", _packer("<f", NIFTI_VOX_OFFSET, -352.0), ""),
    ("vox_offset = nan", _packer("<f", NIFTI_VOX_OFFSET, float("nan")), ""),
    ("datatype 0, bitpix 0", _packer("<hh", NIFTI_DATATYPE, 0, 0), INVALID),
    ("datatype 2048 (complex256) for int16 data", _packer("<hh", NIFTI_DATATYPE, 2048, 256),
     SHORT),
    ("datatype 32767, bitpix 16", _packer("<hh", NIFTI_DATATYPE, 32767, 16), INVALID),
]


def nifti_huge_dims(inp: Input, rng: random.Random) -> str:
    """NIfTI dims 32767, 7 dimensions, negative or zero; vox_offset huge; datatype wrong."""
    what, change, fatal = inp.pick(rng, NIFTI_DIMS)
    inp.must_fail = fatal

    def edit(header: bytearray, _: random.Random) -> str:
        change(header)
        return what
    return _edit_nifti(inp, rng, edit)


NIFTI_FLOAT_FIELDS = {
    **{f"srow_{'xyz'[r]}[{c}]": NIFTI_SROW + 16 * r + 4 * c for r in range(3) for c in range(4)},
    **{f"pixdim[{i}]": NIFTI_PIXDIM + 4 * i for i in range(4)},
    **{f"quatern_{'bcd'[i]}": NIFTI_QUATERN + 4 * i for i in range(3)},
    **{f"qoffset_{'xyz'[i]}": NIFTI_QOFFSET + 4 * i for i in range(3)},
    "scl_slope": NIFTI_SCL_SLOPE, "scl_inter": NIFTI_SCL_INTER,
}
FLOAT32_NONFINITE = [float("nan"), float("inf"), float("-inf"), 3.4e38, -3.4e38]


def _nifti_nonfinite(header: bytearray, rng: random.Random) -> str:
    name = rng.choice(sorted(NIFTI_FLOAT_FIELDS))
    value = rng.choice(FLOAT32_NONFINITE)
    struct.pack_into("<f", header, NIFTI_FLOAT_FIELDS[name], value)
    note = f"{name} = {value}"
    if not name.startswith(("srow", "scl")) and rng.random() < 0.7:
        struct.pack_into("<h", header, NIFTI_SFORM_CODE, 0)  # the qform is what counts
        note += ", sform_code 0"
    return note


def nifti_nonfinite(inp: Input, rng: random.Random) -> str:
    """NaN/inf/huge in srow, pixdim, quaternion, qoffset, scl_slope/scl_inter."""
    return _edit_nifti(inp, rng, _nifti_nonfinite)


def _nifti_orientation(header: bytearray, rng: random.Random) -> str:
    choice = rng.randrange(5)
    if choice == 0:
        struct.pack_into("<12f", header, NIFTI_SROW, *([0.0] * 12))
        return "srow all zero (sform_code 1)"
    if choice == 1:
        struct.pack_into("<12f", header, NIFTI_SROW, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0)
        return "srow with parallel columns"
    struct.pack_into("<h", header, NIFTI_SFORM_CODE, 0)
    if choice == 2:
        struct.pack_into("<3f", header, NIFTI_QUATERN, 1.0, 1.0, 1.0)
        return "sform_code 0, quaternion (1, 1, 1): |q| > 1"
    if choice == 3:
        struct.pack_into("<3f", header, NIFTI_PIXDIM + 4, 0.0, 0.0, 0.0)
        return "sform_code 0, pixdim 0"
    struct.pack_into("<h", header, NIFTI_QFORM_CODE, 0)
    return "qform_code and sform_code 0"


def nifti_degenerate_orientation(inp: Input, rng: random.Random) -> str:
    """Zero or parallel srow columns, impossible quaternion, zero pixdim, no codes."""
    return _edit_nifti(inp, rng, _nifti_orientation)


def _split_nrrd(data: bytes) -> tuple[list[str], bytes]:
    head, _, body = data.partition(b"\n\n")
    return head.decode("latin-1").split("\n"), body


def _set_field(lines: list[str], key: str, value: str | None, separator: str = ": ") -> None:
    """Replace (or add, or with None remove) a 'key: value' or 'Key = Value' line."""
    index = next((i for i, line in enumerate(lines)
                  if line.split(separator.strip(), 1)[0].strip().lower() == key.lower()), None)
    if value is None:
        if index is not None:
            del lines[index]
        return
    line = f"{key}{separator}{value}"
    if index is None:
        lines.append(line)
    else:
        lines[index] = line


def _edit_nrrd_header(inp: Input, edit: Callable[[list[str]], str]) -> str:
    lines, body = _split_nrrd(inp.entry.read_bytes())
    note = edit(lines)
    inp.entry.write_bytes(("\n".join(lines) + "\n\n").encode("latin-1") + body)
    return note


def _field_mutator(options: list[tuple[str, str, str]], nrrd: bool
                   ) -> Callable[[Input, random.Random], str]:
    """A mutator that sets one header field: options are (key, value, why no voxels can be
    read with it or ""), taken in turn by inp.pick."""
    def apply(inp: Input, rng: random.Random) -> str:
        key, value, fatal = inp.pick(rng, options)
        if fatal and not (key == "CompressedDataSize" and "compressed" not in inp.seed.tags):
            inp.must_fail = fatal

        def edit(lines: list[str]) -> str:
            _set_field(lines, key, value, ": " if nrrd else " = ")
            return f"{key}{': ' if nrrd else ' = '}{value}"
        return _edit_nrrd_header(inp, edit) if nrrd else _edit_mha_header(inp, edit)
    return apply


def field_mutator(name: str, doc: str, options: list[tuple[str, str, str]], nrrd: bool
                  ) -> Callable[[Input, random.Random], str]:
    apply = _field_mutator(options, nrrd)
    apply.__name__, apply.__doc__ = name, doc
    return apply


nrrd_huge_sizes = field_mutator(
    "nrrd_huge_sizes", "NRRD sizes huge, zero, negative, too few or too many; dimension huge.",
    [("sizes", "100000 100000 100000", SHORT), ("sizes", "9223372036854775807 16 4", SHORT),
     ("sizes", "18446744073709551615 16 4", INVALID), ("sizes", "0 16 4", INVALID),
     ("sizes", "-1 16 4", INVALID), ("sizes", "16 16", INVALID),
     ("sizes", "16 16 4 3", INVALID), ("sizes", "1e400 16 4", INVALID),
     ("dimension", "1000000", INVALID), ("dimension", "0", INVALID)], nrrd=True)


def _nonfinite_vector(values: list[str], rng: random.Random) -> list[str]:
    index = rng.randrange(len(values))
    return values[:index] + [rng.choice(NONFINITE)] + values[index + 1:]


def nrrd_nonfinite(inp: Input, rng: random.Random) -> str:
    """NaN/inf/1e400 in the space origin or a space direction."""
    def edit(lines: list[str]) -> str:
        if rng.random() < 0.5:
            origin = _nonfinite_vector([str(v) for v in ORIGIN_LPS], rng)
            value = f"({','.join(origin)})"
            _set_field(lines, "space origin", value)
            return f"space origin: {value}"
        spacing = [PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_SPACING]
        rows = [[str(spacing[r] if r == c else 0) for c in range(3)] for r in range(3)]
        row = rng.randrange(3)
        rows[row] = _nonfinite_vector(rows[row], rng)
        value = " ".join(f"({','.join(r)})" for r in rows)
        _set_field(lines, "space directions", value)
        return f"space directions: {value}"
    return _edit_nrrd_header(inp, edit)


nrrd_degenerate_orientation = field_mutator(
    "nrrd_degenerate_orientation", "Zero, parallel, 'none' or wrong-length space directions.",
    [("space directions", "(0,0,0) (0,0.9,0) (0,0,2)", ""),
     ("space directions", "(0.8,0,0) (0.8,0,0) (0,0,2)", ""),
     ("space directions", "none (0,0.9,0) (0,0,2)", ""),
     ("space directions", "(1,0) (0,1) (0,0)", ""),
     ("space directions", "(0,0,0) (0,0,0) (0,0,0)", "")], nrrd=True)


def _split_mha(data: bytes) -> tuple[list[str], bytes]:
    """Header lines up to and including ElementDataFile, and what follows (LOCAL data)."""
    marker = data.find(b"ElementDataFile")
    end = data.index(b"\n", marker) + 1
    return data[:end].decode("latin-1").rstrip("\n").split("\n"), data[end:]


def _edit_mha_header(inp: Input, edit: Callable[[list[str]], str]) -> str:
    lines, body = _split_mha(inp.entry.read_bytes())
    data_line = lines.pop()  # ElementDataFile stays the last key
    note = edit(lines)
    lines.append(data_line)
    inp.entry.write_bytes(("\n".join(lines) + "\n").encode("latin-1") + body)
    return note


mha_huge_dims = field_mutator(
    "mha_huge_dims", "MetaImage DimSize/NDims/channels huge, zero, negative; type wrong.",
    [("DimSize", "100000 100000 100000", SHORT), ("ElementType", "MET_DOUBLE", SHORT),
     ("DimSize", "9223372036854775807 16 4", SHORT), ("DimSize", "0 16 4", INVALID),
     ("DimSize", "-1 16 4", INVALID), ("DimSize", "16 16", INVALID),
     ("DimSize", "1e400 16 4", INVALID), ("NDims", "1000", INVALID), ("NDims", "0", INVALID),
     ("ElementNumberOfChannels", "100000", SHORT),
     ("CompressedDataSize", "100000000000", SHORT)], nrrd=False)


def mha_nonfinite(inp: Input, rng: random.Random) -> str:
    """NaN/inf/1e400 in Offset, ElementSpacing or TransformMatrix."""
    key, values = rng.choice([("Offset", [str(v) for v in ORIGIN_LPS]),
                              ("ElementSpacing", ["0.9", "0.8", "2"]),
                              ("TransformMatrix", "1 0 0 0 1 0 0 0 1".split())])
    value = " ".join(_nonfinite_vector(values, rng))
    return _field_mutator([(key, value, "")], nrrd=False)(inp, rng)


mha_degenerate_orientation = field_mutator(
    "mha_degenerate_orientation", "MetaImage TransformMatrix zero/parallel/short, spacing 0.",
    [("TransformMatrix", "0 0 0 0 0 0 0 0 0", ""), ("TransformMatrix", "1 0 0 1 0 0 0 0 1", ""),
     ("TransformMatrix", "0 0 0 0 1 0 0 0 1", ""), ("TransformMatrix", "1 0 0 0 1 0", ""),
     ("ElementSpacing", "0 0 0", ""), ("ElementSpacing", "-1 1 1", "")], nrrd=False)


def _gzip_body(data: bytes) -> tuple[int, int]:
    """[start, end) of the deflate stream of a one-member gzip file."""
    flags, pos = data[3], 10
    if flags & 4:  # FEXTRA
        pos += 2 + struct.unpack_from("<H", data, pos)[0]
    for bit in (8, 16):  # FNAME, FCOMMENT
        if flags & bit:
            pos = data.index(b"\0", pos) + 1
    return pos + (2 if flags & 2 else 0), len(data) - 8


def _detectable(data: bytes, zlib_stream: bool) -> bool:
    """A reader that checks the CRC (gzip) or Adler-32 (zlib) must fail on data."""
    try:
        zlib.decompress(data) if zlib_stream else gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return True
    return False


def corrupt_stream(data: bytes, start: int, end: int, rng: random.Random,
                   zlib_stream: bool = False) -> tuple[bytes, str]:
    """Flip bytes of a deflate stream in place (same length) until the checksum must catch it."""
    for _ in range(200):
        out = bytearray(data)
        offsets = sorted({rng.randrange(start, end) for _ in range(rng.choice([1, 2, 4]))})
        for offset in offsets:
            out[offset] ^= rng.randrange(1, 256)
        if _detectable(bytes(out), zlib_stream):
            return bytes(out), f"deflate bytes flipped at {offsets} (same length)"
    raise RuntimeError("no detectable corruption found")


def corrupt_gzip(inp: Input, rng: random.Random) -> str:
    """Deflate bytes flipped, length kept: .nii.gz, gzip NRRD, .raw.gz, zlib MetaImage."""
    tags = inp.seed.tags
    if "nifti" in tags:
        path, prefix = inp.entry, 0
    elif "nrrd" in tags and "detached" in tags:
        path, prefix = inp.folder / "image.raw.gz", 0
    elif "nrrd" in tags:
        path = inp.entry
        prefix = path.read_bytes().index(b"\n\n") + 2
    else:  # MetaImage, zlib stream after the header
        path = inp.entry
        prefix = len(path.read_bytes()) - len(_split_mha(path.read_bytes())[1])
    data = path.read_bytes()
    head, stream = data[:prefix], data[prefix:]
    zlib_stream = inp.seed.kind == "mha"
    start, end = (2, len(stream) - 4) if zlib_stream else _gzip_body(stream)
    stream, note = corrupt_stream(stream, start, end, rng, zlib_stream)
    path.write_bytes(head + stream)
    inp.must_fail = "the gzip CRC / zlib Adler-32 does not match"
    return f"{path.name}: {note}"


def volume_description(inp: Input, rng: random.Random) -> str:
    """../, absolute paths and very long text in the volume's description fields."""
    value = inp.pick(rng, _descriptions(inp))
    if inp.seed.kind == "nifti":
        def edit_nifti(header: bytearray, _: random.Random) -> str:
            raw = value.encode("latin-1", "replace")
            header[NIFTI_DESCRIP:NIFTI_DESCRIP + 80] = raw[:80].ljust(80, b"\0")
            header[NIFTI_INTENT_NAME:NIFTI_INTENT_NAME + 16] = raw[:16].ljust(16, b"\0")
            return f"descrip, intent_name -> {value[:40]!r}"
        return _edit_nifti(inp, rng, edit_nifti)
    one_line = value.replace("\n", " ")
    if inp.seed.kind == "nrrd":
        def edit_nrrd(lines: list[str]) -> str:
            _set_field(lines, "content", one_line)
            return f"content: {one_line[:40]!r}"
        return _edit_nrrd_header(inp, edit_nrrd)
    return _field_mutator([("Comment", one_line, ""), ("Name", one_line, "")], False)(inp, rng)


# Detached data tricks: NRRD "data file:" and MetaImage "ElementDataFile =".


def _detach(inp: Input) -> tuple[list[str], bytes, str]:
    """Make the header name its data file: (header lines without the data-file line, the
    data bytes as the data file would hold them, the data file's suffix)."""
    data = inp.entry.read_bytes()
    if inp.seed.kind == "nrrd":
        lines, body = _split_nrrd(data)
        gz = any(line.strip() == "encoding: gzip" for line in lines)
        name = next((line.split(":", 1)[1].strip() for line in lines
                     if line.startswith("data file:")), None)
        if name:
            body = (inp.folder / name).read_bytes()
        _set_field(lines, "data file", None)
        return lines, body, ".raw.gz" if gz else ".raw"
    lines, body = _split_mha(data)
    name = lines.pop().split("=", 1)[1].strip()
    if name != "LOCAL":
        body = (inp.folder / name).read_bytes()
    return lines, body, ".raw"


def _write_detached(inp: Input, lines: list[str], data_file: str, extra: list[str] = ()) -> None:
    """Write the header (no attached data) naming data_file; extra lines follow it."""
    for path in inp.folder.glob("image.raw*"):
        path.unlink()
    if inp.seed.kind == "nrrd":
        text_ = "\n".join([*lines, f"data file: {data_file}", *extra]) + "\n\n"
    else:
        text_ = "\n".join([*lines, f"ElementDataFile = {data_file}", *extra]) + "\n"
    inp.entry.write_bytes(text_.encode("latin-1"))


MISSING = "the data file does not exist"


def data_file_outside(inp: Input, rng: random.Random) -> str:
    """The data file is ../outside (present or not), or deep ../ to /etc/passwd."""
    lines, body, suffix = _detach(inp)
    outside = inp.case / f"outside{suffix}"
    outside.write_bytes(body)
    name, inp.must_fail = inp.pick(rng, [(f"../outside{suffix}", ""), ("../missing.raw", MISSING),
                                          ("../" * 12 + "etc/passwd", "")])
    _write_detached(inp, lines, name)
    return f"data file {name!r}"


def data_file_absolute(inp: Input, rng: random.Random) -> str:
    """The data file is an absolute path: a real file, /dev/null, /dev/zero, a missing one."""
    lines, body, suffix = _detach(inp)
    real = inp.case / f"absolute{suffix}"
    real.write_bytes(body)
    name, inp.must_fail = inp.pick(rng, [(str(real), ""), ("/dev/null", "/dev/null is empty"),
                                          ("/dev/zero", ""), ("/nonexistent/x.raw", MISSING)])
    _write_detached(inp, lines, name)
    return f"data file {name!r}"


def data_file_fifo(inp: Input, rng: random.Random) -> str:
    """The data file is a named pipe that nobody writes to."""
    lines, _, suffix = _detach(inp)
    name = f"pipe{suffix}"
    os.mkfifo(inp.folder / name)
    _write_detached(inp, lines, name)
    inp.must_fail = "the data file is a FIFO nobody writes to"
    return f"data file {name!r} is a FIFO"


def data_file_directory(inp: Input, rng: random.Random) -> str:
    """The data file is a directory (a folder beside the header, ., ..)."""
    lines, _, _ = _detach(inp)
    (inp.folder / "folder.raw").mkdir()
    name = inp.pick(rng, ["folder.raw", "..", "."])
    _write_detached(inp, lines, name)
    inp.must_fail = "the data file is a directory"
    return f"data file {name!r} is a directory"


def data_file_list(inp: Input, rng: random.Random) -> str:
    """Several data files: LIST with names, or a printf pattern with a range."""
    lines, body, suffix = _detach(inp)
    slices = len(body) // 4 if suffix == ".raw" else len(body)
    names = []
    for index in range(4):
        names.append(f"slice{index:03d}{suffix}")
        (inp.folder / names[-1]).write_bytes(body[index * slices:(index + 1) * slices])
    nrrd = inp.seed.kind == "nrrd"
    choice = inp.pick(rng, ["list", "pattern", "subdimension"])
    if choice == "list":
        _write_detached(inp, lines, "LIST", names)
        return "data file LIST + 4 names"
    if choice == "subdimension":
        _write_detached(inp, lines, "LIST 2" if nrrd else "LIST 2D", names)
        return "data file LIST with a sub-dimension + 4 names"
    pattern = f"slice%03d{suffix} 0 3 1" + (" 2" if nrrd else "")
    _write_detached(inp, lines, pattern)
    return f"data file {pattern!r}"


BEYOND = "the data would start beyond the end of the file"
nrrd_line_skip = field_mutator(
    "nrrd_line_skip", "line skip 10^12, negative or not a number.",
    [("line skip", "1000000000000", BEYOND), ("line skip", "-5", INVALID),
     ("line skip", "1e400", INVALID), ("line skip", "nan", INVALID)], nrrd=True)
nrrd_byte_skip = field_mutator(
    "nrrd_byte_skip", "byte skip 10^12, beyond the file, -2, or -1 (data at the end).",
    [("byte skip", "1000000000000", BEYOND), ("byte skip", "-2", INVALID),
     ("byte skip", "100000", BEYOND), ("byte skip", "-1", ""),
     ("byte skip", "9223372036854775807", BEYOND)], nrrd=True)
mha_header_size = field_mutator(
    "mha_header_size", "HeaderSize (bytes skipped in the data file) 10^12, beyond the file, -1.",
    [("HeaderSize", "1000000000000", BEYOND), ("HeaderSize", "100000", BEYOND),
     ("HeaderSize", "-1", ""), ("HeaderSize", "-2", ""),
     ("HeaderSize", "9223372036854775807", BEYOND)], nrrd=False)


def none(inp: Input, rng: random.Random) -> str:
    """The seed itself (the control: every command must pass the oracle on it)."""
    return "unchanged"


DICOM, NIFTI, NRRD, MHA = (frozenset({k}) for k in ("dicom", "nifti", "nrrd", "mha"))

MUTATORS = {m.name: m for m in [
    Mutator("none", "control", none, weight=2),
    Mutator("flip_bytes", "byte flips", on_one_file(flip_bytes), weight=6),
    Mutator("truncate", "truncation", on_one_file(truncate), weight=6),
    Mutator("dicom_huge_length", "huge lengths", dicom_huge_length, DICOM, 2),
    Mutator("dicom_huge_dims", "huge lengths", dicom_huge_dims, DICOM, 2),
    Mutator("nifti_huge_dims", "huge lengths", nifti_huge_dims, NIFTI, 2),
    Mutator("nrrd_huge_sizes", "huge lengths", nrrd_huge_sizes, NRRD, 2),
    Mutator("mha_huge_dims", "huge lengths", mha_huge_dims, MHA, 2),
    Mutator("dicom_nonfinite", "non-finite geometry", dicom_nonfinite, DICOM, 2),
    Mutator("nifti_nonfinite", "non-finite geometry", nifti_nonfinite, NIFTI, 2),
    Mutator("nrrd_nonfinite", "non-finite geometry", nrrd_nonfinite, NRRD, 2),
    Mutator("mha_nonfinite", "non-finite geometry", mha_nonfinite, MHA, 2),
    Mutator("corrupt_gzip", "corrupt gzip", corrupt_gzip, frozenset({"compressed"}), 4),
    Mutator("nrrd_data_file_outside", "NRRD header tricks", data_file_outside, NRRD),
    Mutator("nrrd_data_file_absolute", "NRRD header tricks", data_file_absolute, NRRD, 2),
    Mutator("nrrd_data_file_fifo", "NRRD header tricks", data_file_fifo, NRRD),
    Mutator("nrrd_data_file_directory", "NRRD header tricks", data_file_directory, NRRD),
    Mutator("nrrd_data_file_list", "NRRD header tricks", data_file_list, NRRD),
    Mutator("nrrd_line_skip", "NRRD header tricks", nrrd_line_skip, NRRD),
    Mutator("nrrd_byte_skip", "NRRD header tricks", nrrd_byte_skip, NRRD, 2),
    Mutator("mha_data_file_outside", "MetaImage data file tricks", data_file_outside, MHA),
    Mutator("mha_data_file_absolute", "MetaImage data file tricks", data_file_absolute, MHA, 2),
    Mutator("mha_data_file_fifo", "MetaImage data file tricks", data_file_fifo, MHA),
    Mutator("mha_data_file_directory", "MetaImage data file tricks", data_file_directory, MHA),
    Mutator("mha_data_file_list", "MetaImage data file tricks", data_file_list, MHA),
    Mutator("mha_header_size", "MetaImage data file tricks", mha_header_size, MHA, 2),
    Mutator("dicom_degenerate_orientation", "degenerate orientation",
            dicom_degenerate_orientation, DICOM, 2),
    Mutator("nifti_degenerate_orientation", "degenerate orientation",
            nifti_degenerate_orientation, NIFTI),
    Mutator("nrrd_degenerate_orientation", "degenerate orientation",
            nrrd_degenerate_orientation, NRRD),
    Mutator("mha_degenerate_orientation", "degenerate orientation",
            mha_degenerate_orientation, MHA),
    Mutator("dicom_nested_sequences", "deeply nested sequences", dicom_nested_sequences,
            DICOM, 2),
    Mutator("dicom_description", "long / ../ descriptions", dicom_description, DICOM, 2),
    Mutator("volume_description", "long / ../ descriptions", volume_description,
            frozenset({"volume"}), 2),
    Mutator("dicom_odd_length", "odd lengths", dicom_odd_length, DICOM, 2),
]}


# ------------------------------------------------------------------------------------------
# Commands: how each one is pointed at a case, and what its exit codes mean.


@dataclass
class CasePaths:
    """A case's folders: ROOT/a/b is the case; in/ the (mutated) input, reference/ the seed,
    out/ the only place the command may write. ROOT is what the snapshot covers, so a
    ../../.. escape from out/ still lands inside it."""

    root: Path

    @property
    def case(self) -> Path:
        return self.root / "a" / "b"

    @property
    def input(self) -> Path:
        return self.case / "in"

    @property
    def reference(self) -> Path:
        return self.case / "reference"

    @property
    def out(self) -> Path:
        return self.case / "out"

    @property
    def saved(self) -> Path:
        """A copy of the mutated input, made before the command ran."""
        return self.root / "saved-input"


CONVERT_TARGETS = [".nii.gz", ".nrrd", ".mha", ".nii", ".nhdr", ".mhd"]


@dataclass(frozen=True)
class Command:
    """kinds: the seed kinds it applies to; argv(input, seed copy, out, n): its arguments
    (n varies the convert target); found: exit 1 means 'found what was asked';
    reads_voxels: it must fail when Input.must_fail says so; json: stdout is JSON."""

    name: str
    kinds: frozenset[str]
    argv: Callable[[Path, Path, Path, int], list[str]] = field(repr=False)
    reads_voxels: bool = True
    found: bool = False
    json: bool = False
    writes: bool = True  # exit 0 means at least one output file

    def allowed(self) -> set[int]:
        return {0, 2, 3, 4, 5, 6} | ({1} if self.found else set())


ALL = frozenset({"dicom", "nifti", "nrrd", "mha"})
COMMANDS = {c.name: c for c in [
    Command("dicom2nii", frozenset({"dicom"}),
            lambda src, ref, out, v: ["dicom2nii", src, out / "dicom2nii"]),
    Command("audit", ALL, lambda src, ref, out, v: ["audit", src], reads_voxels=False,
            writes=False),
    Command("audit_fail_on", ALL,
            lambda src, ref, out, v: ["audit", "--json", "--fail-on", "error", src],
            reads_voxels=False, found=True, json=True, writes=False),
    Command("convert", ALL, lambda src, ref, out, v: [
        "convert", src, out / f"result{CONVERT_TARGETS[v % len(CONVERT_TARGETS)]}"]),
    Command("compare", ALL, lambda src, ref, out, v: ["compare", src, ref], found=True,
            writes=False),
    Command("preview", ALL, lambda src, ref, out, v: ["preview", src, "-o",
                                                      out / "preview.png"]),
    Command("nii2dicom", ALL, lambda src, ref, out, v: ["nii2dicom", src, out / "dicom"]),
]}


# ------------------------------------------------------------------------------------------
# Output checks (in the child, under its limits): what exit 0 promises.

Problem = tuple[str, str]  # (kind, for grouping; detail)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def strict_json(text_: str) -> object:
    """json.loads without NaN/Infinity (which Python writes and other readers refuse)."""
    return json.loads(text_, parse_constant=_reject_constant)


def _finite(values, what: str) -> list[Problem]:
    array = np.asarray(values, dtype=float)
    if np.all(np.isfinite(array)):
        return []
    return [("non-finite " + what, f"{what}: {np.round(array, 3).ravel().tolist()}")]


def check_nifti(path: Path) -> list[Problem]:
    import nibabel as nib

    image = nib.load(str(path))
    problems = _finite(image.affine, "affine")
    header = image.header
    for code, form in (("qform_code", header.get_qform), ("sform_code", header.get_sform)):
        if header[code] > 0:
            problems += _finite(form(), code.split("_")[0])
    if min(image.shape) < 1:
        problems.append(("empty output", f"shape {image.shape}"))
    data = np.asarray(image.dataobj)
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        problems.append(("non-finite values", f"{np.count_nonzero(~np.isfinite(data))} voxels"))
    return problems


def check_nrrd(path: Path) -> list[Problem]:
    import nrrd

    data, header = nrrd.read(str(path))
    problems = _finite(header.get("space origin", [0.0]), "space origin")
    directions = np.asarray(header.get("space directions", np.eye(3)), dtype=float)
    rows = [row for row in directions if not np.all(np.isnan(row))]  # 'none': a NaN row
    problems += _finite(rows, "space directions")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        problems.append(("non-finite values", f"{np.count_nonzero(~np.isfinite(data))} voxels"))
    return problems


def check_mha(path: Path) -> list[Problem]:
    lines, body = _split_mha(path.read_bytes())
    fields = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in lines)}
    problems = []
    for key in ("Offset", "ElementSpacing", "TransformMatrix"):
        values = [float(v) for v in fields.get(key, "0").split()]
        problems += _finite(values, key)
    sizes = [int(v) for v in fields["DimSize"].split()]
    if min(sizes) < 1:
        problems.append(("empty output", f"DimSize {sizes}"))
    data_file = fields.get("ElementDataFile", "")
    data = body if data_file == "LOCAL" else (path.parent / data_file).read_bytes()
    expected = int(np.prod(sizes)) * int(fields.get("ElementNumberOfChannels", "1")) \
        * MET_SIZES.get(fields.get("ElementType", ""), 0)
    if fields.get("CompressedData", "False") != "True" and expected and len(data) != expected:
        problems.append(("truncated output", f"{len(data)} data bytes for {expected}"))
    return problems


MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
             "MET_UINT": 4, "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8,
             "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def check_png(path: Path) -> list[Problem]:
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or b"IEND" not in data[-16:]:
        return [("unreadable output", f"{path.name} is not a complete PNG")]
    return []


def check_dicom(path: Path) -> list[Problem]:
    import pydicom

    ds = pydicom.dcmread(path)
    problems = []
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            problems += _finite([float(v) for v in np.atleast_1d(ds[keyword].value)], keyword)
    pixels = ds.pixel_array
    if pixels.shape[-2:] != (ds.Rows, ds.Columns):
        problems.append(("unreadable output", f"{path.name}: pixels {pixels.shape}"))
    return problems


def check_json(path: Path) -> list[Problem]:
    try:
        strict_json(path.read_text())
    except ValueError as error:
        return [("invalid JSON (NaN/Infinity)", str(error)[:200])]
    return []


CHECKS = {".nii": check_nifti, ".nii.gz": check_nifti, ".nrrd": check_nrrd, ".nhdr": check_nrrd,
          ".mha": check_mha, ".mhd": check_mha, ".png": check_png, ".dcm": check_dicom,
          ".json": check_json}


def outputs(out: Path) -> list[Path]:
    """Files under out/ by their final names (staging folders left out)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.rglob("*")
                  if p.is_file() and ".convkit-" not in str(p.relative_to(out)))


def output_problems(command: Command, out: Path, done) -> list[Problem]:
    """What exit 0 (or 6, or 1 with --json) promises about the outputs and stdout."""
    problems: list[Problem] = []
    if command.json:
        try:
            strict_json(done.stdout)
        except ValueError as error:
            problems.append(("invalid JSON on stdout", str(error)[:200]))
    files = outputs(out)
    if command.writes and done.returncode == 0 and not files:
        problems.append(("exit 0 without output", f"nothing under {out}"))
    for path in files:
        name = path.name.lower()
        check = next((CHECKS[s] for s in CHECKS if name.endswith(s)), None)
        if check is None:  # data files of .nhdr/.mhd are checked through their header
            continue
        try:
            problems += [(f"exit {done.returncode} with {kind}", f"{path.name}: {detail}")
                         for kind, detail in check(path)]
        except Exception as error:  # the output does not even load
            problems.append((f"exit {done.returncode} with unreadable output",
                             f"{path.name}: {type(error).__name__}: {error}"[:300]))
    return problems


# ------------------------------------------------------------------------------------------
# Running one command in a forked child: time limit, memory limit, stray output captured.


@dataclass
class ChildResult:
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    stray: str = ""  # written to file descriptors 1/2 directly (C libraries), not via the CLI
    problems: list[Problem] = field(default_factory=list)  # from the output checks
    hang: bool = False
    signal: int | None = None
    harness_error: str = ""
    seconds: float = 0.0


def _vm_size_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(function: Callable[[], dict], write_end: int, stray_fd: int) -> None:
    """In the forked child: own process group, stdin from /dev/null, fds 1/2 to the stray
    file, address space limited; run function and send its result. Never returns."""
    status = 0
    try:
        os.setpgid(0, 0)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(stray_fd, 1)
        os.dup2(stray_fd, 2)
        faulthandler.enable(file=2)  # a crash's traceback goes to the stray file, not the tty
        limit = _vm_size_bytes() + MEMORY_MB * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            payload = ("ok", function())
        except BaseException:  # noqa: B036 - anything at all goes back to the parent
            payload = ("error", traceback.format_exc())
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(pickle.dumps(payload))
    except BaseException:  # noqa: B036
        status = 1
    finally:
        os._exit(status)


def run_forked(function: Callable[[], dict], timeout: float = TIMEOUT_S) -> ChildResult:
    """function() in a forked child; a child still running after timeout is killed (with
    every process it started) and reported as a hang."""
    result = ChildResult()
    started = time.monotonic()
    with tempfile.TemporaryFile() as stray:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _child(function, write_end, stray.fileno())
        os.close(write_end)
        data = _read_until(read_end, started + timeout, result)
        if not result.hang:
            _wait_exited(pid, started + timeout + 5)
        _kill_group(pid)  # the child is a zombie at most: its group id is still its own
        _, status = os.waitpid(pid, 0)
        result.seconds = time.monotonic() - started
        if os.WIFSIGNALED(status) and not result.hang:
            result.signal = os.WTERMSIG(status)
        stray.seek(0)
        result.stray = stray.read(20000).decode("utf-8", "replace")
    if data:
        _unpack(data, result)
    elif not result.hang and result.signal is None:
        result.harness_error = "the child sent nothing back"
    return result


def _read_until(fd: int, deadline: float, result: ChildResult) -> bytes:
    chunks = []
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                result.hang = True
                return b""
            ready, _, _ = select.select([pipe], [], [], left)
            if ready:
                chunk = pipe.read(1 << 16)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)


def _wait_exited(pid: int, deadline: float) -> None:
    """Until the child has exited, without reaping it (WNOWAIT)."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    while os.waitid(os.P_PID, pid, flags) is None and time.monotonic() < deadline:
        time.sleep(0.002)


def _kill_group(pid: int) -> None:
    """The child (ours, by id) and whatever it started, in its own process group."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _unpack(data: bytes, result: ChildResult) -> None:
    try:
        kind, value = pickle.loads(data)
    except Exception as error:
        result.harness_error = f"unreadable result from the child: {error}"
        return
    if kind == "error":
        result.harness_error = value
        return
    result.returncode = value["returncode"]
    result.stdout, result.stderr = value["stdout"], value["stderr"]
    result.problems = value["problems"]


def _execute(cli: Callable, argv: list[str], command: Command, out: Path) -> dict:
    """In the child: the command, then (with fds 1/2 closed to the stray file) its outputs."""
    done = cli(*argv)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    check = (done.returncode in (0, 6) or (command.json and done.returncode == 1)) \
        and "Traceback (most recent call last)" not in done.stderr  # reported as such
    problems = output_problems(command, out, done) if check else []
    return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr,
            "problems": problems}


# ------------------------------------------------------------------------------------------
# The oracle.

WARNING_LINE = re.compile(r"^(?:.*?:\d+: )?(\w*Warning): ", re.MULTILINE)
INTERNAL = re.compile(r"internal error: ([\w.]+)(?:: (\S+ \S+ \S+))?")
TRACEBACK_LAST = re.compile(r"^(\w+(?:\.\w+)*(?:Error|Exception|Exit|Interrupt)\b)",
                            re.MULTILINE)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with what changes when it is written (never opened: FIFOs)."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            key = os.path.relpath(path, root)
            entries[key] = ((stat.S_IFMT(info.st_mode),) if stat.S_ISDIR(info.st_mode)
                            else (info.st_mode, info.st_size, info.st_mtime_ns))
    return entries


def changed_outside(before: dict, after: dict, allowed: str) -> list[str]:
    """Paths added, removed or changed that are not under the allowed folder (relative)."""
    keys = set(before) | set(after)
    return sorted(k for k in keys if before.get(k) != after.get(k)
                  and not (k == allowed or k.startswith(allowed + os.sep)))


def _exit_problems(result: ChildResult, command: Command) -> list[Problem]:
    code, problems = result.returncode, []
    if code == 70:
        problems.append((_internal_kind(result.stderr), _last_lines(result.stderr)))
    elif code not in command.allowed():
        problems.append((f"exit {code}", _last_lines(result.stderr)))
    if "Traceback (most recent call last)" in result.stderr:
        names = TRACEBACK_LAST.findall(result.stderr)
        problems.append((f"traceback {names[-1] if names else ''}".strip(),
                         _last_lines(result.stderr)))
    for category in sorted(set(WARNING_LINE.findall(result.stderr))):
        problems.append((f"warning leaked: {category}", _matching_line(result.stderr, category)))
    if result.stray.strip():
        problems.append(("output past the CLI's streams (C library)",
                         result.stray.strip().splitlines()[0][:200]))
    return problems


def _internal_kind(stderr: str) -> str:
    """'exit 70 OverflowError'; a bare 'error' (zlib.error, struct.error) with its first words."""
    match = INTERNAL.search(stderr)
    if not match:
        return "exit 70"
    name, words = match.groups()
    return f"exit 70 {name}" + (f" ({words})" if name.islower() and words else "")


def _last_lines(text_: str, count: int = 3) -> str:
    return " | ".join(text_.strip().splitlines()[-count:])[:400]


def _matching_line(text_: str, word: str) -> str:
    return next((line for line in text_.splitlines() if word in line), "")[:300]


def check(result: ChildResult, command: Command, must_fail: str, paths: CasePaths,
          before: dict, after: dict) -> list[Problem]:
    """Everything the oracle demands of one command run on one input."""
    if result.harness_error:
        return [("harness error", result.harness_error[-1500:])]
    problems: list[Problem] = []
    if result.hang:
        problems.append(("hang", f"still running after {TIMEOUT_S:g} s (killed)"))
    elif result.signal is not None:
        name = signal.Signals(result.signal).name
        problems.append((f"killed by {name}", result.stray.strip()[-400:]))
    else:
        problems += _exit_problems(result, command)
        problems += result.problems
    out_rel = os.path.relpath(paths.out, paths.root)
    outside = changed_outside(before, after, out_rel)
    if outside:
        problems.append(("wrote outside the output folder", ", ".join(outside[:5])))
    if result.hang or result.signal is not None:
        return problems  # killed: staging cannot have been cleaned up
    leftovers = [k for k in after if ".convkit-" in k]
    if leftovers:
        problems.append(("staging left behind", ", ".join(sorted(leftovers)[:5])))
    code = result.returncode
    left = outputs(paths.out)
    if code in (2, 3, 4, 5) and left:
        problems.append((f"output left on exit {code}",
                         ", ".join(str(p.relative_to(paths.out)) for p in left[:5])))
    success = {0, 1} if command.found else {0}
    if must_fail and command.reads_voxels and code in success:
        problems.append((f"exit {code} on unreadable voxels", must_fail))
    return problems


# ------------------------------------------------------------------------------------------
# Cases.


@dataclass(frozen=True)
class Case:
    command: str
    mutator: str
    seed: str
    variant: int

    @property
    def id(self) -> str:
        return f"{self.command}-{self.mutator}-{self.seed}-{self.variant}"

    @classmethod
    def from_id(cls, text_: str) -> Case:
        command, mutator, seed, variant = text_.split("-")
        return cls(command, mutator, seed, int(variant))

    def rng(self, base: int = FUZZ_SEED) -> random.Random:
        """The mutation's randomness: the same for every command."""
        return random.Random(f"{base}/{self.mutator}/{self.seed}/{self.variant}")


def _variants(weight: int, scale: float) -> int:
    return max(1, round(weight * scale))


def cases(total: int | None = None) -> list[Case]:
    """The default run (total None: each mutator's weight in variants), or about total
    cases with every weight scaled. Variant v of a mutator takes the applicable seeds in
    turn (from a start that differs per mutator) and runs through every command."""
    scale = 1.0 if total is None else total / len(cases())
    found = []
    for mutator in MUTATORS.values():
        seeds = [seed for seed in SEEDS.values() if mutator.applies_to(seed)]
        start = zlib.crc32(mutator.name.encode()) % len(seeds)
        count = _variants(mutator.weight, scale)
        for variant in range(count):  # spread over the seeds when there are fewer variants
            step = variant * len(seeds) // count if count < len(seeds) else variant
            seed = seeds[(start + step) % len(seeds)]
            found += [Case(command.name, mutator.name, seed.name, variant)
                      for command in COMMANDS.values() if seed.kind in command.kinds]
    return found


def _copy_special(source: str, target: str) -> None:
    """copytree's copy function that recreates FIFOs instead of opening them."""
    if stat.S_ISFIFO(os.lstat(source).st_mode):
        os.mkfifo(target)
    else:
        shutil.copy2(source, target)


@dataclass
class Prepared:
    paths: CasePaths
    argv: list[str]
    note: str  # what the mutator did
    must_fail: str  # why a command that reads voxels must fail, or ""


def prepare(case: Case, seed_folder: Path, root: Path, base: int = FUZZ_SEED) -> Prepared:
    """Write the case under root: the mutated input, the seed beside it (compare), out/."""
    paths = CasePaths(root)
    seed = SEEDS[case.seed]
    shutil.copytree(seed_folder, paths.input)
    if case.command == "compare":
        shutil.copytree(seed_folder, paths.reference)
    paths.out.mkdir()
    inp = Input(paths.input, seed, case.variant)
    note = MUTATORS[case.mutator].apply(inp, case.rng(base))
    shutil.copytree(paths.input, paths.saved, symlinks=True, copy_function=_copy_special)
    spread = zlib.crc32(f"{case.mutator}/{case.variant}".encode())  # the convert target
    argv = COMMANDS[case.command].argv(paths.input / seed.entry,
                                       paths.reference / seed.entry, paths.out, spread)
    return Prepared(paths, [str(a) for a in argv], note, inp.must_fail)


@dataclass
class CaseResult:
    case: Case
    prepared: Prepared
    run: ChildResult
    problems: list[Problem]
    base: int = FUZZ_SEED

    @property
    def argv(self) -> list[str]:
        return self.prepared.argv

    @property
    def note(self) -> str:
        return self.prepared.note

    def describe(self) -> str:
        """Everything needed to reproduce and understand a failing case."""
        run = self.run
        lines = [
            f"fuzz case {self.case.id} (base seed {self.base}, mutator {self.case.mutator}: "
            f"{MUTATORS[self.case.mutator].cls})",
            f"  mutation: {self.note}"
            + (f" (must fail: {self.prepared.must_fail})" if self.prepared.must_fail else ""),
            f"  command:  convkit {shlex.join(self.argv)}",
            f"  exit {run.returncode}, {run.seconds:.2f} s; input kept in "
            f"{self.prepared.paths.saved}",
            f"  replay:   CONVKIT_FUZZ_SEED={self.base} .venv/bin/python tests/fuzz.py "
            f"{self.case.id} /tmp/fuzz-replay --run",
            "  problems:",
            *[f"    - {kind}: {detail}" for kind, detail in self.problems],
        ]
        if run.stderr.strip():
            lines += ["  stderr:", *["    " + line for line in run.stderr.strip()
                                     .splitlines()[-12:]]]
        return "\n".join(lines)


def run_case(case: Case, seed_folder: Path, root: Path, cli: Callable,
             base: int = FUZZ_SEED, timeout: float = TIMEOUT_S) -> CaseResult:
    """Prepare the case under root, run its command in a child, and apply the oracle."""
    prepared = prepare(case, seed_folder, root, base)
    paths, command = prepared.paths, COMMANDS[case.command]
    before = snapshot(paths.root)
    run = run_forked(lambda: _execute(cli, prepared.argv, command, paths.out), timeout)
    after = snapshot(paths.root)
    problems = check(run, command, prepared.must_fail, paths, before, after)
    return CaseResult(case, prepared, run, problems, base)


def preload() -> None:
    """Import what the commands import, once, so that each forked child starts warm."""
    import importlib

    for name in ("convkit.cli.app", "convkit.dicom2nii", "convkit.convert", "convkit.compare",
                 "convkit.nii2dicom", "convkit.audit", "convkit.preview", "convkit.inputs",
                 "convkit.formats", "nibabel", "nrrd", "pydicom", "SimpleITK", "isal.igzip"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def summarise(results: list[CaseResult]) -> str:
    """Failures grouped by (problem, mutator), with the commands and one example each."""
    groups: dict[tuple[str, str], list[CaseResult]] = {}
    for result in results:
        for kind in dict.fromkeys(kind for kind, _ in result.problems):
            groups.setdefault((kind, result.case.mutator), []).append(result)
    failed = sum(1 for r in results if r.problems)
    lines = [f"fuzz (base seed {results[0].base if results else FUZZ_SEED}): {failed} of "
             f"{len(results)} cases failed; problem | mutator x commands: cases, example"]
    for (kind, mutator), members in sorted(groups.items()):
        commands = ",".join(dict.fromkeys(r.case.command for r in members))
        example = members[0]
        lines.append(f"  {kind} | {mutator} x {commands}: {len(members)}, e.g. "
                     f"{example.case.id} ({example.note[:90]})")
    return "\n".join(lines)


def as_record(result: CaseResult) -> dict:
    """One line of fuzz-results.jsonl: the case, its exit, time and problems."""
    return {"id": result.case.id, "mutation": result.note, "argv": result.argv,
            "must_fail": result.prepared.must_fail,
            "exit": result.run.returncode, "seconds": round(result.run.seconds, 3),
            "problems": [list(problem) for problem in result.problems]}


def _main(argv: list[str]) -> int:
    """Replay one case: write its input under FOLDER, print the command; --run: run it."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    case = Case.from_id(argv[0])
    folder = Path(argv[1] if len(argv) > 1 and argv[1] != "--run" else "fuzz-replay")
    if folder.exists():
        shutil.rmtree(folder)
    seeds = write_seeds(folder / "seeds")
    sys.path.insert(0, str(Path(__file__).parent))
    if "--run" in argv:
        from conftest import run_cli

        preload()
        result = run_case(case, seeds[case.seed], folder / "case", run_cli)
        print(result.describe() if result.problems else f"{case.id}: passes the oracle")
        return 1 if result.problems else 0
    prepared = prepare(case, seeds[case.seed], folder / "case")
    print(f"mutation: {prepared.note}\nconvkit {shlex.join(prepared.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
