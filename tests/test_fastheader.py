"""The fast tag walker gives exactly the headers pydicom gives, or steps aside."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from convkit.dicom import scan
from convkit.dicom.fastheader import read_fast
from convkit.synthetic import regular_positions, write_series

SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2.4.80"]


def pydicom_header(path: Path) -> scan.SliceHeader:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return scan._header_from_dataset(path, ds, str(ds.SOPClassUID))


def fast_header(path: Path) -> scan.SliceHeader:
    fast = read_fast(path)
    assert fast is not None, f"the fast path declined {path}"
    return scan._header_from_dataset(path, fast, str(fast.SOPClassUID))


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_same_header_as_pydicom(tmp_path, syntax):
    stored = np.random.default_rng(2).integers(-1000, 2000, (3, 64, 48)).astype(np.int16)
    paths = write_series(tmp_path, stored, regular_positions(3, (0.6, 0.8, 0, 0, 0, -1), spacing=2),
                         orientation=(0.6, 0.8, 0, 0, 0, -1), rescale_intercept=-1024,
                         transfer_syntax=syntax, times=[1.5, 2.5, 3.5],
                         extra={"GantryDetectorTilt": "12.5", "ConvolutionKernel": "B30f",
                                "SeriesDescription": "Thorax ç/é"})
    for path in paths:
        assert dataclasses.asdict(fast_header(path)) == dataclasses.asdict(pydicom_header(path))


def test_sequences_of_undefined_length_are_skipped(tmp_path):
    stored = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    paths = write_series(tmp_path, stored, regular_positions(2))
    ds = pydicom.dcmread(paths[0])
    inner = Dataset()
    inner.CodeValue, inner.CodeMeaning = "123", "x" * 300
    nested = Dataset()
    nested.ConceptNameCodeSequence = Sequence([inner, inner])
    ds.ReferencedImageSequence = Sequence([nested, nested])  # (0008,1140): before what we read
    ds["ReferencedImageSequence"].is_undefined_length = True
    for item in ds.ReferencedImageSequence:
        item.is_undefined_length_sequence_item = True
    ds.save_as(paths[0])
    header = fast_header(paths[0])
    assert header.rows == 8 and header.series_instance_uid == str(ds.SeriesInstanceUID)
    assert dataclasses.asdict(header) == dataclasses.asdict(pydicom_header(paths[0]))


def test_truncation_is_measured_from_the_pixel_data_element(tmp_path):
    stored = np.zeros((1, 32, 32), dtype=np.int16)
    (path,) = write_series(tmp_path, stored, regular_positions(1))
    path.write_bytes(path.read_bytes()[:-10])  # ten bytes short: file size alone cannot tell
    outcome = scan.read_header(path)
    assert isinstance(outcome, scan.FileRecord) and outcome.status == "unreadable"
    assert "truncated pixel data" in outcome.reason


def test_declines_what_it_does_not_cover(tmp_path):
    stored = np.zeros((1, 8, 8), dtype=np.int16)
    (path,) = write_series(tmp_path, stored, regular_positions(1),
                           transfer_syntax="1.2.840.10008.1.2.2")  # big endian
    assert read_fast(path) is None
    (tmp_path / "noise.dcm").write_bytes(bytes(range(256)) * 4)
    assert read_fast(tmp_path / "noise.dcm") is None


def test_corpus_headers_match_pydicom(corpus):
    """Every single-frame file of the corpus that the fast path takes: identical headers."""
    checked = 0
    for path in sorted((corpus / "dicom").rglob("*")):
        fast = read_fast(path) if path.is_file() else None
        if fast is None or not scan._fast_path_suffices(fast):
            continue
        assert dataclasses.asdict(fast_header(path)) == dataclasses.asdict(pydicom_header(path))
        checked += 1
    assert checked >= 16  # the four CT cases (the MR files need pydicom for vendor attributes)
