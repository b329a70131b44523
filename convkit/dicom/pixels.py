"""Pixels of a planned series: decoded once per file, straightened, regridded, cast.

Everything here follows a SeriesPlan (plan.py): which image goes where, and the
grid the result must fill. Pixel data are checked for truncation before decoding.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from convkit import geometry, resample
from convkit.dicom.dataset import (
    is_read_error,
    read_dataset,
    read_reason,
    truncation,
    warnings_caught,
)
from convkit.dicom.header import (
    FLOAT32_MAX,
    NATIVE_SYNTAXES,
    SliceHeader,
    fragment_problem,
    fragments_of,
)
from convkit.dicom.mosaic import untile
from convkit.dicom.plan import Layout, SeriesPlan, counted
from convkit.errors import RefusedError, UnreadableFileError
from convkit.formats.deflate import DeflatingStream, worker_count
from convkit.processes import process_pool
from convkit.volume import RGB_DTYPE, Volume

SliceProgress = Callable[[int, int], None]

#: From this many files to decode through pydicom (compressed, big endian ...) on, they are
#: decoded in worker processes: starting them costs about 0.1 s, a JPEG image 10-40 ms.
PARALLEL_DECODE_MIN_FILES = 24
#: The pydicom decoding plugin used where several can decode a syntax and one is faster
#: (CharLS decodes JPEG-LS 2-3x faster than libjpeg; tests check they agree).
_PREFERRED_PLUGINS = {"1.2.840.10008.1.2.4.80": "pyjpegls", "1.2.840.10008.1.2.4.81": "pyjpegls"}

#: Native little-endian syntaxes whose pixel bytes are read straight into the array (the
#: fast walker found where they start and that they have the expected length).
_DIRECT_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


def _pixel_dtype(header: SliceHeader) -> np.dtype:
    if header.samples_per_pixel == 3:
        return RGB_DTYPE
    kind = "i" if header.pixel_representation else "u"
    return np.dtype(f"{kind}{header.bits_allocated // 8}")


def _read_layout(layout: Layout, philips_precise: bool | None, progress: SliceProgress | None,
                 notes: list[str] | None = None, deflating: DeflatingStream | None = None,
                 ) -> tuple[np.ndarray, float, float]:
    """Decode every image into one preallocated (i, j, k[, t]) array, each file once.

    Returns (array, slope, intercept). Stored values are kept when every image has
    the same rescale; otherwise each image is scaled to float32 real-world values.
    Real-world values beyond float32 (a corrupt rescale) make the file unreadable.
    deflating: fed the array's bytes in memory order as soon as they are final.
    """
    first = layout.positions[0][0]
    n_k, n_t = len(layout.positions), layout.n_times
    by_path: dict[Path, list[tuple[SliceHeader, tuple]]] = {}
    for k, images in enumerate(layout.positions):
        for t, header in enumerate(images):
            index = (slice(None), slice(None), k) + ((t,) if n_t > 1 else ())
            by_path.setdefault(header.path, []).append((header, index))
    headers = [h for images in layout.positions for h in images]
    scales = {h.real_scaling(philips_precise) for h in headers}
    per_image_scaling = len(scales) > 1 and first.samples_per_pixel == 1
    dtype = np.dtype(np.float32) if per_image_scaling else _pixel_dtype(first)
    shape = (first.columns, first.rows, n_k) + ((n_t,) if n_t > 1 else ())
    array = np.empty(shape, dtype=dtype, order="F")
    feed = _PlaneFeed(array, deflating)
    in_place = [items for items in by_path.values()
                if not per_image_scaling and _reads_in_place(items)]
    to_decode = [items for items in by_path.values()
                 if per_image_scaling or not _reads_in_place(items)]
    decoding, pool = _decoded_files(to_decode, notes)  # workers start before any thread
    try:
        _fill(array, in_place, to_decode, decoding, feed, (philips_precise, per_image_scaling),
              notes, progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if per_image_scaling:
        return array, 1.0, 0.0
    slope, intercept = scales.pop() if scales else (1.0, 0.0)
    if first.samples_per_pixel == 1 and array.size and (slope, intercept) != (1.0, 0.0) \
            and not _type_fits_float32(array.dtype, slope, intercept):
        low, high = float(array.min()), float(array.max())
        _check_real_range(first, [low * slope + intercept, high * slope + intercept])
    return array, float(slope), float(intercept)


def _fill(array: np.ndarray, in_place: list, to_decode: list, decoding: Iterator,
          feed: _PlaneFeed, scaling: tuple[bool | None, bool], notes: list[str] | None,
          progress: SliceProgress | None) -> None:
    """Read the in-place files, then place the decoded ones (see _read_layout)."""
    philips_precise, per_image_scaling = scaling
    total = sum(len(items) for items in in_place + to_decode)
    done = 0
    for items in in_place:
        header, index = items[0]
        if read_native(header, array[index].T):
            feed.filled(index)
            done += 1
            if progress:
                progress(done, total)
        else:  # changed since it was scanned: decoded (pydicom says how) after the others
            to_decode.append(items)
            decoding = itertools.chain(decoding, _decoded_files([items], notes)[0])
    for items, decoded in zip(to_decode, decoding, strict=True):
        for (header, index), pixels in zip(items, decoded, strict=True):
            if per_image_scaling:
                pixels = _real_values(header, pixels, *header.real_scaling(philips_precise))
            array[index] = pixels.T
            feed.filled(index)
        done += len(items)
        if progress:
            progress(done, total)


def _type_fits_float32(dtype: np.dtype, slope: float, intercept: float) -> bool:
    """Whether every value of an integer dtype, rescaled, is within float32's range (then
    the values themselves need not be looked at)."""
    info = np.iinfo(dtype)
    return all(abs(v * slope + intercept) <= FLOAT32_MAX for v in (float(info.min),
                                                                    float(info.max)))


def _decoded_files(to_decode: list[list[tuple[SliceHeader, tuple]]], notes: list[str] | None,
                   ) -> tuple[Iterator[list[np.ndarray]], Any]:
    """decode_images of each file's items, in order: in worker processes (one per core a
    series may use, convkit.cores) when there are many compressed files to decode (the JPEG
    decoders hold the GIL), started at once; native ones (mosaics, multi-frame files) are
    read here, as a worker would read them and then send every image back through a pipe.
    A file a worker could not decode is decoded here again, so that its error is raised
    as usual. Returns (the images of each file, the worker pool to shut down or None)."""
    files = [(items[0][0], [header.frame for header, _ in items]) for items in to_decode]
    workers = worker_count()
    native = all(reads_directly(header) for header, _ in files)
    if workers < 2 or len(files) < PARALLEL_DECODE_MIN_FILES or native:
        return (decode_images(header, frames, notes) for header, frames in files), None
    from pydicom.pixels import pixel_array  # noqa: F401  # imported once, before the fork

    pool = process_pool(workers)
    try:
        results = pool.map(_decode_in_worker, *zip(*files, strict=True), chunksize=4)
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    return _collected(files, results, notes), pool


def _collected(files: list[tuple[SliceHeader, list[int]]], results: Iterator,
               notes: list[str] | None) -> Iterator[list[np.ndarray]]:
    for (header, frames), result in zip(files, results, strict=True):
        if result is None:
            yield decode_images(header, frames, notes)
            continue
        decoded, said = result
        if notes is not None:
            notes.extend(said)
        yield decoded


def _decode_in_worker(header: SliceHeader, frames: list[int],
                      ) -> tuple[list[np.ndarray], list[str]] | None:
    """decode_images in a worker process: (images, notes), or None when it raised."""
    said: list[str] = []
    try:
        return decode_images(header, frames, said), said
    except Exception:  # the parent decodes the file again and raises the error itself
        return None


def _reads_in_place(items: list[tuple[SliceHeader, tuple]]) -> bool:
    """Whether the items are the one image of a single-frame native file, which read_native
    reads straight into its place (the (i, j) plane of a Fortran-ordered array is the
    file's row-major image)."""
    header = items[0][0]
    return len(items) == 1 and header.number_of_frames == 1 and header.mosaic is None \
        and reads_directly(header)


class _PlaneFeed:
    """Hands the (i, j) planes of a Fortran-ordered array to a DeflatingStream in memory
    order, as soon as every plane before them is final."""

    def __init__(self, array: np.ndarray, stream: DeflatingStream | None) -> None:
        self.stream = stream
        self.n_k = array.shape[2]
        self.ready = np.zeros(int(np.prod(array.shape[2:])), dtype=bool)
        self.cursor = 0
        self.plane_bytes = array.shape[0] * array.shape[1] * array.itemsize
        self.bytes = array.reshape(-1, order="F").view(np.uint8) if stream else None

    def filled(self, index: tuple) -> None:
        if self.stream is None or self.bytes is None:
            return
        self.ready[index[2] + self.n_k * (index[3] if len(index) > 3 else 0)] = True
        start = self.cursor
        while self.cursor < len(self.ready) and self.ready[self.cursor]:
            self.cursor += 1
        if self.cursor > start:
            self.stream.feed(self.bytes[start * self.plane_bytes:
                                        self.cursor * self.plane_bytes].data)


def reads_directly(header: SliceHeader) -> bool:
    """Whether read_native can give exactly what pydicom's pixel_array gives."""
    return (header.pixel_offset is not None and header.transfer_syntax in _DIRECT_SYNTAXES
            and header.samples_per_pixel == 1 and header.bits_allocated in (8, 16, 32)
            and 0 < header.bits_stored <= header.bits_allocated and sys.byteorder == "little"
            and hasattr(os, "preadv"))


def read_native(header: SliceHeader, out: np.ndarray) -> bool:
    """Fill out (C-contiguous, the pixel dtype, all the file's pixels) from the file's native
    pixel data, keeping BitsStored bits as pydicom does (masked, or sign-extended when
    signed). False when the file no longer holds them all (changed since it was scanned)."""
    assert header.pixel_offset is not None and out.flags.c_contiguous, "see reads_directly"
    try:
        descriptor = os.open(header.path, os.O_RDONLY)
    except OSError:
        return False
    try:
        buffer = out.reshape(-1).view(np.uint8).data
        got = os.preadv(descriptor, [buffer], header.pixel_offset)
    except OSError:
        return False
    finally:
        os.close(descriptor)
    if got != out.nbytes:
        return False
    unused = header.bits_allocated - header.bits_stored
    if unused and header.pixel_representation:
        out <<= unused
        out >>= unused  # arithmetic shift: the sign bit of BitsStored spreads up
    elif unused:
        out &= (1 << header.bits_stored) - 1
    return True


def _real_values(header: SliceHeader, pixels: np.ndarray, slope: float,
                 intercept: float) -> np.ndarray:
    """One image's real-world values (float32); UnreadableFileError when they overflow."""
    with np.errstate(over="ignore", invalid="ignore"):
        real = pixels * np.float32(slope) + np.float32(intercept)
    if real.size and not np.all(np.isfinite(real)):
        _check_real_range(header, [float(pixels.min()) * slope + intercept,
                                   float(pixels.max()) * slope + intercept])
    return real


def _check_real_range(header: SliceHeader, extremes: list[float]) -> None:
    """UnreadableFileError when stored values times the rescale leave the float32 range."""
    if all(abs(v) <= FLOAT32_MAX for v in extremes):
        return
    raise UnreadableFileError(
        header.path, f"{header.path}: RescaleSlope {header.rescale_slope:g} and "
        f"RescaleIntercept {header.rescale_intercept:g} give values up to "
        f"{max(abs(v) for v in extremes):.3g}, beyond float32",
        "the rescale attributes look corrupt; re-export the series")


def decode_images(header: SliceHeader, frames: list[int],
                  notes: list[str] | None = None) -> list[np.ndarray]:
    """The 2D images (rows, cols) of one file: the whole image (frame -1) or the given frames.

    What the decoder warned about is added to notes (never printed), once per file.
    """
    pixels = _decode_file(header, notes if notes is not None else [])
    rows, columns = header.rows, header.columns
    if header.mosaic is not None:
        rows, columns = (header.mosaic.tile_rows * header.mosaic.tiles_per_row,
                         header.mosaic.tile_cols * header.mosaic.tiles_per_row)
    expected = (rows, columns) + ((3,) if header.samples_per_pixel == 3 else ())
    if header.number_of_frames > 1:
        expected = (header.number_of_frames, *expected)
    if pixels.shape != expected:
        raise UnreadableFileError(header.path, f"{header.path}: pixel data of shape "
                                  f"{pixels.shape}, expected {expected}")
    if header.samples_per_pixel == 3:
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8).view(RGB_DTYPE)[..., 0]
    if header.mosaic is not None:
        pixels = untile(pixels, header.mosaic)
    if header.number_of_frames == 1 and header.mosaic is None:
        return [pixels for _ in frames]  # frame -1, or frame 0 of a one-frame enhanced file
    return [pixels[frame] for frame in frames]


def _decode_file(header: SliceHeader, notes: list[str]) -> np.ndarray:
    """All pixel data of a file, checked for truncation first: native data by length,
    encapsulated data by its fragments (a frame each, ending with an end-of-image marker
    in the JPEG family). The decoder's warnings go to notes; one that says the data are
    incomplete makes the file unreadable."""
    if reads_directly(header):
        frames = (header.number_of_frames,) if header.number_of_frames > 1 else ()
        rows, columns = header.rows, header.columns
        if header.mosaic is not None:
            rows = header.mosaic.tile_rows * header.mosaic.tiles_per_row
            columns = header.mosaic.tile_cols * header.mosaic.tiles_per_row
        native = np.empty((*frames, rows, columns), dtype=_pixel_dtype(header))
        if read_native(header, native):
            return native
    from pydicom.pixels import pixel_array

    hint = "the file may be truncated or use an unsupported compression; re-export the series"
    with warnings_caught() as caught:
        try:
            ds = read_dataset(header.path, stop_before_pixels=False)
            problem = _pixel_data_problem(header, ds)
            pixels = None if problem else pixel_array(ds, decoding_plugin=_plugin(header))
        except Exception as exc:  # decoders raise many types; all mean "unreadable pixels"
            if not is_read_error(exc) and type(exc).__module__.split(".")[0] == "convkit":
                raise
            raise UnreadableFileError(header.path, f"{header.path}: cannot decode pixel data "
                                      f"({read_reason(exc)})", hint) from exc
    cut = truncation(caught)
    if problem or cut:
        raise UnreadableFileError(header.path, f"{header.path}: {problem or 'truncated: ' + cut}",
                                  hint)
    notes.extend(f"pydicom: {text}" for text in caught)
    assert pixels is not None, "set unless there is a problem"
    return pixels


def _plugin(header: SliceHeader) -> str:
    """The preferred decoding plugin for the file's syntax if installed, else '' (pydicom's
    choice)."""
    preferred = _PREFERRED_PLUGINS.get(header.transfer_syntax, "")
    if not preferred:
        return ""
    from pydicom.pixels import get_decoder

    return preferred if preferred in get_decoder(header.transfer_syntax).available_plugins \
        else ""


def _pixel_data_problem(header: SliceHeader, ds: object) -> str:
    """Why the pixel data of a dataset read in full cannot be decoded faithfully, or ''."""
    data = getattr(ds, "PixelData", None)
    if data is None:
        return ""  # pixel_array says there is none
    if header.transfer_syntax in NATIVE_SYNTAXES:
        if len(data) < header.expected_pixel_bytes:
            return (f"truncated pixel data: the file holds {len(data)} of the "
                    f"{header.expected_pixel_bytes} bytes")
        return ""
    return fragment_problem(header, fragments_of(data))


def read_pixels(plan: SeriesPlan, philips_precise: bool | None = None,
                progress: SliceProgress | None = None, deflating: DeflatingStream | None = None,
                ) -> tuple[np.ndarray, float, float, list[str]]:
    """The voxels of plan.grid: (array (i, j, k[, t]), slope, intercept, notes on what was done).

    Decodes every image, then straightens a tilted stack and regrids uneven spacing
    (only planned with --resample) exactly as plan.grid says. deflating: fed the bytes of
    the array returned while they are decoded, when they are final as decoded (no tilt,
    no gaps); then its source is that array (see formats.deflate.DeflatingStream).
    """
    decoding: list[str] = []
    streamed = deflating if not (plan.stack.sheared or plan.stack.gaps) else None
    array, slope, intercept = _read_layout(plan.layout, philips_precise, progress, decoding,
                                           streamed)
    if streamed is not None:
        streamed.source = array
    notes = plan.notes + counted([note for note in decoding  # reading the headers said it
                                  if not any(known == note or known.startswith(f"{note} (")
                                             for known in plan.notes)], "files")
    assert plan.first.pixel_spacing is not None, "plan_series refuses a series without one"
    array = _straighten(array, plan.stack, plan.first.pixel_spacing, notes)
    array = _regularise(array, plan.stack, notes)
    if array.shape[:3] != plan.grid.shape:  # the plan and the pixels share one derivation
        raise RuntimeError(f"pixels {array.shape[:3]} do not fill the planned grid "
                           f"{plan.grid.shape}")
    return array, slope, intercept, notes


def _straighten(array: np.ndarray, stack: geometry.StackGeometry,
                pixel_spacing: tuple[float, float], notes: list[str]) -> np.ndarray:
    """Undo gantry tilt: shift each slice in-plane onto a grid along the normal."""
    if not stack.sheared:
        return array
    offsets_px = stack.offsets / np.array([pixel_spacing[1], pixel_spacing[0]])
    straight, _ = resample.unshear(array, offsets_px, _fill_value(array))
    notes.append(f"gantry tilt {stack.tilt_degrees:.2f} degrees corrected: slices shifted in-plane "
                 f"onto a grid along the slice normal (linear), matrix {array.shape[0]}x"
                 f"{array.shape[1]} -> {straight.shape[0]}x{straight.shape[1]}")
    return straight


def _regularise(array: np.ndarray, stack: geometry.StackGeometry, notes: list[str]) -> np.ndarray:
    """Interpolate uneven slices onto a regular grid (only planned with --resample)."""
    if not stack.gaps:
        return array
    targets = resample.regular_targets(stack.distances)
    regular = resample.regrid_slices(array, stack.distances, targets)
    notes.append(f"uneven spacing resampled (linear): {len(stack.distances)} slices -> "
                 f"{len(targets)} at {float(targets[1] - targets[0]):.4g} mm")
    return regular


def _fill_value(array: np.ndarray) -> float:
    return 0.0 if array.dtype == RGB_DTYPE else float(array.min())


def cast_real(volume: Volume, dtype: str) -> None:
    """Replace stored values by real-world values of dtype, refusing overflow and rounding."""
    if volume.is_rgb:
        raise RefusedError("--dtype does not apply to colour (RGB) images")
    target = np.dtype(dtype)
    real = volume.real_array(np.float64)
    if target.kind in "iu":
        info = np.iinfo(target)
        low, high = float(real.min()), float(real.max())
        if low < info.min or high > info.max:
            raise RefusedError(f"--dtype {dtype} cannot hold values from {low:g} to {high:g}",
                               "choose a wider type, e.g. --dtype float32")
        if not np.array_equal(real, np.rint(real)):
            raise RefusedError(f"--dtype {dtype} would round non-integer values",
                               "choose --dtype float32")
    volume.array = real.astype(target, order="F")
    volume.slope, volume.intercept = 1.0, 0.0
    volume.notes.append(f"real-world values written as {dtype}")
