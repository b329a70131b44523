"""The fast tag walker gives exactly the headers pydicom gives, or steps aside."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from test_diffusion import ORIENTATIONS, write_dwi

from convkit.dicom import header, scan
from convkit.dicom.fastheader import read_fast
from convkit.testing.synthetic import regular_positions, write_series

SYNTAXES = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2.4.80"]


def pydicom_header(path: Path) -> scan.SliceHeader:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return header._header_from_dataset(path, ds, str(ds.SOPClassUID))


def fast_header(path: Path) -> scan.SliceHeader:
    fast = read_fast(path)
    assert fast is not None, f"the fast path declined {path}"
    return header._header_from_dataset(path, fast, str(fast.SOPClassUID))


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
    outcome = header.read_header(path)
    assert isinstance(outcome, scan.FileRecord) and outcome.status == "unreadable"
    assert "truncated pixel data" in outcome.reason


def test_declines_what_it_does_not_cover(tmp_path):
    stored = np.zeros((1, 8, 8), dtype=np.int16)
    (path,) = write_series(tmp_path, stored, regular_positions(1),
                           transfer_syntax="1.2.840.10008.1.2.2")  # big endian
    assert read_fast(path) is None
    (tmp_path / "noise.dcm").write_bytes(bytes(range(256)) * 4)
    assert read_fast(tmp_path / "noise.dcm") is None


def comparable(headers: list[scan.SliceHeader]) -> list[dict]:
    """SliceHeaders as plain values (numpy arrays of diffusion and mosaic as lists)."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {name: plain(getattr(value, name)) for name in value.__dataclass_fields__}
        return value.tolist() if isinstance(value, np.ndarray) else value
    return [plain(header) for header in headers]


def expanded(path: Path, ds) -> list[scan.SliceHeader]:
    return header._expand(ds, header._header_from_dataset(path, ds, str(ds.SOPClassUID)))


def assert_fast_equals_pydicom(path: Path) -> None:
    fast = read_fast(path)
    assert fast is not None and header._fast_path_suffices(fast), f"fast path declined {path}"
    full = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    assert comparable(expanded(path, fast)) == comparable(expanded(path, full))


@pytest.mark.parametrize("syntax", SYNTAXES[:2], ids=["implicit", "explicit"])
@pytest.mark.parametrize("vendor", ["standard", "siemens", "philips", "ge"])
def test_diffusion_headers_match_pydicom(tmp_path, vendor, syntax):
    """Standard attributes and every vendor's private tags (CSA, Philips, GE) give the same
    b-values and directions through the fast path as through pydicom."""
    firsts = write_dwi(tmp_path, ORIENTATIONS["oblique"], vendor)
    paths = sorted(tmp_path.iterdir())
    assert len(paths) == 3 * len(firsts)
    for path in paths:
        if syntax != "1.2.840.10008.1.2.1":
            ds = pydicom.dcmread(path)
            ds.file_meta.TransferSyntaxUID = syntax
            ds.save_as(path, enforce_file_format=True)
        assert_fast_equals_pydicom(path)
    weighted = read_fast(firsts[1])
    parsed = header._header_from_dataset(firsts[1], weighted, str(weighted.SOPClassUID))
    # GE's logical-frame gradient is mapped with PatientPosition and the phase-encoding axis,
    # which the fast path reads too
    assert parsed.diffusion.bvalue > 0 and parsed.diffusion.direction_lps is not None


@pytest.mark.parametrize("creator", [None, "Some Other Creator"], ids=["lost", "other"])
def test_private_elements_without_their_creator(tmp_path, creator):
    """Anonymised files: elements at the usual block are read when no creator is left, and
    ignored when another creator owns the block, exactly as through pydicom."""
    path = write_dwi(tmp_path, ORIENTATIONS["axial"], "philips")[1]  # b = 1000, directional
    ds = pydicom.dcmread(path)
    for group in (0x2001, 0x2005):
        del ds[(group, 0x0010)]
        if creator:
            ds.add_new((group, 0x0010), "LO", creator)
    ds.save_as(path)
    assert_fast_equals_pydicom(path)
    header = fast_header(path)
    assert (header.diffusion is None) == (creator is not None)


def test_sequences_with_needed_content_go_to_pydicom(tmp_path):
    stored = np.zeros((1, 8, 8), dtype=np.int16)
    (path,) = write_series(tmp_path, stored, regular_positions(1), modality="MR")
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.DiffusionBValue = 1000.0
    ds.MRDiffusionSequence = Sequence([item])
    ds.save_as(path)
    fast = read_fast(path)
    assert fast.sequences == {"MRDiffusionSequence"} and not header._fast_path_suffices(fast)
    assert header.read_header(path)[0].diffusion.bvalue == 1000.0  # read by pydicom


def test_corpus_headers_match_pydicom(corpus):
    """Every file of the corpus that the fast path takes (all single-frame CT and MR,
    Siemens mosaics included): identical headers, tile by tile."""
    checked = 0
    for path in sorted((corpus / "dicom").rglob("*")):
        fast = read_fast(path) if path.is_file() else None
        if fast is None or not header._fast_path_suffices(fast):
            continue
        assert_fast_equals_pydicom(path)
        checked += 1
    assert checked >= 100  # everything but multi-frame, big endian and non-DICOM files


def scan_summary(result: scan.ScanResult) -> tuple:
    return ([(g.label, g.split_suffix, comparable(g.headers)) for g in result.series],
            [(r.path, r.status, r.reason, r.series, r.series_uid) for r in result.files])


def test_worker_processes_give_what_one_process_gives(corpus, tmp_path, monkeypatch):
    """The parallel scan (paths sent as text, headers returned as tuples) loses nothing:
    the corpus plus an unreadable and a non-DICOM file, scanned in 2 workers and in-process."""
    tree = tmp_path / "tree"
    shutil.copytree(corpus / "dicom", tree / "dicom")
    source = next((tree / "dicom" / "d2n" / "anatomical_001" / "series").iterdir())
    (tree / "cut.dcm").write_bytes(source.read_bytes()[:-100])
    (tree / "notes.txt").write_text("not an image")
    serial = scan.scan_folder(tree, jobs=1)
    monkeypatch.setattr(scan, "PARALLEL_MIN_FILES", 10)
    monkeypatch.setattr(scan, "_CHUNK", 7)  # many chunks, and a short last one
    handed = []
    parallel = scan.scan_folder(tree, jobs=2, while_waiting=handed.extend)
    assert handed == list(scan.iter_files(tree))  # the idle-time hook sees every path
    assert len(serial.files) == len(handed) > 100
    assert {r.status for r in serial.files} >= {"used", "unreadable", "not-dicom"}
    assert scan_summary(parallel) == scan_summary(serial)
