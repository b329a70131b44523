"""The fast conversion paths give exactly what the straightforward ones give.

Native pixel data are read straight from the file into the volume (pixels.read_native)
instead of through pydicom's pixel_array, and .nii.gz files are deflated on every core
(formats.deflate). The references here are the straightforward paths: pydicom decoding
every file (reads_directly patched to say no) and CPython's gzip reading what was written.
"""

from __future__ import annotations

import gzip
import io
import threading
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from convkit.dicom import pixels
from convkit.dicom.plan import ConvertOptions, plan_series
from convkit.dicom.scan import scan_folder
from convkit.errors import RefusedError, UnreadableFileError
from convkit.formats import deflate
from convkit.testing.synthetic import regular_positions, write_enhanced, write_series


def decoded_both_ways(folder: Path, monkeypatch: pytest.MonkeyPatch,
                      ) -> tuple[np.ndarray, np.ndarray, list, list]:
    """read_pixels of the one series in folder: fast, then with pydicom decoding every file."""
    plan = plan_series(scan_folder(folder).series[0], ConvertOptions())
    fast = pixels.read_pixels(plan)
    with monkeypatch.context() as patch:
        patch.setattr(pixels, "reads_directly", lambda header: False)
        reference = pixels.read_pixels(plan)
    return fast[0], reference[0], list(fast[1:]), list(reference[1:])


def overwrite_high_bits(paths: list[Path], bits: int) -> None:
    """Set the bits above BitsStored in some pixels, as some scanners leave them: pydicom
    masks them (unsigned) or sign-extends (signed); the fast path must do the same."""
    for path in paths:
        ds = pydicom.dcmread(path)
        raw = np.frombuffer(ds.PixelData, "<u2").copy()
        raw[::3] |= np.uint16(((1 << (16 - bits)) - 1) << bits)
        raw[1::5] = (raw[1::5] & np.uint16((1 << bits) - 1)) | np.uint16(0x5000)
        ds.PixelData = raw.tobytes()
        ds.save_as(path)


@pytest.mark.parametrize(("dtype", "bits_stored", "syntax", "shape"), [
    ("int16", None, None, (6, 9, 13)),
    ("uint16", 12, None, (5, 16, 16)),
    ("int16", 12, None, (5, 7, 10)),
    ("uint8", None, None, (4, 6, 8)),
    ("int32", None, ImplicitVRLittleEndian, (3, 5, 4)),
    ("uint8", None, None, (3, 5, 7)),  # odd pixel count: padded, so pydicom reads it
    ("int16", None, RLELossless, (3, 8, 6)),  # encapsulated: pydicom decodes it
])
def test_native_pixels_equal_pydicom(tmp_path, monkeypatch, dtype, bits_stored, syntax, shape):
    rng = np.random.default_rng(len(shape) + shape[1])
    info = np.iinfo(dtype)
    high = min(info.max, (1 << (bits_stored - (info.min < 0))) - 1) if bits_stored else info.max
    low = max(info.min, -high - 1)
    stored = rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    paths = write_series(tmp_path / "in", stored, regular_positions(shape[0]),
                         bits_stored=bits_stored, transfer_syntax=syntax,
                         rescale_slope=1, rescale_intercept=0)
    if bits_stored:
        overwrite_high_bits(paths, bits_stored)
    group = scan_folder(tmp_path / "in").series[0]
    direct = all(pixels.reads_directly(h) for h in group.headers)
    odd_length = np.prod(shape[1:]) * np.dtype(dtype).itemsize % 2 == 1
    assert direct == (syntax != RLELossless and not odd_length)
    fast, reference, fast_rest, reference_rest = decoded_both_ways(tmp_path / "in",
                                                                   monkeypatch)
    assert fast.dtype == reference.dtype and fast.shape == reference.shape
    assert np.array_equal(fast, reference)
    assert fast_rest == reference_rest  # slope, intercept, notes
    if not bits_stored:
        # (i, j, k) = (column, row, slice)
        assert np.array_equal(fast, np.transpose(stored, (2, 1, 0)))
    else:
        assert fast.max() <= high and fast.min() >= low  # the high bits were dropped


def test_enhanced_and_4d_native_pixels_equal_pydicom(tmp_path, monkeypatch):
    """An enhanced file's frames (read whole, then placed) and a 4D series of single files."""
    rng = np.random.default_rng(3)
    n = 6
    data = rng.integers(0, 4000, size=(n, 7, 9)).astype(np.uint16)
    iop = np.array([1.0, 0, 0, 0, 1, 0])
    positions = np.outer(np.arange(n), [0, 0, 2.0])
    order = rng.permutation(n)  # frames stored out of position order
    write_enhanced(tmp_path / "mf" / "mf.dcm", data[order], positions[order],
                   np.tile(iop, (n, 1)), rescale_slope=2, rescale_intercept=-10)
    header = scan_folder(tmp_path / "mf").series[0].headers[0]
    assert pixels.reads_directly(header)
    fast, reference, *_ = decoded_both_ways(tmp_path / "mf", monkeypatch)
    assert np.array_equal(fast, reference)
    assert np.array_equal(fast, np.transpose(data, (2, 1, 0)))

    volumes = rng.integers(-500, 500, size=(3 * 4, 5, 6)).astype(np.int16)  # 3 times x 4 slices
    positions4 = np.tile(regular_positions(4), (3, 1))
    write_series(tmp_path / "fmri", volumes, positions4, modality="MR",
                 times=[float(t) for t in np.repeat([0.0, 2.0, 4.0], 4)])
    fast, reference, *_ = decoded_both_ways(tmp_path / "fmri", monkeypatch)
    assert fast.shape == (6, 5, 4, 3) and np.array_equal(fast, reference)
    assert np.array_equal(fast[..., 1], np.transpose(volumes[4:8], (2, 1, 0)))


def test_per_image_scaling_equals_pydicom(tmp_path, monkeypatch):
    """Slices with different rescales become float32 real-world values either way."""
    stored = np.arange(4 * 6 * 8, dtype=np.int16).reshape(4, 6, 8)
    write_series(tmp_path / "in", stored, regular_positions(4),
                 rescale_slope=[1, 2, 0.5, 3], rescale_intercept=[0, -5, 7, 1])
    fast, reference, fast_rest, reference_rest = decoded_both_ways(tmp_path / "in",
                                                                   monkeypatch)
    assert fast.dtype == np.float32 and np.array_equal(fast, reference)
    assert fast_rest == reference_rest


def test_a_file_cut_after_the_scan_is_unreadable_not_garbage(tmp_path):
    paths = write_series(tmp_path / "in", np.ones((3, 8, 8), np.int16), regular_positions(3))
    plan = plan_series(scan_folder(tmp_path / "in").series[0], ConvertOptions())
    victim = paths[1]
    victim.write_bytes(victim.read_bytes()[:-40])
    with pytest.raises(UnreadableFileError, match="truncated"):
        pixels.read_pixels(plan)


# --- the parallel gzip writer ------------------------------------------------------------


def compressed(chunks: list[bytes], threads: int, level: int = deflate.GZIP_LEVEL,
               prefix: bytes = b"") -> bytes:
    sink = io.BytesIO()
    stream = deflate.DeflatingStream(level, threads)
    for chunk in chunks:
        stream.feed(chunk)
    deflate.write_gzip(sink, prefix, stream)
    return sink.getvalue()


def noisy_bytes(n: int, seed: int = 0) -> bytes:
    """Compressible but not trivial: a slow ramp with noise, as int16 images are."""
    rng = np.random.default_rng(seed)
    ramp = (np.arange(n // 2 + 1) // 97 % 400 + rng.integers(0, 30, n // 2 + 1)).astype("<i2")
    return ramp.tobytes()[:n]


@pytest.mark.parametrize("size_pieces", [0, 0.001, 0.5, 1, 1.25, 3, 4.5])
def test_gzip_writer_round_trips_any_size(monkeypatch, size_pieces):
    monkeypatch.setattr(deflate, "PIECE_BYTES", 256 << 10)
    monkeypatch.setattr(deflate, "FLUSH_BYTES", 48 << 10)
    data = noisy_bytes(int(size_pieces * deflate.PIECE_BYTES))
    header = bytes(range(256)) + bytes(96)
    out = compressed([data[:352], data[352:]], threads=2, prefix=header)
    assert gzip.decompress(out) == header + data  # CRC-32 and length checked by gzip
    assert zlib.decompressobj(31).decompress(out) == header + data  # a single gzip member
    assert gzip.decompress(compressed([data], threads=1)) == data  # no prefix
    if len(data) > 100_000:
        assert len(out) < len(data) * 0.8


def test_gzip_writer_output_depends_on_the_data_only(monkeypatch):
    """Neither the way the data are handed over nor the thread count changes a byte."""
    monkeypatch.setattr(deflate, "PIECE_BYTES", 128 << 10)
    data = noisy_bytes(1_000_003, seed=5)
    whole = compressed([data], threads=1, prefix=b"nifti")
    cuts = [0, 7, 352, 131_072, 131_075, 500_000, len(data)]
    pieces = [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    assert compressed(pieces, threads=3, prefix=b"nifti") == whole
    assert compressed([memoryview(data)], threads=2, prefix=b"nifti") == whole
    assert gzip.decompress(whole) == b"nifti" + data


def test_one_thread_deflates_on_the_calling_thread(monkeypatch):
    """threads=1 (--jobs 1) compresses every piece on the thread that feeds the stream, and
    more threads on others; the bytes are the same. A failing piece raises, as in a pool:
    when its result is taken (to spill it, or to write it)."""
    monkeypatch.setattr(deflate, "PIECE_BYTES", 128 << 10)
    data = noisy_bytes(700_000, seed=3)
    real = deflate.deflate_piece
    where: dict[int, list[int]] = {1: [], 2: []}

    for threads in (1, 2):
        def recorded(*args, threads=threads, **named):
            where[threads].append(threading.get_ident())
            return real(*args, **named)

        monkeypatch.setattr(deflate, "deflate_piece", recorded)
        assert gzip.decompress(compressed([data], threads=threads)) == data
    assert len(where[1]) >= 6 and set(where[1]) == {threading.get_ident()}
    # two threads: only the prefix (the file header) is deflated where the file is written
    assert len(where[2]) == len(where[1]) and where[2].count(threading.get_ident()) == 1
    monkeypatch.setattr(deflate, "deflate_piece", real)
    assert compressed([data], threads=1) == compressed([data], threads=2)

    def broken(*args, **named):
        raise OSError("no space left on device")

    monkeypatch.setattr(deflate, "deflate_piece", broken)
    stream = deflate.DeflatingStream(threads=1)
    with pytest.raises(OSError, match="no space"):
        stream.feed(data)
        deflate.write_gzip(io.BytesIO(), b"", stream)


def test_gzip_writer_levels_trade_size(monkeypatch):
    data = noisy_bytes(3 << 20, seed=9)
    sizes = {level: len(compressed([data], threads=2, level=level)) for level in (0, 2)}
    assert gzip.decompress(compressed([data], threads=2, level=0)) == data
    assert sizes[2] < sizes[0]


def test_gzip_stream_spills_in_order_and_cannot_be_reused(tmp_path, monkeypatch):
    """Compressed pieces beyond the few in flight go to a temporary file in spill_dir (none
    is left there), and come back in order; a written or cancelled stream refuses more."""
    monkeypatch.setattr(deflate, "PIECE_BYTES", 64 << 10)
    data = noisy_bytes(3 << 20, seed=2)
    stream = deflate.DeflatingStream(threads=2, spill_dir=tmp_path)
    for start in range(0, len(data), 100_000):
        stream.feed(data[start:start + 100_000])
    sink = io.BytesIO()
    deflate.write_gzip(sink, b"head", stream)
    assert gzip.decompress(sink.getvalue()) == b"head" + data
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="already"):
        stream.write_to(io.BytesIO())
    elsewhere = deflate.DeflatingStream(threads=2, spill_dir=tmp_path / "missing")
    elsewhere.feed(data)  # no such folder: the temporary folder takes the pieces
    sink = io.BytesIO()
    deflate.write_gzip(sink, b"", elsewhere)
    assert gzip.decompress(sink.getvalue()) == data
    cancelled = deflate.DeflatingStream(threads=2)
    cancelled.feed(data)
    cancelled.cancel()
    with pytest.raises(ValueError, match="already"):
        deflate.write_gzip(io.BytesIO(), b"", cancelled)


def test_nii_gz_decompresses_to_the_nii(tmp_path, cli):
    """The .nii.gz written in parallel holds exactly the bytes of the .nii of the series."""
    rng = np.random.default_rng(1)
    stored = rng.integers(-1000, 3000, size=(40, 64, 48)).astype(np.int16)
    write_series(tmp_path / "in", stored, regular_positions(40), rescale_slope=1,
                 rescale_intercept=-1024)
    cli("dicom2nii", tmp_path / "in", tmp_path / "gz", check_code=0)
    cli("dicom2nii", tmp_path / "in", tmp_path / "raw", "--format", "nii", check_code=0)
    (gz,) = (tmp_path / "gz").glob("*.nii.gz")
    (raw,) = (tmp_path / "raw").glob("*.nii")
    assert gzip.decompress(gz.read_bytes()) == raw.read_bytes()
    # Fortran order (i = column, j = row, k = slice) is the slices' row-major order.
    assert np.array_equal(np.frombuffer(raw.read_bytes()[352:], "<i2").reshape(stored.shape),
                          stored)


# --- compressed files: decoded in worker processes, JPEG-LS by CharLS --------------------


def test_parallel_decoding_equals_serial(tmp_path, monkeypatch):
    """Worker processes decode a compressed series to exactly the serial result, notes and
    progress included; a file no worker can decode fails as it does serially."""
    rng = np.random.default_rng(7)
    stored = rng.integers(-1200, 3000, size=(9, 12, 10)).astype(np.int16)
    paths = write_series(tmp_path / "in", stored, regular_positions(9),
                         transfer_syntax=RLELossless, rescale_slope=1, rescale_intercept=-1024)
    plan = plan_series(scan_folder(tmp_path / "in").series[0], ConvertOptions())
    monkeypatch.setattr(pixels, "worker_count", lambda: 2)
    serial_progress: list = []
    monkeypatch.setattr(pixels, "PARALLEL_DECODE_MIN_FILES", 1000)
    serial = pixels.read_pixels(plan, progress=lambda d, t: serial_progress.append((d, t)))
    monkeypatch.setattr(pixels, "PARALLEL_DECODE_MIN_FILES", 2)
    parallel_progress: list = []
    parallel = pixels.read_pixels(plan, progress=lambda d, t: parallel_progress.append((d, t)))
    assert np.array_equal(parallel[0], serial[0])
    assert np.array_equal(parallel[0], np.transpose(stored, (2, 1, 0)))
    assert parallel[1:] == serial[1:] and parallel_progress == serial_progress

    ds = pydicom.dcmread(paths[4])
    ds.PixelData = ds.PixelData[:-30] + b"\x00" * 30  # RLE segments that decode to garbage
    ds.save_as(paths[4])
    errors = []
    for minimum in (1000, 2):
        monkeypatch.setattr(pixels, "PARALLEL_DECODE_MIN_FILES", minimum)
        with pytest.raises(UnreadableFileError) as caught:
            pixels.read_pixels(plan)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and paths[4].name in errors[0]


def test_jpeg_ls_decoded_by_charls_equals_libjpeg(tmp_path):
    """The preferred JPEG-LS plugin (pyjpegls) gives pydicom's default plugin's values."""
    from pydicom.pixels import pixel_array
    from pydicom.uid import JPEGLSLossless

    rng = np.random.default_rng(11)
    for dtype, low, high in (("int16", -2000, 2000), ("uint16", 0, 65535), ("uint8", 0, 255)):
        stored = rng.integers(low, high, size=(2, 16, 20), endpoint=True).astype(dtype)
        paths = write_series(tmp_path / dtype, stored, regular_positions(2),
                             transfer_syntax=JPEGLSLossless)
        header = scan_folder(tmp_path / dtype).series[0].headers[0]
        assert pixels._plugin(header) == "pyjpegls"
        for path in paths:
            ds = pydicom.dcmread(path)
            charls = pixel_array(ds, decoding_plugin="pyjpegls")
            libjpeg = pixel_array(ds, decoding_plugin="pylibjpeg")
            assert charls.dtype == libjpeg.dtype and np.array_equal(charls, libjpeg)
        decoded = pixels.decode_images(header, [-1])[0]
        index = next(i for i, p in enumerate(paths) if p == header.path)
        assert np.array_equal(decoded, stored[index])


def test_the_rescaled_range_is_still_checked(tmp_path):
    """A rescale that sends stored values beyond float32 makes the series unreadable; a
    dtype whose every value fits after rescaling needs no look at the values."""
    assert pixels._type_fits_float32(np.dtype(np.int16), 1.0, -1024.0)
    assert not pixels._type_fits_float32(np.dtype(np.int32), 1e35, 0.0)
    write_series(tmp_path / "in", np.full((2, 4, 4), 2_000_000, np.int32), regular_positions(2),
                 rescale_slope=1e34, rescale_intercept=0)
    plan = plan_series(scan_folder(tmp_path / "in").series[0], ConvertOptions())
    with pytest.raises(UnreadableFileError, match="beyond float32"):
        pixels.read_pixels(plan)


def test_corpus_pixels_equal_the_reference_path(corpus, monkeypatch):
    """Every series of the real corpus that converts: the fast paths (native reads, CharLS,
    worker processes) give pydicom's default decoding of every file, value for value."""
    checked = 0
    for group in scan_folder(corpus / "dicom").series:
        try:
            plan = plan_series(group, ConvertOptions())
            fast = pixels.read_pixels(plan) if plan.refusal is None else None
        except (RefusedError, UnreadableFileError):
            continue  # refused or unreadable either way (other tests say so)
        if fast is None:
            continue
        with monkeypatch.context() as patch:
            patch.setattr(pixels, "reads_directly", lambda header: False)
            patch.setattr(pixels, "_plugin", lambda header: "")
            patch.setattr(pixels, "PARALLEL_DECODE_MIN_FILES", 10**9)
            reference = pixels.read_pixels(plan)
        assert fast[0].dtype == reference[0].dtype, group.label
        assert np.array_equal(fast[0], reference[0]), group.label
        assert fast[1:] == reference[1:], group.label
        checked += 1
    assert checked >= 20


# --- .nii.gz compressed while the pixels are decoded (dicom2nii) -------------------------


def plain_nii_gz(folder: Path, out: Path, options: ConvertOptions) -> tuple[bytes, bytes]:
    """The .nii.gz of the one series in folder, read whole and then written (no streaming),
    and the bytes of its voxels in Fortran order."""
    from convkit.dicom.series import read_series
    from convkit.formats import write_volume

    volume = read_series(scan_folder(folder).series[0], options)
    write_volume(volume, out)
    return out.read_bytes(), volume.array.tobytes(order="F")


def streamed_nii_gz(folder: Path, out: Path, options: ConvertOptions) -> bytes:
    from convkit.dicom2nii import convert_folder

    report = convert_folder(folder, out, options=options)
    assert report.exit_code == 0, report.series[0].reason
    (written,) = out.glob("*.nii.gz")
    return written.read_bytes()


def sloped_positions(n: int) -> np.ndarray:
    """Positions drifting along y as z grows: a gantry tilt of about 11 degrees."""
    positions = regular_positions(n)
    positions[:, 1] += 0.2 * np.arange(n)
    return positions


@pytest.mark.parametrize("kind", ["ct", "fmri", "enhanced", "rle", "scaled", "tilt", "dtype"])
def test_streamed_nii_gz_is_byte_identical(tmp_path, monkeypatch, kind):
    """dicom2nii's .nii.gz (voxels compressed while decoded, in any order the files come)
    is byte for byte the file of the volume read whole and then written; where the voxels
    change after decoding (tilt, --dtype) the stream is dropped and the result the same."""
    monkeypatch.setattr(deflate, "PIECE_BYTES", 8 << 10)  # many pieces on small images
    monkeypatch.setattr(deflate, "FLUSH_BYTES", 4 << 10)
    monkeypatch.setattr(pixels, "PARALLEL_DECODE_MIN_FILES", 4)
    rng = np.random.default_rng(len(kind))
    options = ConvertOptions(dtype="float32" if kind == "dtype" else None)
    series = tmp_path / "in"
    stored = rng.integers(-1000, 2000, size=(12, 20, 18)).astype(np.int16)
    if kind == "fmri":  # 3 volumes of 4 slices: files come slice-major, memory is time-major
        write_series(series, stored, np.tile(regular_positions(4), (3, 1)), modality="MR",
                     times=[float(t) for t in np.repeat([0.0, 2.0, 4.0], 4)])
    elif kind == "enhanced":
        order = rng.permutation(12)
        write_enhanced(series / "mf.dcm", stored[order], regular_positions(12)[order],
                       np.tile([1.0, 0, 0, 0, 1, 0], (12, 1)), rescale_intercept=-1024)
    else:
        write_series(series, stored,
                     sloped_positions(12) if kind == "tilt" else regular_positions(12),
                     transfer_syntax=RLELossless if kind == "rle" else None,
                     rescale_slope=list(rng.uniform(0.5, 2, 12)) if kind == "scaled" else 1,
                     rescale_intercept=-1024)
    from convkit.formats import nifti

    compressed_at_write: list[int] = []  # the voxels compressed by the writer, not streamed
    original = nifti.gzip_bytes
    monkeypatch.setattr(nifti, "gzip_bytes", lambda handle, prefix, data: (
        compressed_at_write.append(len(data)), original(handle, prefix, data)))
    streamed = streamed_nii_gz(series, tmp_path / "out", options)
    assert bool(compressed_at_write) == (kind in ("tilt", "dtype"))
    plain, voxels = plain_nii_gz(series, tmp_path / "plain.nii.gz", options)
    assert streamed == plain
    assert gzip.decompress(streamed)[352:] == voxels
    assert len(voxels) >= stored.size * 2
