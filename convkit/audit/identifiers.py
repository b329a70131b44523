"""Identifying data: which attributes and header fields carry names, IDs, dates, addresses.

Reporting only: nothing here changes a file. Values are never put into messages,
only the names of the attributes or fields that hold them. Placeholders that
anonymisers leave ('ANON', 'Anonymous^', '-', '0000') do not count.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

#: DICOM attributes (keywords) that identify a person or a place.
DICOM_IDENTIFIERS = (
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientNames", "OtherPatientIDs",
    "PatientAddress", "PatientTelephoneNumbers", "PatientMotherBirthName", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "AccessionNumber",
)
#: Values anonymisers leave behind: not identifying.
PLACEHOLDER = re.compile(
    r"^[\s\-_^.*x0?]*$|^(anon\w*|anonymi[sz]ed|de-?identified|removed|none|unknown|n/?a|null"
    r"|anonymous\^?)$", re.IGNORECASE)
#: Patterns of identifying text in free-text header fields.
TEXT_PATTERNS = {
    "a person name (Family^Given)": re.compile(r"[A-Za-z][A-Za-z'\-]*\^[A-Za-z]"),
    "a date": re.compile(r"(?<![\d.])(19|20)\d\d([-/.]?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01])"
                         r"(?![\d])"),
    "a patient/institution keyword": re.compile(
        r"patient|birth|\bdob\b|\bmrn\b|address|institution|hospital|clinic|physician"
        r"|accession|\bname\s*[:=]", re.IGNORECASE),
}


def real_value(value: object) -> bool:
    """True when value is not empty and not an anonymiser's placeholder."""
    text = str(value if value is not None else "").strip()
    return bool(text) and not PLACEHOLDER.match(text)


def dicom_identifiers(path: Path) -> dict[str, str]:
    """{keyword: value} of the identifying attributes a DICOM file really carries.

    Read by a small walker over groups 0008 and 0010 (the first few kilobytes of the
    file); pydicom only for what the walker declines (big endian, deflate, no preamble).
    """
    found = _walk_identifiers(path)
    if found is None:
        found = _pydicom_identifiers(path)
    return {keyword: value for keyword, value in found.items() if real_value(value)}


def _pydicom_identifiers(path: Path) -> dict[str, str]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=list(DICOM_IDENTIFIERS))
    except Exception:  # the file was readable for scanning; a second read failing is no finding
        return {}
    return {keyword: str(ds.get(keyword)) for keyword in DICOM_IDENTIFIERS
            if ds.get(keyword) is not None}


#: (group, element) of the identifying attributes, all in groups 0008 and 0010.
_IDENTIFIER_TAGS = {
    0x00100010: "PatientName", 0x00100020: "PatientID", 0x00100030: "PatientBirthDate",
    0x00101001: "OtherPatientNames", 0x00101000: "OtherPatientIDs",
    0x00101040: "PatientAddress", 0x00102154: "PatientTelephoneNumbers",
    0x00101060: "PatientMotherBirthName", 0x00080080: "InstitutionName",
    0x00080081: "InstitutionAddress", 0x00081040: "InstitutionalDepartmentName",
    0x00080090: "ReferringPhysicianName", 0x00081050: "PerformingPhysicianName",
    0x00081070: "OperatorsName", 0x00080050: "AccessionNumber",
}
_CHARSET_TAG = 0x00080005
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_UNDEFINED = 0xFFFFFFFF
_READ = 65536


def _walk_identifiers(path: Path) -> dict[str, str] | None:
    """Identifying values from a Part 10 little-endian file, or None to let pydicom do it."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(_READ)
        if len(data) < 144 or data[128:132] != b"DICM":
            return None
        syntax, position = _meta(data)
        if syntax in ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99") or not syntax:
            return None
        explicit = syntax != "1.2.840.10008.1.2"
        raw: dict[int, bytes] = {}
        depth = 0
        while position + 8 <= len(data):
            tag, length, position = _element(data, position, explicit)
            group = tag >> 16
            if depth == 0 and group > 0x0010 and group != 0xFFFE:
                break  # past the groups that hold identifiers
            if group == 0xFFFE:  # item and delimiters: only inside skipped sequences
                if (tag & 0xFFFF) in (0xE00D, 0xE0DD):
                    depth -= 1
                elif length == _UNDEFINED:
                    depth += 1
                else:
                    position += length
                continue
            if length == _UNDEFINED:
                depth += 1
                continue
            if depth == 0 and (tag in _IDENTIFIER_TAGS or tag == _CHARSET_TAG):
                raw[tag] = data[position:position + length]
            position += length
        else:
            return None  # the groups run past the first read: unusual, let pydicom do it
    except (struct.error, ValueError, OSError):
        return None
    charset = raw.pop(_CHARSET_TAG, b"").decode("ascii", "replace")
    encoding = "utf-8" if "192" in charset else "latin-1"
    return {_IDENTIFIER_TAGS[tag]: value.decode(encoding, "replace").strip("\x00 ")
            for tag, value in raw.items()}


def _meta(data: bytes) -> tuple[str, int]:
    """(TransferSyntaxUID, offset of the dataset) from the explicit-VR group 0002."""
    position, syntax = 132, ""
    while position + 8 <= len(data):
        group, element, vr = struct.unpack_from("<HH2s", data, position)
        if group != 2:
            break
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, position + 8)[0]
            position += 12
        else:
            length = struct.unpack_from("<H", data, position + 6)[0]
            position += 8
        if element == 0x10:
            syntax = data[position:position + length].decode("ascii", "replace").strip("\x00 ")
        position += length
    return syntax, position


def _element(data: bytes, position: int, explicit: bool) -> tuple[int, int, int]:
    """(tag, value length, value offset) of the element at position."""
    group, element = struct.unpack_from("<HH", data, position)
    if explicit and group != 0xFFFE:
        vr = data[position + 4:position + 6]
        if vr in _LONG_VRS:
            return (group << 16) | element, struct.unpack_from("<I", data, position + 8)[0], \
                position + 12
        if not vr.isalpha():
            raise ValueError("not an explicit VR")
        return (group << 16) | element, struct.unpack_from("<H", data, position + 6)[0], \
            position + 8
    return (group << 16) | element, struct.unpack_from("<I", data, position + 4)[0], position + 8


def text_identifiers(text: str) -> list[str]:
    """What in a free-text field looks identifying (names of the patterns), or []."""
    if not real_value(text):
        return []
    return [name for name, pattern in TEXT_PATTERNS.items() if pattern.search(text)]


def key_value_identifiers(key: str, value: str) -> list[str]:
    """A custom header field (NRRD key:=value, MetaImage key, JSON key) that looks identifying."""
    if not real_value(value):
        return []
    if key in DICOM_IDENTIFIERS:
        return [key]
    found = text_identifiers(value)
    if TEXT_PATTERNS["a patient/institution keyword"].search(key) or re.search(
            r"(^|_)(name|id)$", key, re.IGNORECASE):
        found.append(f"a field named {key!r}")
    return found
