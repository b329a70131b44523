"""Hardening of DICOM reading and nii2dicom's writer (issue 18): nothing a DICOM file can
do makes convkit crash (exit 70), hang, write a wrong volume, or print a Python warning.

Each test breaks a small synthetic series (convkit.testing.synthetic) the way the fuzz
campaign did, runs dicom2nii (or nii2dicom) through the CLI and checks the documented exit
code and a one-line message naming the file and the attribute; then runs `audit` on the
same input and checks it reports an error finding instead of crashing. No traceback and
no Python warning (nor the CLI's "Note:" form of one) may reach stderr.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import run_convkit_in_process
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGLSLossless, RLELossless

from convkit import geometry
from convkit.dicom.write import SeriesIdentity, write_dicom_series
from convkit.errors import RefusedError
from convkit.nii2dicom import volume_to_dicom
from convkit.testing.synthetic import regular_positions, write_enhanced, write_series
from convkit.volume import Volume

LABEL = "1_synthetic"  # {SeriesNumber}_{SeriesDescription} of write_series' defaults


# ------------------------------------------------------------------------------ helpers


def make_series(folder: Path, n: int = 3, rows: int = 4, cols: int = 5, **kwargs) -> list[Path]:
    """A small CT series, files in slice order (IM00000.dcm ...)."""
    stored = (np.arange(n * rows * cols).reshape(n, rows, cols) % 97).astype(np.int16)
    return write_series(folder, stored, regular_positions(n), shuffle_names=False, **kwargs)


def text_value(text: str) -> bytes:
    data = text.encode("ascii")
    return data + b" " if len(data) % 2 else data


def set_element(path: Path, keyword: str, value: bytes, vr: str | None = None) -> None:
    """Replace (or insert, in tag order) a top-level short-VR element of an explicit VR
    little endian file, byte for byte: values pydicom would refuse to write (inf, nan,
    1e400, odd lengths) included."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    vr = vr or pydicom.datadict.dictionary_VR(tag)
    data = path.read_bytes()
    element = struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value
    position = 132 + 12 + struct.unpack_from("<I", data, 140)[0]  # after the meta group
    while position < len(data):
        group, number, this_vr = struct.unpack_from("<HH2s", data, position)
        if this_vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF", b"UC", b"UR"):
            length, header = struct.unpack_from("<I", data, position + 8)[0], 12
        else:
            length, header = struct.unpack_from("<H", data, position + 6)[0], 8
        here = (group << 16) | number
        if here >= tag:
            end = position + header + length if here == tag else position
            path.write_bytes(data[:position] + element + data[end:])
            return
        if length == 0xFFFFFFFF:
            raise ValueError("set_element does not skip undefined lengths")
        position += header + length
    raise ValueError(f"{keyword} not placed")


def set_text(path: Path, keyword: str, text: str) -> None:
    set_element(path, keyword, text_value(text))


def edit(path: Path, **attributes) -> None:
    """Set attributes with pydicom (valid values) and save."""
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def assert_clean(done) -> None:
    """No traceback and no Python warning, raw or as the CLI's 'Note:' line."""
    for stream in (done.stdout, done.stderr):
        assert "Traceback" not in stream, stream
        assert "Warning" not in stream, stream
    assert "Note:" not in done.stderr, done.stderr


def message_line(done) -> str:
    """The line of the output (stderr, then stdout) that says what failed."""
    lines = [line for line in (done.stderr + done.stdout).splitlines()
             if line.startswith(("Error:", "Failed:", "Refused:"))]
    assert lines, done.stderr + done.stdout
    return lines[0]


def audit_findings(cli, folder: Path) -> list[dict]:
    """audit --json on folder: its error findings (exit 1 with --fail-on error)."""
    done = cli("audit", folder, "--json", "--fail-on", "error", check_code=1)
    assert_clean(done)
    return [f for f in json.loads(done.stdout)["findings"] if f["severity"] == "error"]


def assert_audit_reports(cli, folder: Path, code: str, *words: str) -> None:
    findings = audit_findings(cli, folder)
    matching = [f for f in findings if f["code"] == code and all(w in f["message"] for w in words)]
    assert matching, findings


def dicom2nii(cli, folder: Path, out: Path, code: int):
    done = cli("dicom2nii", folder, out, check_code=code)
    assert_clean(done)
    if code in (3, 4, 5):  # nothing written
        assert not out.exists() or not any(out.iterdir())
    return done


# ------------------------------------------------- 1. internal errors: non-finite numbers


NONFINITE = [
    ("ImagePositionPatient", "0\\0\\-inf"),
    ("ImagePositionPatient", "nan\\0\\1"),
    ("PixelSpacing", "inf\\1"),
    ("PixelSpacing", "1\\nan"),
    ("SliceThickness", "inf"),
    ("RescaleSlope", "nan"),
    ("RescaleIntercept", "inf"),
    ("RescaleIntercept", "-1e400"),
]


@pytest.mark.parametrize(("keyword", "value"), NONFINITE)
def test_nonfinite_value_in_one_file_fails_its_series(cli, tmp_path, keyword, value):
    paths = make_series(tmp_path / "in", rescale_slope=1.0, rescale_intercept=0.0)
    set_text(paths[1], keyword, value)
    done = dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3)
    line = message_line(done)
    assert paths[1].name in line and keyword in line and "not a finite number" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", paths[1].name, keyword)
    assert_audit_reports(cli, tmp_path / "in", "series.incomplete", keyword)


@pytest.mark.parametrize("value", ["inf", "1e400", "-Infinity"])
def test_is_value_not_finite_makes_only_that_file_unreadable(cli, tmp_path, value):
    """An IS of inf used to abort the whole scan (OverflowError, exit 70)."""
    broken = make_series(tmp_path / "in" / "a", series_number=1, seed=1)
    make_series(tmp_path / "in" / "b", series_number=2, seed=2)
    set_text(broken[2], "InstanceNumber", value)
    done = dicom2nii(cli, tmp_path / "in", tmp_path / "out", 6)  # one failed, one written
    line = message_line(done)
    assert broken[2].name in line and "InstanceNumber" in line, line
    assert (tmp_path / "out" / "2_synthetic.nii.gz").exists()
    assert not (tmp_path / "out" / "1_synthetic.nii.gz").exists()
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", broken[2].name,
                         "InstanceNumber")


def test_is_value_not_finite_in_an_enhanced_file(cli, tmp_path):
    """pydicom's own IS conversion raises OverflowError for 'inf' (exit 70 before)."""
    n = 3
    path = write_enhanced(tmp_path / "in" / "e.dcm", np.zeros((n, 4, 5), np.int16),
                          regular_positions(n), np.tile([1.0, 0, 0, 0, 1, 0], (n, 1)))
    set_text(path, "InstanceNumber", "1e400")
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert path.name in line and "InstanceNumber '1e400' is not a finite number" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", "InstanceNumber")


def test_huge_finite_position_is_corrupt(cli, tmp_path):
    """1e308 is finite, but the geometry's arithmetic overflows on it (exit 70)."""
    paths = make_series(tmp_path / "in")
    set_text(paths[1], "ImagePositionPatient", "1e308\\0\\1")
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[1].name in line and "ImagePositionPatient" in line and "beyond" in line
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", "ImagePositionPatient")


@pytest.mark.parametrize("value", ["0\\1", "-0.5\\0.5"])
def test_pixel_spacing_not_positive_is_corrupt(cli, tmp_path, value):
    """PixelSpacing 0 crashed the audit (None joined into the axis codes); -0.5 silently
    flipped an axis of the written volume."""
    paths = make_series(tmp_path / "in")
    for path in paths:
        set_text(path, "PixelSpacing", value)
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[0].name in line and "PixelSpacing" in line and "not positive" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", "PixelSpacing")


def test_rescale_beyond_float32_is_corrupt(cli, tmp_path):
    """A slope of 1e300 was written as an infinite scl_slope (exit 0, wrong values)."""
    paths = make_series(tmp_path / "in", rescale_slope=1.0, rescale_intercept=0.0)
    for path in paths:
        set_text(path, "RescaleSlope", "1e300")
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[0].name in line and "RescaleSlope" in line and "float32" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", "RescaleSlope")


# ------------------------------------------------------ 1. degenerate orientations


@pytest.mark.parametrize(("value", "why"), [("0\\0\\0\\0\\1\\0", "zero-length"),
                                            ("1\\0\\0\\1\\0\\0", "parallel"),
                                            ("2\\0\\0\\0\\2\\0", "not 1")])
def test_degenerate_orientation_is_refused(cli, tmp_path, value, why):
    """LinAlgError / OrientationError (exit 70) before."""
    paths = make_series(tmp_path / "in")
    for path in paths:
        set_text(path, "ImageOrientationPatient", value)
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 4))
    assert "ImageOrientationPatient" in line and "is degenerate" in line and why in line, line
    assert paths[0].name in line
    assert_audit_reports(cli, tmp_path / "in", "series.unsupported", "is degenerate")


def test_one_degenerate_orientation_refuses_the_whole_series(cli, tmp_path):
    """The broken slice is not split off into a group of its own (the rest written
    without it)."""
    paths = make_series(tmp_path / "in", n=4)
    set_text(paths[3], "ImageOrientationPatient", "1\\0\\0\\1\\0\\0")
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 4))
    assert paths[3].name in line and "is degenerate" in line, line


def test_orientation_nearly_unit_is_normalised_and_noted(cli, tmp_path):
    paths = make_series(tmp_path / "in")
    for path in paths:
        set_text(path, "ImageOrientationPatient", "1.0005\\0\\0\\0\\1\\0")
    done = dicom2nii(cli, tmp_path / "in", tmp_path / "out", 0)
    assert "ImageOrientationPatient normalised" in done.stdout
    sidecar = json.loads((tmp_path / "out" / f"{LABEL}.json").read_text())
    assert any("normalised" in note for note in sidecar["ConvkitNotes"])
    affine = nib.load(tmp_path / "out" / f"{LABEL}.nii.gz").affine
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [1, 1, 1], atol=1e-6)


def test_geometry_names_degenerate_axes():
    """axis_codes joined nibabel's None into a string (TypeError) for a zero-length axis."""
    assert geometry.axis_codes(np.diag([1.0, 0.0, 1.0, 1.0])) == "???"
    assert geometry.axis_codes(np.full((4, 4), np.nan)) == "???"
    with np.errstate(all="raise"):  # no RuntimeWarning (it would reach stderr)
        assert np.isnan(geometry.obliquity_degrees(np.diag([1.0, 0.0, 1.0, 1.0])))
    with pytest.raises(geometry.DegenerateOrientation, match="degenerate"):
        geometry.plane_axes([0, 0, 0, 0, 1, 0])


def test_volume_with_zero_length_axis_is_refused_by_the_writer(tmp_path):
    """0 slices used to be 'written' as nothing at all; 0 rows as invalid DICOM."""
    for shape in ((0, 3, 4), (2, 0, 4), (2, 3, 0)):
        with pytest.raises(RefusedError, match="cannot be written"):
            write_dicom_series(Volume(np.zeros(shape, np.int16), np.eye(4)), tmp_path,
                               SeriesIdentity())
    assert not any(tmp_path.iterdir())
    with pytest.raises(RefusedError, match="holds no voxels"):  # 4D: no time point at all
        volume_to_dicom(Volume(np.zeros((2, 3, 4, 0), np.int16), np.eye(4)), tmp_path / "out")
    assert not any(tmp_path.iterdir())


def test_zero_rows_is_unreadable_and_audited(cli, tmp_path):
    paths = make_series(tmp_path / "in")
    for path in paths:
        set_element(path, "Rows", struct.pack("<H", 0))
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[0].name in line and "Rows" in line and "no pixels" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", "Rows")


# ---------------------------------------------------------- 1. structure: nesting, lengths


def nested_sequence(depth: int) -> bytes:
    """ReferencedSeriesSequence (0008,1115) nested depth deep, undefined lengths."""
    opening = struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF) + \
        struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return opening * depth + closing * depth


def insert_nested(path: Path, depth: int) -> None:
    """The nested sequence placed in tag order (before the first element past (0008,1115))."""
    marker = "9.9.9.9"
    ds = pydicom.dcmread(path)
    ds.ReferencedSeriesSequence = pydicom.Sequence([pydicom.Dataset()])
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = marker
    ds.save_as(path)
    data = path.read_bytes()
    start = data.index(struct.pack("<HH2s", 0x0008, 0x1115, b"SQ"))
    length = struct.unpack_from("<I", data, start + 8)[0]
    end = start + 12 + length if length != 0xFFFFFFFF else \
        data.index(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0), start) + 8
    assert marker.encode() in data[start:end]
    path.write_bytes(data[:start] + nested_sequence(depth) + data[end:])


def test_deeply_nested_sequences_make_the_file_unreadable(cli, tmp_path):
    """pydicom's RecursionError (exit 70 on the header path; the audit saw nothing)."""
    paths = make_series(tmp_path / "in")
    insert_nested(paths[1], 3000)
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[1].name in line and "nested more than 64 levels" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", "nested")


def test_deeply_nested_sequences_without_preamble(cli, tmp_path):
    """A file the tag walker declines (no preamble): pydicom's RecursionError is a reason."""
    paths = make_series(tmp_path / "in")
    insert_nested(paths[1], 3000)
    paths[1].write_bytes(paths[1].read_bytes()[132:])  # no preamble, no 'DICM'
    done = dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3)
    assert "nested too deeply" in message_line(done)
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", "nested too deeply")


def test_enhanced_file_with_odd_length_value_is_unreadable(cli, tmp_path):
    """pydicom's BytesLengthException on the header path (enhanced files): exit 70."""
    n = 3
    orientations = np.tile([1.0, 0, 0, 0, 1, 0], (n, 1))
    path = write_enhanced(tmp_path / "in" / "e.dcm", np.zeros((n, 4, 5), np.int16),
                          regular_positions(n), orientations)
    set_element(path, "Columns", b"\x05\x00\x00")  # a US of 3 bytes
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert path.name in line and "Columns (0028,0011)" in line and "odd length" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", path.name)


def test_huge_element_length_is_truncation_not_a_memory_error(cli, tmp_path):
    """A length of 0xFFFFFFF0 became a 4 GB read buffer (MemoryError under a limit), or a
    file pydicom quietly read as 'no image' while its series was written without it."""
    paths = make_series(tmp_path / "in", n=4)
    data = bytearray(paths[2].read_bytes())
    at = data.index(struct.pack("<HH2s", 0x0028, 0x0002, b"US"))
    data[at + 4:at + 8] = b"UN\x00\x00"  # UN: a 4-byte length follows
    data[at + 8:at + 8] = struct.pack("<I", 0xFFFFFFF0)
    paths[2].write_bytes(bytes(data))
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[2].name in line and "truncated" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.truncated", paths[2].name)


def test_deflated_file_cut_short_fails_its_series(cli, tmp_path):
    """zlib.error from pydicom's inflating (exit 70), and the series written without it."""
    paths = make_series(tmp_path / "in", n=4, transfer_syntax=DeflatedExplicitVRLittleEndian)
    paths[3].write_bytes(paths[3].read_bytes()[:-60])
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[3].name in line and "truncated stream" in line, line
    assert_audit_reports(cli, tmp_path / "in", "series.incomplete", paths[3].name)


# ----------------------------------------------------------- 1 and 2. sizes before allocating


def test_a_9kb_file_claiming_2_31_frames_is_read_at_once(cli, tmp_path):
    """Every claimed frame became a SliceHeader before any size check: a hang."""
    paths = make_series(tmp_path / "in", n=1, rows=40, cols=100)
    edit(paths[0], NumberOfFrames=2147483647)
    assert paths[0].stat().st_size < 10_000
    start = time.monotonic()
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert time.monotonic() - start < 10
    assert paths[0].name in line and "NumberOfFrames 2147483647" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.unreadable", "NumberOfFrames")


def test_frames_are_checked_against_the_pixel_data_before_expanding(cli, tmp_path):
    """50 million claimed frames: refused from the pixel data's length, not after making
    50 million headers. Native data by bytes, encapsulated data by fragments."""
    native = make_series(tmp_path / "native", n=1)
    edit(native[0], NumberOfFrames=50_000)
    line = message_line(dicom2nii(cli, tmp_path / "native", tmp_path / "out1", 3))
    assert "truncated pixel data" in line and native[0].name in line, line
    rle = make_series(tmp_path / "rle", n=1, transfer_syntax=RLELossless)
    edit(rle[0], NumberOfFrames=50_000)
    line = message_line(dicom2nii(cli, tmp_path / "rle", tmp_path / "out2", 3))
    assert "1 fragment(s) for NumberOfFrames 50000" in line, line
    assert_audit_reports(cli, tmp_path / "rle", "file.truncated", "NumberOfFrames")


def test_65535_square_compressed_image_is_refused_before_allocating(cli, tmp_path):
    """A tiny JPEG-LS file claiming 65535 x 65535 pixels: the bytes it would need are
    stated and nothing is allocated (MemoryError, or worse, before)."""
    paths = make_series(tmp_path / "in", n=1, rows=16, cols=16, transfer_syntax=JPEGLSLossless)
    edit(paths[0], Rows=65535, Columns=65535)
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert "65535 x 65535" in line and "would need 24 GiB, limit 16 GiB" in line, line
    assert_audit_reports(cli, tmp_path / "in", "series.unsupported", "would need")


def test_rle_too_short_for_its_image_is_truncated(cli, tmp_path):
    """RLE compresses at most 64:1: a 30000 x 30000 claim in 100 bytes is not decoded (the
    decoder would allocate 1.8 GB per file)."""
    paths = make_series(tmp_path / "in", n=2, transfer_syntax=RLELossless)
    for path in paths:
        edit(path, Rows=30000, Columns=30000)
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert "RLE data cannot hold 30000 x 30000" in line, line


# --------------------------------------------------------------- 3. exit 0 with a wrong output


def test_inf_intercept_in_a_per_slice_scaled_series(cli, tmp_path):
    """Per-slice rescale: one slice's intercept inf was written as an all-inf slice."""
    paths = make_series(tmp_path / "in", rescale_slope=1.0, rescale_intercept=[0.0, 1.0, 2.0])
    set_text(paths[2], "RescaleIntercept", "inf")
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[2].name in line and "RescaleIntercept" in line, line
    assert_audit_reports(cli, tmp_path / "in", "series.incomplete", "RescaleIntercept")


def cut_fragment(path: Path, fraction: float) -> None:
    """Cut the last fragment of an encapsulated file, keeping the items well formed."""
    ds = pydicom.dcmread(path)
    fragment = list(generate_fragments(ds.PixelData))[-1]
    ds.PixelData = encapsulate([fragment[:int(len(fragment) * fraction) & ~1]])
    ds.save_as(path)


@pytest.mark.parametrize("fraction", [0.33, 0.9, 0.99])
def test_truncated_jpeg_ls_fragment_fails_the_series(cli, tmp_path, fraction):
    """A cut JPEG-LS fragment decoded without error, the lost part made up (exit 0)."""
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4000, (3, 32, 32)).astype(np.int16)
    paths = write_series(tmp_path / "in", stored, regular_positions(3), shuffle_names=False,
                         transfer_syntax=JPEGLSLossless)
    cut_fragment(paths[1], fraction)
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[1].name in line and "end-of-image marker" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.truncated", "end-of-image marker")


def test_truncated_jpeg_lossless_fragment_fails_the_series(cli, corpus, tmp_path):
    """The fuzz campaign's case: a third of a JPEG lossless fragment gone, exit 0 before."""
    source = corpus / "dicom" / "d2n" / "generic_compressed_jpeg_001" / "series"
    folder = tmp_path / "in"
    folder.mkdir()
    files = sorted(source.iterdir())
    for path in files[:-1]:
        (folder / path.name).symlink_to(path)
    broken = folder / files[-1].name
    shutil.copyfile(files[-1], broken)
    cut_fragment(broken, 2 / 3)
    line = message_line(dicom2nii(cli, folder, tmp_path / "out", 3))
    assert broken.name in line and "end-of-image marker" in line, line
    assert_audit_reports(cli, folder, "file.truncated", "end-of-image marker")


def test_compressed_file_cut_short_is_seen_by_the_audit(cli, tmp_path):
    """A file cut inside its encapsulated pixel data: dicom2nii failed it at decoding, but
    the audit (headers only) said nothing."""
    paths = make_series(tmp_path / "in", transfer_syntax=RLELossless)
    paths[1].write_bytes(paths[1].read_bytes()[:-20])
    line = message_line(dicom2nii(cli, tmp_path / "in", tmp_path / "out", 3))
    assert paths[1].name in line and "truncated pixel data" in line, line
    assert_audit_reports(cli, tmp_path / "in", "file.truncated", paths[1].name)


# ------------------------------------------------------------------ 4. warnings are notes


def test_enhanced_file_converts_without_a_warning(cli, tmp_path):
    """pydicom warned about 'FrameTypeSequence' (not a keyword) on every enhanced file."""
    n = 3
    write_enhanced(tmp_path / "in" / "e.dcm", np.zeros((n, 4, 5), np.int16),
                   regular_positions(n), np.tile([1.0, 0, 0, 0, 1, 0], (n, 1)))
    done = dicom2nii(cli, tmp_path / "in", tmp_path / "out", 0)
    assert "pydicom" not in done.stdout


def test_pydicom_warnings_become_notes(cli, tmp_path):
    """An unknown character set: pydicom's UserWarning is a note of the volume (table and
    sidecar), never a line on stderr."""
    paths = make_series(tmp_path / "in")
    for path in paths:
        set_text(path, "SpecificCharacterSet", "ISO_IR 999")
    done = dicom2nii(cli, tmp_path / "in", tmp_path / "out", 0)
    assert "Unknown encoding 'ISO_IR 999'" in done.stdout
    sidecar = json.loads((tmp_path / "out" / f"{LABEL}.json").read_text())
    assert any("Unknown encoding" in note for note in sidecar["ConvkitNotes"])


# ------------------------------------------------------------------------ nii2dicom's writer


def test_nii2dicom_values_no_rescale_can_hold_are_refused(cli, tmp_path):
    """Float values spanning +-1.7e308: the slope was inf, formatting it as DS a ValueError."""
    data = np.zeros((4, 3, 2), np.float64)
    data[0, 0, 0], data[1, 1, 1] = -1.7e308, 1.7e308
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "in.nii")
    done = run_convkit_in_process("nii2dicom", tmp_path / "in.nii", tmp_path / "out",
                                  check_code=4)
    assert_clean(done)
    assert "no 16-bit rescale holds that range" in message_line(done)
    assert not (tmp_path / "out").exists()


def test_nii2dicom_nonfinite_sidecar_number_is_refused(cli, tmp_path):
    """A sidecar EchoTime of Infinity became a DS ValueError (exit 70)."""
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2), np.int16), np.eye(4)), tmp_path / "in.nii")
    (tmp_path / "in.json").write_text('{"EchoTime": Infinity, "RepetitionTime": 2}')
    done = cli("nii2dicom", tmp_path / "in.nii", tmp_path / "out", "--modality", "MR",
               check_code=4)
    assert_clean(done)
    line = message_line(done)
    assert "EchoTime would be inf" in line, line
    assert not (tmp_path / "out").exists()


def test_nii2dicom_disk_full_is_an_output_error_and_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC while pydicom writes an element came back re-raised by pydicom with the tag
    and a whole traceback in its text, and so in convkit's message."""
    import pydicom.filewriter
    from pydicom.valuerep import VR

    nib.save(nib.Nifti1Image(np.arange(240, dtype=np.int16).reshape(6, 8, 5), np.eye(4)),
             tmp_path / "in.nii")

    def disk_full(fp, element, *args) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setitem(pydicom.filewriter.writers, VR.OW, (disk_full, None))  # pixel data
    out = tmp_path / "out"
    done = run_convkit_in_process("nii2dicom", tmp_path / "in.nii", out, check_code=5)
    assert_clean(done)
    line = message_line(done)
    assert str(out) in line and os.strerror(errno.ENOSPC) in line, line
    assert "With tag" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2  # the error and its hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii"]  # no staging left


def test_single_file_audit_of_a_degenerate_orientation(cli, tmp_path):
    """`audit FILE` summarises one file's header: a degenerate ImageOrientationPatient is
    shown as such (it raised through geometry.plane_axes, exit 70)."""
    first = make_series(tmp_path / "in")[0]
    edit(first, ImageOrientationPatient=[0, 0, 0, 0, 0, 0])
    done = cli("audit", first, "--json", check_code=0)
    assert_clean(done)
    header = json.loads(done.stdout)["header"]
    assert header["orientation"].startswith("degenerate (ImageOrientationPatient 0\\0\\0")


def walk_order(root: Path) -> list[Path]:
    """What iter_files gave when it used os.walk (top-down, sorted names)."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        found += [Path(folder) / name for name in sorted(names)]
    return found


def test_iter_files_keeps_the_order_and_links_of_os_walk(tmp_path):
    from convkit.dicom.scan import iter_files

    for folder in ("b", "a/c", "a/b", "z"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("b/2", "b/1", "a/x", "a/c/y", "a/b/y", "top", "z/w"):
        (tmp_path / name).write_text(name)
    (tmp_path / "link_to_folder").symlink_to(tmp_path / "a")  # listed as a folder, not entered
    (tmp_path / "link_to_file").symlink_to(tmp_path / "top")
    (tmp_path / "broken").symlink_to(tmp_path / "missing")
    assert list(iter_files(tmp_path)) == walk_order(tmp_path)
    assert tmp_path / "broken" in list(iter_files(tmp_path))


def test_a_tree_1200_folders_deep_is_walked(cli, tmp_path):
    """os.walk recursed once per level: RecursionError (exit 70) past ~1000 levels."""
    deepest = tmp_path / "in"
    deepest.mkdir()
    for _ in range(1200):  # one level at a time: pathlib's mkdir(parents=True) recurses too
        deepest = deepest / "d"
        os.mkdir(deepest)
    make_series(deepest)
    try:
        done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
        assert_clean(done)
        assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 1
    finally:  # bottom up: shutil.rmtree (pytest's clean-up) recurses once per level too
        for name in os.listdir(deepest):
            os.remove(deepest / name)
        while deepest != tmp_path:
            os.rmdir(deepest)
            deepest = deepest.parent


def test_an_element_whose_vr_is_no_vr_makes_its_file_unreadable(cli, tmp_path):
    """Explicit VR bytes that are no VR: pydicom raises NotImplementedError when the element
    is read (was exit 70); the file is unreadable and its series fails (exit 3)."""
    files = make_series(tmp_path / "in")
    data = files[1].read_bytes()
    tag = b"\x18\x00\x50\x00DS"  # SliceThickness, explicit VR little endian
    assert data.count(tag) == 1
    files[1].write_bytes(data.replace(tag, b"\x18\x00\x50\x00\x44\x86"))
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=3)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert files[1].name in done.stderr
