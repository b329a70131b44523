"""A small DICOM tag walker that reads only the header elements discovery needs.

pydicom's full parse costs 1-2 ms per file, too slow for auditing archives. This
reader walks the elements of a Part 10 file (explicit or implicit VR little
endian, native or compressed pixel data) up to the pixel data, keeps the ~40
attributes that SliceHeader uses and skips everything else, sequences included,
without decoding it. It returns None for anything unusual (big endian, deflate,
no preamble, odd structure) and the caller falls back to pydicom: it is a fast
path, not a second parser to trust.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

#: keyword -> (tag, VR) of the attributes discovery reads (VR for implicit VR files).
WANTED: dict[str, tuple[int, str]] = {
    "ImageType": (0x00080008, "CS"), "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"), "AcquisitionTime": (0x00080032, "TM"),
    "ContentTime": (0x00080033, "TM"), "Modality": (0x00080060, "CS"),
    "Manufacturer": (0x00080070, "LO"), "SeriesDescription": (0x0008103E, "LO"),
    "SpecificCharacterSet": (0x00080005, "CS"),
    "SliceThickness": (0x00180050, "DS"), "EchoTime": (0x00180081, "DS"),
    "EchoNumbers": (0x00180086, "IS"), "SpacingBetweenSlices": (0x00180088, "DS"),
    "ProtocolName": (0x00181030, "LO"), "TriggerTime": (0x00181060, "DS"),
    "GantryDetectorTilt": (0x00181120, "DS"),
    "StudyInstanceUID": (0x0020000D, "UI"), "SeriesInstanceUID": (0x0020000E, "UI"),
    "SeriesNumber": (0x00200011, "IS"), "AcquisitionNumber": (0x00200012, "IS"),
    "InstanceNumber": (0x00200013, "IS"), "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "TemporalPositionIdentifier": (0x00200100, "IS"),
    "SamplesPerPixel": (0x00280002, "US"), "PhotometricInterpretation": (0x00280004, "CS"),
    "NumberOfFrames": (0x00280008, "IS"), "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"), "PixelSpacing": (0x00280030, "DS"),
    "BitsAllocated": (0x00280100, "US"), "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"), "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
}
#: Identifying attributes (for audit): keyword -> (tag, VR); all in groups 0008 and 0010.
IDENTIFYING: dict[str, tuple[int, str]] = {
    "PatientName": (0x00100010, "PN"), "PatientID": (0x00100020, "LO"),
    "PatientBirthDate": (0x00100030, "DA"), "OtherPatientIDs": (0x00101000, "LO"),
    "OtherPatientNames": (0x00101001, "PN"), "PatientAddress": (0x00101040, "LO"),
    "PatientTelephoneNumbers": (0x00102154, "SH"), "PatientMotherBirthName": (0x00101060, "PN"),
    "InstitutionName": (0x00080080, "LO"), "InstitutionAddress": (0x00080081, "ST"),
    "InstitutionalDepartmentName": (0x00081040, "LO"),
    "ReferringPhysicianName": (0x00080090, "PN"), "PerformingPhysicianName": (0x00081050, "PN"),
    "OperatorsName": (0x00081070, "PN"), "AccessionNumber": (0x00080050, "SH"),
    "SpecificCharacterSet": (0x00080005, "CS"),
}
_DIRECTORY_RECORDS = 0x00041220
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_IMPLICIT_LE = "1.2.840.10008.1.2"
#: Big endian and deflated datasets; every other syntax (compressed ones included) encodes
#: its dataset as explicit VR little endian.
_DECLINED_SYNTAXES = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}
_FIRST_READ = 16384
_TAG, _U16, _U32 = struct.Struct("<HH"), struct.Struct("<H"), struct.Struct("<I")


class _Unusual(Exception):
    """Something this reader does not handle: use pydicom instead."""


class FastDataset:
    """The few pydicom Dataset methods discovery uses, over the parsed attributes."""

    def __init__(self, values: dict[str, Any], transfer_syntax: str, pixel_end: int | None,
                 has_directory: bool) -> None:
        self._values = values
        self.file_meta = {"TransferSyntaxUID": transfer_syntax}
        self.pixel_data_end = pixel_end  # file offset where the pixel data must end, if known
        self.has_directory = has_directory

    def get(self, keyword: Any, default: Any = None) -> Any:
        return self._values.get(keyword, default) if isinstance(keyword, str) else default

    def __contains__(self, keyword: str) -> bool:
        return keyword in self._values or (keyword == "DirectoryRecordSequence"
                                           and self.has_directory)

    def __getattr__(self, keyword: str) -> Any:
        try:
            return self.__dict__["_values"][keyword]
        except KeyError:
            raise AttributeError(keyword) from None

    def get_private_item(self, *_: Any) -> Any:
        raise KeyError("private elements are not read by the fast path")


def read_fast(path: Path, wanted: dict[str, tuple[int, str]] | None = None,
              ) -> FastDataset | None:
    """The wanted attributes (default: WANTED) of a Part 10 little-endian file, or None."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_FIRST_READ)
            if len(data) < 132 or data[128:132] != b"DICM":
                return None
            syntax, offset = _file_meta(data)
            if syntax in _DECLINED_SYNTAXES or not syntax:
                return None  # big endian or deflated: pydicom handles those
            walker = _Walker(handle, data, syntax != _IMPLICIT_LE, wanted or WANTED)
            values, pixel_end, directory = walker.walk(offset)
    except (_Unusual, struct.error, OSError, UnicodeDecodeError, ValueError):
        return None
    return FastDataset(values, syntax, pixel_end, directory)


def _file_meta(data: bytes) -> tuple[str, int]:
    """(TransferSyntaxUID, offset of the dataset) from the group 0002 meta header."""
    group, element, vr = struct.unpack_from("<HH2s", data, 132)
    if (group, element) != (2, 0) or vr != b"UL":
        raise _Unusual("no meta group length")
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]
    if meta_end > len(data):
        raise _Unusual("meta header beyond the first read")
    position, syntax = 144, ""
    while position < meta_end:
        group, element, vr = struct.unpack_from("<HH2s", data, position)
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, position + 8)[0]
            position += 12
        else:
            length = struct.unpack_from("<H", data, position + 6)[0]
            position += 8
        if (group, element) == (2, 0x10):
            syntax = data[position:position + length].decode("ascii").strip("\x00 ")
        position += length
    return syntax, meta_end


class _Walker:
    """Walks elements of one dataset, reading more of the file as needed."""

    def __init__(self, handle: Any, data: bytes, explicit: bool,
                 wanted: dict[str, tuple[int, str]]) -> None:
        self.handle, self.data, self.explicit = handle, data, explicit
        self.by_tag = {tag: (keyword, vr) for keyword, (tag, vr) in wanted.items()}
        self.values: dict[str, Any] = {}
        self.raw: dict[str, tuple[bytes, str]] = {}

    def need(self, end: int) -> None:
        """Make sure data holds the file up to end (reading in doubling chunks)."""
        while end > len(self.data):
            chunk = self.handle.read(max(end - len(self.data), len(self.data)))
            if not chunk:
                raise _Unusual("file ends inside the header")
            self.data += chunk

    def walk(self, position: int) -> tuple[dict[str, Any], int | None, bool]:
        directory = False
        while True:
            try:
                self.need(position + 8)
            except _Unusual:
                break  # a header-only file (no pixel data)
            tag, vr, length, position = self._element(position)
            if tag == _PIXEL_DATA:
                pixel_end = None if length == _UNDEFINED else position + length
                return self._decoded(), pixel_end, directory
            if tag == _DIRECTORY_RECORDS:
                directory = True
            if length == _UNDEFINED:
                position = self._skip_undefined(position)
                continue
            if tag in self.by_tag:
                self.need(position + length)
                keyword, default_vr = self.by_tag[tag]
                self.raw[keyword] = (self.data[position:position + length], vr or default_vr)
            position += length
        return self._decoded(), None, directory

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

    def _skip_undefined(self, position: int) -> int:
        """Skip a sequence (or item) of undefined length; return the position after it."""
        depth = 1
        while depth:
            self.need(position + 8)
            tag, _, length, position = self._element(position)
            if tag in (_SEQUENCE_END, _ITEM_END):
                depth -= 1
            elif length == _UNDEFINED:
                depth += 1
            elif tag != _ITEM:
                position += length
            else:
                position += length  # an item of defined length: skip it whole
        return position

    def _decoded(self) -> dict[str, Any]:
        charset = self.raw.get("SpecificCharacterSet", (b"", ""))[0].decode("ascii", "replace")
        encoding = "utf-8" if "192" in charset else "latin-1"
        for keyword, (raw, vr) in self.raw.items():
            self.values[keyword] = _value(raw, vr, encoding)
        return self.values


def _value(raw: bytes, vr: str, encoding: str) -> Any:
    """One element's value: ints for US/UL/SS/SL, floats for FD/FL, else str or a list."""
    if vr in ("US", "SS", "UL", "SL", "FL", "FD"):
        code = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}[vr]
        count = len(raw) // struct.calcsize(code)
        numbers = struct.unpack(f"<{count}{code}", raw[:count * struct.calcsize(code)])
        return numbers[0] if count == 1 else list(numbers)
    text = raw.decode(encoding, "replace").strip("\x00 ")
    if "\\" in text:
        return [part.strip() for part in text.split("\\")]
    return text
