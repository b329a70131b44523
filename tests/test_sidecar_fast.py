"""The sidecar's fields read by the tag walker (sidecar.clean_dataset) are pydicom's: on
every corpus file and on files made to be odd, either the walker's reading gives exactly
the fields pydicom's gives, with pydicom warning about nothing, or the file is left to
pydicom."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement

from convkit.dicom.dataset import read_dataset, warnings_caught
from convkit.dicom.dictionary import ENTRIES
from convkit.dicom.sidecar import SIDECAR_ELEMENTS, clean_dataset, dataset_fields
from convkit.testing.synthetic import regular_positions, write_series


def both_readings(path: Path) -> tuple[dict | None, dict, list[str]]:
    """(fields from clean_dataset or None when it declines, fields from pydicom, what
    pydicom warned about while giving them)."""
    fast = clean_dataset(path)
    with warnings_caught() as caught:
        reference = dataset_fields(read_dataset(path), 64, 64, True)
    return (None if fast is None else dataset_fields(fast, 64, 64, True)), reference, caught


def test_the_table_is_pydicoms_dictionary():
    """Every keyword the tag walker and the sidecar read, with its tag and VR."""
    assert set(SIDECAR_ELEMENTS) <= set(ENTRIES)
    for keyword, (tag, vr) in ENTRIES.items():
        assert (tag, vr) == (tag_for_keyword(keyword), dictionary_VR(tag)), keyword


def test_every_corpus_file_reads_the_same(corpus):
    files = [p for p in sorted((corpus / "dicom").rglob("*"))
             if p.is_file() and p.suffix not in (".gz", ".json", ".md") and p.name != "LICENSE"]
    taken = 0
    for path in files:
        fast, reference, caught = both_readings(path)
        if fast is not None:
            taken += 1
            assert fast == reference and not caught, path
    assert taken >= len(files) // 2  # the fast path is the usual one, not an exception


def make_file(folder: Path, **changes) -> Path:
    """A one-slice MR series whose file then gets `changes` (keyword -> (VR, value), as
    pydicom writes them, valid or not; "raw" -> (old bytes, new bytes): an edit of the file's
    bytes, for what pydicom would write otherwise)."""
    stored = np.zeros((1, 8, 8), dtype=np.int16)
    write_series(folder, stored, regular_positions(1), modality="MR")
    path = next(folder.iterdir())
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, (vr, value) in changes.items():
            if keyword == "raw":
                continue
            tag = tag_for_keyword(keyword)
            if tag is None:  # a file meta element
                ds.file_meta[keyword] = DataElement(tag_for_keyword(keyword[5:]), vr, value)
            else:
                ds[tag] = DataElement(tag, vr, value)
        ds.save_as(path)
    if "raw" in changes:
        old, new = changes["raw"]
        data = path.read_bytes()
        assert data.count(old) == 1
        path.write_bytes(data.replace(old, new))
    return path


ODD = {
    "DS of 17 characters": {"SliceThickness": ("DS", "1.234567890123456")},
    "IS written as a decimal": {"SeriesNumber": ("IS", "3.0")},
    "lower-case CS": {"BodyPartExamined": ("CS", "head")},
    "LO of 65 characters": {"ProtocolName": ("LO", "p" * 65)},
    "a Latin-1 name": {"SpecificCharacterSet": ("CS", "ISO_IR 100"),
                       "InstitutionName": ("LO", "Hôpital".encode("latin-1"))},
    "an ISO 2022 character set": {"SpecificCharacterSet": ("CS", "ISO 2022 IR 13")},
    "a known element written as UN": {
        "EchoTime": ("DS", "30"),
        "raw": (b"\x18\x00\x81\x00DS\x02\x0030", b"\x18\x00\x81\x00UN\x00\x00\x02\x00\x00\x0030")},
    "an infinite DS": {"RepetitionTime": ("DS", "1e400")},
    "a date with dashes": {"StudyDate": ("DA", "2020-01-02")},
    "a name of six components": {"PatientName": ("PN", "a^b^c^d^e^f")},
    "spaces inside a value list": {
        "PixelSpacing": ("DS", "0.5\\0.5"),
        "raw": (b"\x30\x00DS\x08\x000.5\\0.5 ", b"\x30\x00DS\x0a\x000.5 \\ 0.5 ")},
}


@pytest.mark.parametrize("case", ODD, ids=list(ODD))
def test_odd_values_are_left_to_pydicom(tmp_path, case):
    path = make_file(tmp_path, **ODD[case])
    fast, reference, _ = both_readings(path)
    assert fast is None, f"{case}: taken by the fast path as {fast}"
    assert reference  # pydicom still reads it (and reports what is odd)


FINE = {
    "several values": {"ImageType": ("CS", "ORIGINAL\\PRIMARY\\M\\ND"),
                       "WindowCenter": ("DS", "40\\400"), "WindowWidth": ("DS", "350\\1500")},
    "an empty value": {"ContrastBolusAgent": ("LO", "")},
    "an exponent and a sign": {"ImagingFrequency": ("DS", "+1.2775e2"),
                               "TableHeight": ("DS", "-.5")},
    "an empty item in a list": {"ImageType": ("CS", "DERIVED\\\\SECONDARY")},
    "a Latin-1 character set, ASCII values": {"SpecificCharacterSet": ("CS", "ISO_IR 100"),
                                              "PatientName": ("PN", "Doe^Jane")},
}


@pytest.mark.parametrize("case", FINE, ids=list(FINE))
def test_plain_values_take_the_fast_path_and_match(tmp_path, case):
    path = make_file(tmp_path, **FINE[case])
    fast, reference, caught = both_readings(path)
    assert fast is not None, case
    assert fast == reference and not caught
