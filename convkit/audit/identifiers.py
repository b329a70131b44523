"""Identifying data: which attributes and header fields carry names, IDs, dates, addresses.

Reporting only: nothing here changes a file. Values are never put into messages,
only the names of the attributes or fields that hold them. Placeholders that
anonymisers leave ('ANON', 'Anonymous^', '-', '0000') do not count.
"""

from __future__ import annotations

import re
from pathlib import Path

from convkit.dicom.fastheader import IDENTIFYING, read_fast
from convkit.errors import exception_reason

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
#: Patterns of identifying text in free-text header fields. Each runs in linear time (a
#: header field may hold a megabyte of anything): the name pattern starts only where a run
#: of name characters starts, and its quantifiers never backtrack (possessive).
TEXT_PATTERNS = {
    "a person name (Family^Given)": re.compile(
        r"(?<![A-Za-z'\-])[\-']*+[A-Za-z][A-Za-z'\-]*+\^[A-Za-z]"),
    "a date": re.compile(r"(?<![\d.])(19|20)\d\d([-/.]?)(0[1-9]|1[0-2])\2(0[1-9]|[12]\d|3[01])"
                         r"(?![\d])"),
    "a patient/institution keyword": re.compile(
        r"patient|birth|\bdob\b|\bmrn\b|address|institution|hospital|clinic|physician"
        r"|accession|\bname\s*[:=]", re.IGNORECASE),
}


class IdentifiersUnchecked(Exception):
    """The identifying data of a file could not be checked: the audit says so (a finding),
    never reports the file as clean."""


def real_value(value: object) -> bool:
    """True when value is not empty and not an anonymiser's placeholder."""
    text = str(value if value is not None else "").strip()
    return bool(text) and not PLACEHOLDER.match(text)


def dicom_identifiers(path: Path) -> dict[str, str]:
    """{keyword: value} of the identifying attributes a DICOM file really carries.

    Read by the fast tag walker (dicom.fastheader); pydicom only for what it declines
    (big endian, deflate, no preamble). Raises IdentifiersUnchecked when neither can read it.
    """
    fast = read_fast(path, IDENTIFYING)
    if fast is None:
        found = _pydicom_identifiers(path)
    else:
        found = {keyword: _text(fast.get(keyword)) for keyword in DICOM_IDENTIFIERS
                 if fast.get(keyword) is not None}
    return {keyword: value for keyword, value in found.items() if real_value(value)}


def _text(value: object) -> str:
    return "\\".join(map(str, value)) if isinstance(value, list) else str(value)


def _pydicom_identifiers(path: Path) -> dict[str, str]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                             specific_tags=list(DICOM_IDENTIFIERS))
    except Exception as exc:  # pydicom raises many types for a file it cannot parse
        raise IdentifiersUnchecked(f"{path.name}: {exception_reason(exc)}") from exc
    return {keyword: str(ds.get(keyword)) for keyword in DICOM_IDENTIFIERS
            if ds.get(keyword) is not None}


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
