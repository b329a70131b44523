"""A small DICOM tag walker that reads only the header elements discovery needs.

pydicom's full parse costs 1-2 ms per file, too slow for auditing archives. This
reader walks the elements of a Part 10 file (explicit or implicit VR little
endian, native or compressed pixel data) up to the pixel data, keeps the ~40
attributes that SliceHeader uses, the private creators and the vendor elements
listed in vendors.PRIVATE_ELEMENTS, and skips everything else, sequences included,
without decoding it. It returns None for anything unusual (big endian, deflate,
no preamble, odd structure) and the caller falls back to pydicom, as it does when
a sequence it needs the content of is present (CONTENT_SEQUENCES): it is a fast
path, not a second parser to trust. Tests hold it equal to pydicom on every
corpus file it takes.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

from convkit.dicom.dictionary import entries
from convkit.dicom.vendors import PRIVATE_ELEMENTS

#: keyword -> (tag, VR) of the attributes discovery reads (VR for implicit VR files).
WANTED: dict[str, tuple[int, str]] = entries(
    "ImageType", "SOPClassUID", "SOPInstanceUID", "AcquisitionTime", "ContentTime", "Modality",
    "Manufacturer", "SeriesDescription", "SpecificCharacterSet", "SliceThickness", "EchoTime",
    "EchoNumbers", "SpacingBetweenSlices", "ProtocolName", "TriggerTime", "GantryDetectorTilt",
    "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "AcquisitionNumber",
    "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient",
    "TemporalPositionIdentifier", "SamplesPerPixel", "PhotometricInterpretation",
    "NumberOfFrames", "Rows", "Columns", "PixelSpacing", "BitsAllocated", "BitsStored",
    "PixelRepresentation", "BurnedInAnnotation", "RescaleIntercept", "RescaleSlope",
    # Standard diffusion attributes of single-frame MR (diffusion.py).
    "DiffusionDirectionality", "DiffusionBValue", "DiffusionGradientOrientation",
    # What maps GE's logical-frame gradients to the patient (diffusion.ge_direction_lps), and
    # which image axis GE pepolar volumes are mirrored along (group.py, plan.py).
    "PatientPosition", "InPlanePhaseEncodingDirection")
#: Sequences whose content discovery needs (the walker skips sequences): when a file holds
#: one, the caller reads it with pydicom. Tag -> keyword.
CONTENT_SEQUENCES: dict[int, str] = {
    0x00189117: "MRDiffusionSequence", 0x00189076: "DiffusionGradientDirectionSequence",
    0x00189601: "DiffusionBMatrixSequence", 0x52009229: "SharedFunctionalGroupsSequence",
    0x52009230: "PerFrameFunctionalGroupsSequence",
}
#: Identifying attributes (for audit): keyword -> (tag, VR); all in groups 0008 and 0010.
IDENTIFYING: dict[str, tuple[int, str]] = entries(
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames",
    "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "AccessionNumber", "SpecificCharacterSet")
_DIRECTORY_RECORDS = 0x00041220
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
#: Big endian and deflated datasets; every other syntax (compressed ones included) encodes
#: its dataset as explicit VR little endian.
_DEFLATED = "1.2.840.10008.1.2.1.99"
_DECLINED_SYNTAXES = {"1.2.840.10008.1.2.2", _DEFLATED}
_FIRST_READ = 16384
#: Sequences of undefined length nested deeper than this make a file unreadable: the walker
#: skips them (iteratively), but pydicom recurses into them when it reads the file (a
#: RecursionError a few hundred levels down). Real files nest a few levels, SR trees a dozen.
MAX_SEQUENCE_DEPTH = 64
#: More items than this in encapsulated pixel data: declined as damaged (a frame is one
#: item or a few; every item costs a read of its header).
MAX_FRAGMENTS = 1_000_000
#: Bytes at the end of a fragment searched for the end-of-image marker (trailing padding).
_TAIL_BYTES = 16
_TAG, _U16, _U32 = struct.Struct("<HH"), struct.Struct("<H"), struct.Struct("<I")
#: One element header: (group, element, VR, short length) or (group, element, length).
_EXPLICIT, _IMPLICIT = struct.Struct("<HH2sH"), struct.Struct("<HHI")
#: group -> {creator: {offset: VR}}: the private elements captured (vendors.PRIVATE_ELEMENTS).
_PRIVATE: dict[int, dict[str, dict[int, str]]] = {}
for (_group, _creator), _offsets in PRIVATE_ELEMENTS.items():
    _PRIVATE.setdefault(_group, {})[_creator] = _offsets
#: Offsets read in a group whose private creators were lost (block 0x10, see
#: vendors.private_element): every offset any creator of the group uses.
_ORPHAN_OFFSETS = {group: set().union(*creators.values()) for group, creators in _PRIVATE.items()}
_BYTES_VRS = {"OB", "OW", "UN", ""}  # kept as bytes, as pydicom does
#: Overlay data (60xx,3000) of the 16 overlay groups: their presence is noted.
_OVERLAY_DATA = frozenset(((0x6000 + 2 * n) << 16) | 0x3000 for n in range(16))
#: Tags the walk acts on besides the wanted ones: pixel data, DICOMDIR records, sequences,
#: overlay data.
_SPECIAL_TAGS = frozenset({_PIXEL_DATA, _DIRECTORY_RECORDS, *CONTENT_SEQUENCES, *_OVERLAY_DATA})


class Fragments(NamedTuple):
    """The items of encapsulated (compressed) pixel data, read without their content.

    lengths[i]: bytes of fragment i (the basic offset table not counted);
    ends_with_eoi[i]: whether it has an end-of-image marker (FF D9) in its last bytes,
    where every complete JPEG, JPEG-LS and JPEG 2000 codestream ends. problem: why the
    items do not form a sequence ('' when they do); a fragment running past the end of
    the file shows in pixel_end instead.
    """

    lengths: tuple[int, ...]
    ends_with_eoi: tuple[bool, ...]
    problem: str = ""


def has_eoi(tail: bytes) -> bool:
    """Whether the last bytes of a fragment hold the end-of-image marker FF D9 (markers
    cannot occur inside entropy-coded data, so a cut stream never ends with one)."""
    return b"\xff\xd9" in tail[-_TAIL_BYTES:]


class Element(NamedTuple):
    """A private element as pydicom's DataElement shows it to convkit: value and VR."""

    value: Any
    VR: str


class _Unusual(Exception):
    """Something this reader does not handle: use pydicom instead."""


class _PastEnd(_Unusual):
    """An element runs past the end of the file: the file is truncated (or its length is)."""


class FastDataset:
    """The few pydicom Dataset methods discovery uses, over the parsed attributes."""

    def __init__(self, values: dict[str, Any], transfer_syntax: str, pixel_end: int | None,
                 has_directory: bool, private: dict[tuple[int, int], Element] | None = None,
                 sequences: frozenset[str] = frozenset(), file_size: int | None = None,
                 fragments: Fragments | None = None, problem: str = "",
                 overlays: tuple[int, ...] = (), pixel_start: int | None = None) -> None:
        self._values = values
        self.file_size = file_size  # bytes on disk (fstat of the open file)
        self.file_meta = {"TransferSyntaxUID": transfer_syntax}
        self.pixel_data_end = pixel_end  # file offset where the pixel data must end, if known
        self.pixel_data_start = pixel_start  # file offset of native pixel data (None: not known)
        self.fragments = fragments  # the items of encapsulated pixel data (None: native)
        self.problem = problem  # why the file cannot be read as a whole, though walked ('')
        self.has_directory = has_directory
        self.private = private or {}  # (group, element) -> Element: creators and PRIVATE_ELEMENTS
        self.sequences = sequences  # CONTENT_SEQUENCES keywords present (content not read)
        self.overlays = overlays  # groups holding overlay data (60xx,3000), ascending
        self.raw: dict[str, tuple[bytes, str]] = {}  # read_fast(keep_raw=True): keyword ->
        self.meta: list[tuple[int, str, bytes]] = []  # (bytes, VR); the file meta elements

    def get(self, key: Any, default: Any = None) -> Any:
        if key.__class__ is str:  # the hot path: tens of calls per file
            return self._values.get(key, default)
        return self.private.get(key, default) if isinstance(key, tuple) else default

    def __contains__(self, key: Any) -> bool:
        if isinstance(key, tuple):
            return key in self.private
        return (key in self._values or key in self.sequences
                or (key == "DirectoryRecordSequence" and self.has_directory))

    def __getattr__(self, keyword: str) -> Any:
        try:
            return self.__dict__["_values"][keyword]
        except KeyError:
            raise AttributeError(keyword) from None

    def get_private_item(self, group: int, offset: int, creator: str) -> Element:
        """Like pydicom's: the element at offset in creator's block; KeyError if absent."""
        for (element_group, element), item in self.private.items():
            if element_group == group and element <= 0xFF and item.value == creator:
                return self.private[(group, (element << 8) | offset)]
        raise KeyError(f"private creator {creator!r} not found in group {group:04X}")


def read_fast(path: Path, wanted: dict[str, tuple[int, str]] | None = None,
              keep_raw: bool = False) -> FastDataset | None:
    """The wanted attributes (default: WANTED) of a Part 10 little-endian file, or None.

    keep_raw: FastDataset.raw also holds each wanted element's bytes and VR as in the file
    (before decoding), and FastDataset.meta the file meta elements (meta_elements)."""
    try:
        # Unbuffered (a third cheaper than open()); non-blocking so that a named pipe in
        # the tree reads as empty instead of waiting forever for a writer.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        data = os.read(descriptor, _FIRST_READ)
        if len(data) < 132 or data[128:132] != b"DICM":
            return None
        syntax, offset = _file_meta(data)
        if syntax in _DECLINED_SYNTAXES or not syntax:
            return None  # big endian or deflated: pydicom handles those
        size = os.fstat(descriptor).st_size
        walker = _Walker(descriptor, data, syntax != IMPLICIT_VR_LE, wanted or WANTED, size)
        values, pixel_end, directory = walker.walk(offset)
    except (_Unusual, struct.error, OSError, UnicodeDecodeError, ValueError):
        return None
    finally:
        os.close(descriptor)
    problem = walker.problem or (f"sequences nested more than {MAX_SEQUENCE_DEPTH} levels deep"
                                 if walker.max_depth > 2 * MAX_SEQUENCE_DEPTH else "")
    fast = FastDataset(values, syntax, pixel_end, directory, walker.private,
                       frozenset(walker.sequences), size, walker.fragments, problem,
                       tuple(sorted(walker.overlays)), walker.pixel_start)
    if keep_raw:
        fast.raw, fast.meta = walker.raw, meta_elements(data)[0]
    return fast


def _file_meta(data: bytes, start: int = 132) -> tuple[str, int]:
    """(TransferSyntaxUID, offset of the dataset) from the group 0002 meta header at start."""
    elements, meta_end = meta_elements(data, start)
    syntax = next((value for tag, _, value in elements if tag == 0x00020010), b"")
    return syntax.decode("ascii").strip("\x00 "), meta_end


def meta_elements(data: bytes, start: int = 132) -> tuple[list[tuple[int, str, bytes]], int]:
    """([(tag, VR, value bytes)] of the group 0002 meta header at start, offset of the
    dataset after it)."""
    group, element, vr = struct.unpack_from("<HH2s", data, start)
    if (group, element) != (2, 0) or vr != b"UL":
        raise _Unusual("no meta group length")
    meta_end = start + 12 + struct.unpack_from("<I", data, start + 8)[0]
    if meta_end > len(data):
        raise _Unusual("meta header beyond the first read")
    position, elements = start + 12, []
    while position < meta_end:
        group, element, vr = struct.unpack_from("<HH2s", data, position)
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, position + 8)[0]
            position += 12
        else:
            length = struct.unpack_from("<H", data, position + 6)[0]
            position += 8
        elements.append(((group << 16) | element, vr.decode("ascii"),
                         data[position:position + length]))
        position += length
    return elements, meta_end


_SERIES_UID = {"SeriesInstanceUID": WANTED["SeriesInstanceUID"]}


def series_uid_of(path: Path) -> str:
    """The SeriesInstanceUID of a file that neither reader could read whole ('' if none is
    found), so that its series is known to be incomplete: the walker skips what made
    pydicom fail (sequences nested too deeply), and takes files without a preamble (meta
    group at byte 0, or a bare little-endian dataset) here too."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        data = os.read(descriptor, _FIRST_READ)
        if data[128:132] == b"DICM":
            syntax, offset = _file_meta(data)
        elif data[:4] == b"\x02\x00\x00\x00":
            syntax, offset = _file_meta(data, 0)
        else:
            syntax, offset = "", 0
        size = os.fstat(descriptor).st_size
        if syntax == _DEFLATED:  # what can be inflated of the dataset (it may be cut short)
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[offset:], _FIRST_READ * 64)
            offset, size = 0, len(data)
        elif syntax in _DECLINED_SYNTAXES:
            return ""
        explicit = syntax != IMPLICIT_VR_LE if syntax else data[offset + 4:offset + 6].isalpha()
        walker = _Walker(descriptor, data, explicit, _SERIES_UID, size)
        values, _, _ = walker.walk(offset)
    except (_Unusual, struct.error, OSError, UnicodeDecodeError, ValueError, zlib.error):
        return ""
    finally:
        os.close(descriptor)
    value = values.get("SeriesInstanceUID", "")
    return value if isinstance(value, str) else ""


_TAG_TABLES: dict[int, tuple[dict, dict[int, tuple[str, str]]]] = {}


def _by_tag(wanted: dict[str, tuple[int, str]]) -> dict[int, tuple[str, str]]:
    """tag -> (keyword, VR) of a wanted table (built once per table object)."""
    cached = _TAG_TABLES.get(id(wanted))
    if cached is None or cached[0] is not wanted:
        cached = _TAG_TABLES[id(wanted)] = (wanted, {tag: (keyword, vr)
                                                     for keyword, (tag, vr) in wanted.items()})
    return cached[1]


class _Walker:
    """Walks elements of one dataset, reading more of the file as needed."""

    def __init__(self, descriptor: int, data: bytes, explicit: bool,
                 wanted: dict[str, tuple[int, str]], file_size: int) -> None:
        self.descriptor, self.data, self.explicit = descriptor, data, explicit
        self.file_size = file_size
        self.by_tag = _by_tag(wanted)
        self.values: dict[str, Any] = {}
        self.raw: dict[str, tuple[bytes, str]] = {}
        self.private_raw: dict[tuple[int, int], tuple[bytes, str]] = {}
        self.private: dict[tuple[int, int], Element] = {}
        self.sequences: set[str] = set()
        self.overlays: set[int] = set()
        self.fragments: Fragments | None = None
        self.pixel_start: int | None = None  # where native (defined-length) pixel data start
        self.max_depth = 0  # of the undefined-length sequences and items skipped
        self.end = 0  # where the last element ends, when the walk reaches the end of the file
        self.problem = ""  # why the file cannot be read whole (truncated)

    def need(self, end: int) -> None:
        """Make sure data holds the file up to end (reading in doubling chunks, never past
        the file's size: a corrupt length must not become a 4 GB read buffer); _PastEnd
        when the file ends before."""
        target = min(end, self.file_size)
        while target > len(self.data):
            chunk = os.read(self.descriptor, min(max(target - len(self.data), len(self.data)),
                                                 self.file_size - len(self.data)))
            if not chunk:
                break
            self.data += chunk
        if end > len(self.data):
            raise _PastEnd(f"the file ends at byte {len(self.data)}, an element runs to byte "
                           f"{end}")

    def walk(self, position: int) -> tuple[dict[str, Any], int | None, bool]:
        """Walk the top-level elements up to the pixel data, keeping the wanted ones; an
        element that runs past the end of the file ends the walk with self.problem set."""
        try:
            values, pixel_end, directory = self._walk(position)
        except _PastEnd as exc:
            self.problem = f"truncated: {exc}"
            return self._decoded(), None, False
        if self.end > len(self.data) or self.end > self.file_size:
            self.problem = (f"truncated: the file ends at byte {self.file_size}, an element runs "
                            f"to byte {self.end}")
        return values, pixel_end, directory

    def _walk(self, position: int) -> tuple[dict[str, Any], int | None, bool]:  # noqa: C901
        """Walk the top-level elements up to the pixel data, keeping the wanted ones.

        The hot loop of discovery (tens of elements per file, tens of thousands of
        files): element headers are decoded inline, module constants are bound to
        locals, and an element nobody wants costs three lookups. Kept as one function
        on purpose (over the complexity limit): splitting it adds a call per element.
        """
        directory, explicit, by_tag, raw = False, self.explicit, self.by_tag, self.raw
        unpack_explicit, unpack_implicit = _EXPLICIT.unpack_from, _IMPLICIT.unpack_from
        unpack_u32, long_vrs, private_groups = _U32.unpack_from, _LONG_VRS, _PRIVATE
        special, undefined = _SPECIAL_TAGS, _UNDEFINED
        data = self.data
        size = len(data)
        while True:
            if position + 12 > size:
                try:
                    self.need(position + 12)
                except _Unusual:
                    if position + 8 > len(self.data):
                        self.end = position  # the end of a header-only file (no pixel data)
                        break
                data = self.data
                size = len(data)
            if explicit:
                group, element, vr, length = unpack_explicit(data, position)
                if vr in long_vrs:
                    length, position = unpack_u32(data, position + 8)[0], position + 12
                elif vr.isalpha():
                    position += 8
                else:
                    raise _Unusual("not an explicit VR")
            else:
                group, element, length = unpack_implicit(data, position)
                vr, position = b"", position + 8
            tag = (group << 16) | element
            kept = by_tag.get(tag)
            if kept is not None:
                if position + length > size:
                    self.need(position + length)
                    data = self.data
                    size = len(data)
                raw[kept[0]] = (data[position:position + length], vr.decode("ascii") or kept[1])
            elif group in private_groups and length != undefined:
                self._private(group, element, vr.decode("ascii"), position, length)
                data = self.data
                size = len(data)
            elif tag in special:
                if tag == _PIXEL_DATA:
                    if length == undefined:  # encapsulated: the end is where the items end
                        pixel_end, self.fragments = self._encapsulated(position)
                    else:
                        pixel_end, self.pixel_start = position + length, position
                    return self._decoded(), pixel_end, directory
                if tag == _DIRECTORY_RECORDS:
                    directory = True
                elif group >= 0x6000:
                    self.overlays.add(group)
                else:
                    self.sequences.add(CONTENT_SEQUENCES[tag])
            if length == undefined:
                # An undefined-length UN holds its items in implicit VR (PS3.5 6.2.2).
                position = self._skip_undefined(position, explicit and vr != b"UN")
                data = self.data
                size = len(data)
                continue
            position += length
        return self._decoded(), None, directory

    def _private(self, group: int, element: int, vr: str, position: int, length: int) -> None:
        """Keep private creators and the PRIVATE_ELEMENTS of their blocks (raw)."""
        block, offset = element >> 8, element & 0xFF
        if block == 0:
            if offset >= 0x10:  # a private creator: (gggg,00xx) names block xx
                self.need(position + length)
                self.private_raw[(group, element)] = (self.data[position:position + length],
                                                      "LO" if vr in ("", "UN") else vr)
            return
        creator_raw = self.private_raw.get((group, block))
        if creator_raw is None:  # creators lost: read the usual block, VR unknown
            wanted_vr = "" if block == 0x10 and offset in _ORPHAN_OFFSETS[group] else None
        else:
            creator = creator_raw[0].decode("latin-1").strip("\x00 ")
            wanted_vr = _PRIVATE[group].get(creator, {}).get(offset)
        if wanted_vr is None:
            return
        self.need(position + length)
        file_vr = vr if vr != "UN" else ""
        self.private_raw[(group, element)] = (self.data[position:position + length],
                                              file_vr or wanted_vr)

    def _element(self, position: int) -> tuple[int, str, int, int]:
        data = self.data
        group, element = _TAG.unpack_from(data, position)
        tag = (group << 16) | element
        if self.explicit and group != 0xFFFE:
            vr = data[position + 4:position + 6]
            if vr in _LONG_VRS:
                self.need(position + 12)
                return tag, vr.decode("ascii"), _U32.unpack_from(self.data, position + 8)[0], \
                    position + 12
            if not vr.isalpha():
                raise _Unusual("not an explicit VR")
            return tag, vr.decode("ascii"), _U16.unpack_from(data, position + 6)[0], position + 8
        return tag, "", _U32.unpack_from(data, position + 4)[0], position + 8

    def _skip_undefined(self, position: int, explicit: bool) -> int:
        """Skip a sequence (or item) of undefined length; return the position after it."""
        depth, outer = 1, self.explicit
        self.explicit = explicit
        try:
            return self._skip_items(position, depth)
        finally:
            self.explicit = outer

    def _skip_items(self, position: int, depth: int) -> int:
        while depth:
            self.need(position + 8)
            tag, _, length, position = self._element(position)
            if tag in (_SEQUENCE_END, _ITEM_END):
                depth -= 1
            elif length == _UNDEFINED:
                depth += 1  # a sequence and its item: two levels each
                self.max_depth = max(self.max_depth, depth)
            elif tag != _ITEM:
                position += length
            else:
                position += length  # an item of defined length: skip it whole
        return position

    def _encapsulated(self, position: int) -> tuple[int, Fragments]:
        """(offset after the sequence delimiter, the fragments) of encapsulated pixel data
        starting at position: item headers are read one by one (pread), contents skipped.

        A file that ends before the delimiter gives an end past the file's size (the
        truncation check reports it).
        """
        lengths: list[int] = []
        ends: list[bool] = []
        first = True
        while True:
            head = os.pread(self.descriptor, 8, position)
            if len(head) < 8:
                return position + 8, Fragments(tuple(lengths), tuple(ends))
            group, element, length = _IMPLICIT.unpack(head)
            tag = (group << 16) | element
            position += 8
            if tag == _SEQUENCE_END:
                return position, Fragments(tuple(lengths), tuple(ends))
            if tag != _ITEM or length == _UNDEFINED:
                return position, Fragments(tuple(lengths), tuple(ends),
                                           f"an element ({group:04X},{element:04X}) where an "
                                           "item of pixel data should be")
            if len(ends) >= MAX_FRAGMENTS:
                return position, Fragments(tuple(lengths), tuple(ends),
                                           f"more than {MAX_FRAGMENTS} fragments")
            if not first:  # the first item is the basic offset table
                size = min(length, _TAIL_BYTES)
                lengths.append(length)
                ends.append(has_eoi(os.pread(self.descriptor, size, position + length - size)))
            first = False
            position += length

    def _decoded(self) -> dict[str, Any]:
        charset = self.raw.get("SpecificCharacterSet", (b"", ""))[0].decode("ascii", "replace")
        encoding = "utf-8" if "192" in charset else "latin-1"
        cache = _VALUES.setdefault(encoding, {})
        if len(cache) > _VALUES_MAX:
            cache.clear()  # unique values (UIDs, positions) would otherwise pile up
        for keyword, key in self.raw.items():
            value = cache.get(key)
            if value is None:  # the files of a series repeat most values: decode each once
                value = cache[key] = _value(*key, encoding)
            self.values[keyword] = value
        for tag, (raw, vr) in self.private_raw.items():
            value = raw if vr in _BYTES_VRS else _value(raw, vr, "latin-1")
            self.private[tag] = Element(value, vr)
        return self.values


#: Decoded values by (raw bytes, VR): a series shares its grid, orientation, UIDs and
#: scaling, so most elements of a file have been decoded before (bounded; cleared when full).
_VALUES: dict[str, dict[tuple[bytes, str], Any]] = {}  # by text encoding
_VALUES_MAX = 20_000
_NUMBER_CODES = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}


def _value(raw: bytes, vr: str, encoding: str) -> Any:
    """One element's value: ints for US/UL/SS/SL, floats for FD/FL, else str; a tuple of
    them when multi-valued (immutable: values are shared through the cache)."""
    code = _NUMBER_CODES.get(vr)
    if code is not None:
        size = struct.calcsize(code)
        if len(raw) % size:  # pydicom refuses these (BytesLengthException): so does convkit
            raise _Unusual(f"a {vr} value of {len(raw)} bytes")
        count = len(raw) // size
        numbers = struct.unpack(f"<{count}{code}", raw[:count * size])
        return numbers[0] if count == 1 else numbers
    text = raw.decode(encoding, "replace").strip("\x00 ")
    if "\\" in text:
        return tuple(part.strip() for part in text.split("\\"))
    return text
