"""convkit's CSA reader gives what nibabel's csareader gives, on real and synthetic headers."""

from __future__ import annotations

import struct
import warnings

import pydicom
import pytest
from test_diffusion import csa2_header

from convkit.dicom.csa import CSAError, read_csa, scalar, vector

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # nibabel.nicom: "highly experimental"
    from nibabel.nicom import csareader


def nibabel_values(raw: bytes) -> dict[str, list]:
    """nibabel's parse in convkit's shape: {name: items} (text items as str)."""
    return {name: [item.decode("latin-1") if isinstance(item, bytes) else item
                   for item in tag["items"]]
            for name, tag in csareader.read(raw)["tags"].items()}


def csa1_header(tags: list[tuple[str, str, int, list[str]]]) -> bytes:
    """A CSA1 header (no 'SV10'; item length = first int - item count of tag 1)."""
    offset = len(tags[1][3]) if len(tags) > 1 else 0
    data = struct.pack("<2I", len(tags), 77)
    for name, vr, vm, items in tags:
        data += struct.pack("<64si4s3i", name.encode(), vm, vr.encode(), 0, len(items), 77)
        for item in items:
            text = item.encode() + b"\0" if item else b""
            data += struct.pack("<4i", len(text) + offset, len(text), 77, len(text))
            data += text + b"\0" * (-len(text) % 4)
    return data


def test_every_corpus_csa_header_equals_nibabel(corpus):
    """Image and series headers (the series one holds the whole ASCII protocol)."""
    checked = 0
    for path in sorted((corpus / "dicom").rglob("*")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, IsADirectoryError):
            continue
        for offset in (0x10, 0x20):
            try:
                raw = ds.get_private_item(0x0029, offset, "SIEMENS CSA HEADER").value
            except KeyError:
                continue
            assert read_csa(raw) == nibabel_values(raw), path
            checked += 1
    assert checked >= 8  # Siemens anatomical and the three dcm_qa mosaics


def test_csa2_values_and_accessors():
    raw = csa2_header([("B_value", "IS", [1000]),
                       ("DiffusionGradientDirection", "FD", [0.6, 0.8, 0.0]),
                       ("SequenceName", "SH", ["ep_b1000#1"])])
    csa = read_csa(raw)
    assert csa == nibabel_values(raw)
    assert scalar(csa, "B_value") == 1000 and isinstance(scalar(csa, "B_value"), int)
    assert vector(csa, "DiffusionGradientDirection", 3) == [0.6, 0.8, 0.0]
    assert scalar(csa, "SequenceName") == "ep_b1000#1"
    assert scalar(csa, "Absent") is None and vector(csa, "Absent", 3) is None
    with pytest.raises(CSAError):
        vector(csa, "DiffusionGradientDirection", 2)


def test_csa1_layout_equals_nibabel():
    raw = csa1_header([("EchoLinePosition", "IS", 1, []),  # nibabel needs tag 0 empty
                       ("SliceNormalVector", "FD", 3, ["0.0", "0.1", "0.99"]),
                       ("MosaicRefAcqTimes", "FD", 0, ["0", "52.5", "105", "", ""]),
                       ("ImaCoilString", "LO", 1, ["HEA;HEP"])])
    csa = read_csa(raw)
    assert csa == nibabel_values(raw)
    assert csa["MosaicRefAcqTimes"] == [0.0, 52.5, 105.0]  # an empty item ends the numbers
    assert csa["SliceNormalVector"] == [0.0, 0.1, 0.99]


@pytest.mark.parametrize("damage", ["truncated", "no tags", "not a number", "padding"])
def test_damaged_headers_raise(damage):
    raw = csa2_header([("B_value", "IS", [1000]), ("SliceNormalVector", "FD", [0.0, 0.0, 1.0])])
    if damage == "truncated":
        raw = raw[:len(raw) - 30]
    elif damage == "no tags":
        raw = raw[:8] + struct.pack("<2I", 0, 77) + raw[16:]
    elif damage == "not a number":
        raw = csa2_header([("B_value", "IS", ["b1000"])])
    else:  # an item past the value multiplicity with data in it
        raw = csa1_header([("A", "IS", 1, []), ("B", "IS", 1, ["2", "3"])])
    with pytest.raises(CSAError):
        read_csa(raw)
