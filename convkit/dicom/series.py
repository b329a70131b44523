"""One series group -> one Volume, with geometry exactly as the headers say.

Order comes from positions projected on the slice normal, never from file
names or InstanceNumber; spacing comes from those positions. What is not a
regular straight grid (gaps, duplicate positions, gantry tilt) is refused or,
when the options allow it, resampled and said so in Volume.notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convkit import geometry, resample
from convkit.dicom.mosaic import untile
from convkit.dicom.scan import NATIVE_SYNTAXES, SeriesGroup, SliceHeader, scan_folder
from convkit.dicom.sidecar import sidecar_fields
from convkit.errors import InputError, RefusedError, UnreadableFileError, UsageError
from convkit.volume import RGB_DTYPE, Volume

#: Attributes that order repeated positions in time, strongest first.
TIME_KEYS = (
    ("TemporalPositionIdentifier", "temporal_position"),
    ("TriggerTime", "trigger_time"),
    ("AcquisitionTime", "acquisition_time"),
    ("ContentTime", "content_time"),
    ("AcquisitionNumber", "acquisition_number"),
    ("InstanceNumber", "instance_order"),  # then the frame number within a multi-frame file
)
#: Values a user may ask for with --dtype.
OUTPUT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
#: Refuse to allocate volumes larger than this many bytes (a corrupt header, not a scan).
MAX_VOLUME_BYTES = 16 * 1024**3

SliceProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class ConvertOptions:
    """How to handle what is not a plain regular stack.

    tilt: 'resample' (default: shift each slice onto a grid along the slice
        normal) or 'refuse'.
    resample: interpolate uneven spacing / missing slices onto a regular grid
        instead of refusing.
    dtype: write real-world values in this type (refusing casts that overflow or
        lose values) instead of stored values with a slope/intercept.
    keep_identifiers: put patient name, ID and birth date into the metadata.
    philips_precise: Philips 'precise' floating-point values (private scale slope)
        instead of the display values that RescaleSlope/Intercept give (the default).
    """

    tilt: str = "resample"
    resample: bool = False
    dtype: str | None = None
    keep_identifiers: bool = False
    philips_precise: bool = False

    def __post_init__(self) -> None:
        if self.tilt not in ("resample", "refuse"):
            raise UsageError(f"--tilt must be 'resample' or 'refuse', not {self.tilt!r}")
        if self.dtype is not None and self.dtype not in OUTPUT_DTYPES:
            raise UsageError(f"--dtype {self.dtype!r} is not supported",
                             f"choose one of {', '.join(OUTPUT_DTYPES)}")


@dataclass
class Layout:
    """Slices arranged on the grid: positions[k][t] is the header of slice k, time t."""

    positions: list[list[SliceHeader]]
    time_key: str | None  # attribute that ordered repeated positions, None for 3D

    @property
    def n_times(self) -> int:
        return len(self.positions[0])


def read_series(
    source: SeriesGroup | Path | str,
    options: ConvertOptions | None = None,
    progress: SliceProgress | None = None,
) -> Volume:
    """Read one series into a Volume (RAS affine, stored values + scaling).

    source is a SeriesGroup from scan_folder, or a folder holding exactly one series.
    Raises RefusedError when the data cannot be converted faithfully with these
    options, InputError when it cannot be read.
    """
    options = options or ConvertOptions()
    group = _single_group(source) if not isinstance(source, SeriesGroup) else source
    plan = plan_series(group, options)  # the same decisions audit reports, from headers
    if plan.refusal is not None:
        raise plan.refusal
    layout, stack = plan.layout, plan.stack
    first = layout.positions[0][0]
    array, slope, intercept = _read_pixels(layout, options.philips_precise, progress)
    notes: list[str] = []
    array, stack_origin, distances = _straighten(array, stack, first.pixel_spacing, notes)
    array, spacing = _regularise(array, distances, stack, notes)
    affine_lps = geometry.affine_lps(np.concatenate([stack.row_dir, stack.col_dir]),
                                     first.pixel_spacing, stack_origin, stack.normal * spacing)
    volume = Volume(array, geometry.lps_to_ras(affine_lps), slope, intercept, notes=notes,
                    diffusion=gradient_table(layout, group.label))
    if layout.time_key:
        volume.notes.append(f"{layout.n_times} volumes ordered by {layout.time_key}")
    if options.dtype:
        cast_real(volume, options.dtype)
    volume.metadata = sidecar_fields(first, options.keep_identifiers)
    volume.metadata.update(_conversion_fields(layout, stack, volume))
    if layout.n_times > 1:
        volume.repetition_time_s = volume.metadata.get("RepetitionTime")
    if first.philips_scale_slope:
        volume.metadata["PhilipsScaling"] = "precise" if options.philips_precise else "display"
    timing = slice_timing(layout)
    if timing is not None:
        volume.metadata["SliceTiming"] = timing
    if "EchoTime" not in volume.metadata and first.echo_time is not None:
        volume.metadata["EchoTime"] = round(first.echo_time / 1000, 9)
    return volume


def slice_timing(layout: Layout) -> list[float] | None:
    """Seconds from the start of the first volume to each of its slices (k order), or None.

    From the Siemens CSA header where there is one; otherwise, for a time series,
    from the per-slice (or per-frame) acquisition times of the first volume.
    """
    first_volume = [images[0] for images in layout.positions]
    if all(h.slice_time is not None for h in first_volume):
        return [round(h.slice_time, 6) for h in first_volume]
    times = [h.acquisition_time for h in first_volume]
    if layout.n_times < 2 or None in times or len(set(times)) < 2:
        return None
    start = min(times)
    return [round(t - start, 6) for t in times]


def gradient_table(layout: Layout, label: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(b-values (t,), LPS directions (t, 3), NaN for none) of a diffusion series, else None.

    Every slice of a volume must carry the same weighting; otherwise the volumes
    are not what they claim and the series is refused.
    """
    if not any(h.diffusion is not None and h.diffusion.direction_lps is not None
               for images in layout.positions for h in images):
        return None  # no gradient direction anywhere: not a DWI (b=0 only, or a trace map)
    bvals = np.zeros(layout.n_times)
    directions = np.full((layout.n_times, 3), np.nan)
    for t in range(layout.n_times):
        weights = [images[t].diffusion for images in layout.positions]
        if any(w is None for w in weights) or any(w != weights[0] for w in weights[1:]):
            raise RefusedError(f"series {label}: the slices of volume {t} carry different "
                               "diffusion weightings", "convert the acquisitions separately")
        bvals[t] = weights[0].bvalue
        if weights[0].direction_lps is not None:
            directions[t] = weights[0].direction_lps
    return bvals, directions


@dataclass
class SeriesPlan:
    """What read_series would produce, from headers only (no pixel data is decoded)."""

    shape: tuple[int, ...]  # output shape (i, j, k[, t]) before any resampling
    stack: geometry.StackGeometry
    layout: Layout
    refusal: RefusedError | None  # why read_series would refuse, with these options


def plan_series(group: SeriesGroup, options: ConvertOptions | None = None) -> SeriesPlan:
    """Headers-only dry run of read_series: the layout, geometry and any refusal.

    A grid that read_series would refuse (gap, tilt with --tilt refuse) is returned
    as plan.refusal; a series that cannot even be laid out (no geometry, unsupported
    pixels, duplicate positions) raises RefusedError, as read_series does.
    """
    options = options or ConvertOptions()
    check_supported(group)
    layout = arrange_slices(group.headers, group.label)
    reps = [images[0] for images in layout.positions]
    first = reps[0]
    stack = geometry.analyse_stack([h.position for h in reps], first.orientation,
                                   first.pixel_spacing, first.nominal_spacing)
    shape = (first.columns, first.rows, len(reps)) + ((layout.n_times,) if layout.n_times > 1
                                                      else ())
    try:
        _check_grid(stack, options, group, reps)
    except RefusedError as refusal:
        return SeriesPlan(shape, stack, layout, refusal)
    return SeriesPlan(shape, stack, layout, None)


def _single_group(folder: Path | str) -> SeriesGroup:
    scan = scan_folder(folder)
    if len(scan.series) != 1:
        found = ", ".join(g.label for g in scan.series) or "none"
        raise InputError(f"{folder} holds {len(scan.series)} series ({found}), not one",
                         "use scan_folder() and pass one SeriesGroup")
    return scan.series[0]


def check_supported(group: SeriesGroup) -> None:
    """Refuse what convkit cannot (yet) convert faithfully: multi-frame, mosaic, no geometry."""
    first = group.first
    problem = next((h for h in group.headers if h.problem), None)
    if problem is not None:
        raise RefusedError(f"series {group.label}: {problem.path.name}: {problem.problem}")
    if first.is_mosaic and first.mosaic is None:
        raise RefusedError(f"series {group.label}: a MOSAIC image without a readable Siemens "
                           "CSA header cannot be un-tiled", "re-export the series")
    missing = [name for name, value in (("ImagePositionPatient", first.position),
                                        ("ImageOrientationPatient", first.orientation),
                                        ("PixelSpacing", first.pixel_spacing)) if value is None]
    if missing or any(h.position is None or h.orientation is None for h in group.headers):
        raise RefusedError(f"series {group.label}: no patient geometry "
                           f"({', '.join(missing) or 'ImagePositionPatient'} missing)",
                           "without positions the slices cannot be placed in world space")
    pixel_layout = {(h.bits_allocated, h.pixel_representation, h.samples_per_pixel,
                     h.photometric) for h in group.headers}
    if len(pixel_layout) > 1:
        raise RefusedError(f"series {group.label}: slices differ in pixel format "
                           f"{sorted(pixel_layout)}",
                           "convert the slices with one format separately (--series)")
    if first.samples_per_pixel not in (1, 3) or first.bits_allocated not in (8, 16, 32):
        raise RefusedError(f"series {group.label}: {first.samples_per_pixel} samples of "
                           f"{first.bits_allocated} bits per pixel is not supported")
    size = first.rows * first.columns * len(group.headers) * max(first.bits_allocated // 8, 1)
    if size * first.samples_per_pixel > MAX_VOLUME_BYTES:
        raise InputError(f"series {group.label}: {first.rows} x {first.columns} x "
                         f"{len(group.headers)} would need {size / 1024**3:.1f} GiB",
                         "the header looks corrupt; check Rows/Columns")


def arrange_slices(headers: list[SliceHeader], label: str = "") -> Layout:
    """Sort by position along the normal; repeated positions become time points."""
    where = f"series {label}: " if label else ""
    normal = geometry.plane_axes(headers[0].orientation)[2]
    distance = {id(h): float(np.dot(h.position, normal)) for h in headers}
    ordered = sorted(headers, key=lambda h: (distance[id(h)], str(h.path)))
    clusters: list[list[SliceHeader]] = [[ordered[0]]]
    for header in ordered[1:]:
        previous = distance[id(clusters[-1][0])]
        if distance[id(header)] - previous <= geometry.SAME_POSITION_TOLERANCE_MM:
            clusters[-1].append(header)
        else:
            clusters.append([header])
    counts = {len(c) for c in clusters}
    if counts == {1}:
        return Layout(clusters, None)
    if len(counts) > 1:
        repeated = [f"{distance[id(c[0])]:.2f} mm ({len(c)} files)" for c in clusters if len(c) > 1]
        raise RefusedError(
            f"{where}slices at duplicate positions: {', '.join(repeated[:5])}"
            f"{' ...' if len(repeated) > 5 else ''} while other positions have "
            f"{min(counts)} file(s)",
            "remove the extra files, or convert the acquisitions separately")
    time_key, attribute = _time_key(clusters, where)
    ordered_clusters = [sorted(c, key=lambda h: getattr(h, attribute)) for c in clusters]
    return Layout(ordered_clusters, time_key)


def _time_key(clusters: list[list[SliceHeader]], where: str = "") -> tuple[str, str]:
    """The strongest attribute that tells the files at each position apart."""
    for keyword, attribute in TIME_KEYS:
        values_ok = all(
            all(getattr(h, attribute) is not None for h in cluster)
            and len({getattr(h, attribute) for h in cluster}) == len(cluster)
            for cluster in clusters
        )
        if values_ok:
            return keyword, attribute
    raise RefusedError(
        f"{where}slices at duplicate positions: {len(clusters[0])} files at each of "
        f"{len(clusters)} "
        "positions, and no time or instance attribute tells them apart",
        "the files look like copies: remove the duplicates")


def _check_grid(stack: geometry.StackGeometry, options: ConvertOptions, group: SeriesGroup,
                reps: list[SliceHeader]) -> None:
    if stack.gaps and not options.resample:
        gap = stack.gaps[0]
        where = reps[gap.after_index]
        position = "\\".join(f"{v:g}" for v in where.position)
        more = f" (and {len(stack.gaps) - 1} more)" if len(stack.gaps) > 1 else ""
        raise RefusedError(
            f"series {group.label}: uneven slice spacing: a {gap.step_mm:.3g} mm step after the "
            f"slice at ImagePositionPatient {position} ({where.path.name}) where the series "
            f"steps {gap.expected_mm:.3g} mm{more}: missing or extra slices",
            "--resample interpolates onto a regular grid")
    if stack.sheared and options.tilt == "refuse":
        raise RefusedError(
            f"series {group.label}: gantry tilt of {stack.tilt_degrees:.2f} degrees "
            "(slices are sheared, not stacked along their normal)",
            "--tilt resample puts the slices on a regular grid along the normal")


def _pixel_dtype(header: SliceHeader) -> np.dtype:
    if header.samples_per_pixel == 3:
        return RGB_DTYPE
    kind = "i" if header.pixel_representation else "u"
    return np.dtype(f"{kind}{header.bits_allocated // 8}")


def _read_pixels(layout: Layout, philips_precise: bool, progress: SliceProgress | None,
                 ) -> tuple[np.ndarray, float, float]:
    """Decode every image into one preallocated (i, j, k[, t]) array, each file once.

    Returns (array, slope, intercept). Stored values are kept when every image has
    the same rescale; otherwise each image is scaled to float32 real-world values.
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
    done = 0
    for items in by_path.values():
        images = decode_images(items[0][0], [header.frame for header, _ in items])
        for (header, index), pixels in zip(items, images, strict=True):
            if per_image_scaling:
                slope, intercept = header.real_scaling(philips_precise)
                pixels = pixels * np.float32(slope) + np.float32(intercept)
            array[index] = pixels.T
        done += len(items)
        if progress:
            progress(done, len(headers))
    if per_image_scaling:
        return array, 1.0, 0.0
    slope, intercept = scales.pop() if scales else (1.0, 0.0)
    return array, float(slope), float(intercept)


def decode_images(header: SliceHeader, frames: list[int]) -> list[np.ndarray]:
    """The 2D images (rows, cols) of one file: the whole image (frame -1) or the given frames."""
    pixels = _decode_file(header)
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


def _decode_file(header: SliceHeader) -> np.ndarray:
    """All pixel data of a file, checking native data for truncation first."""
    import pydicom
    from pydicom.pixels import pixel_array

    hint = "the file may be truncated or use an unsupported compression; re-export the series"
    try:
        ds = pydicom.dcmread(header.path)
        if header.transfer_syntax in NATIVE_SYNTAXES:
            held = len(ds.PixelData)
            if held < header.expected_pixel_bytes:
                raise UnreadableFileError(
                    header.path, f"{header.path}: truncated pixel data: the file holds {held} of "
                    f"the {header.expected_pixel_bytes} bytes", hint)
        return pixel_array(ds)
    except UnreadableFileError:
        raise
    except Exception as exc:  # decoders raise many types; all mean "unreadable pixels"
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UnreadableFileError(header.path, f"{header.path}: cannot decode pixel data "
                                  f"({reason})", hint) from exc


def _straighten(
    array: np.ndarray, stack: geometry.StackGeometry, pixel_spacing: tuple[float, float],
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undo gantry tilt: shift each slice in-plane onto a grid along the normal.

    Returns (array, LPS origin of the straight grid, slice distances along the normal).
    """
    if not stack.sheared:
        return array, stack.origin, stack.distances
    offsets_px = stack.offsets / np.array([pixel_spacing[1], pixel_spacing[0]])
    fill = _fill_value(array)
    straight, origin_px = resample.unshear(array, offsets_px, fill)
    origin = (stack.origin + origin_px[0] * pixel_spacing[1] * stack.row_dir
              + origin_px[1] * pixel_spacing[0] * stack.col_dir)
    notes.append(f"gantry tilt {stack.tilt_degrees:.2f} degrees corrected: slices shifted in-plane "
                 f"onto a grid along the slice normal (linear), matrix {array.shape[0]}x"
                 f"{array.shape[1]} -> {straight.shape[0]}x{straight.shape[1]}")
    return straight, origin, stack.distances


def _regularise(
    array: np.ndarray, distances: np.ndarray, stack: geometry.StackGeometry, notes: list[str],
) -> tuple[np.ndarray, float]:
    """Interpolate uneven slices onto a regular grid (only reached with --resample)."""
    if not stack.gaps:
        return array, stack.spacing
    targets = resample.regular_targets(distances)
    regular = resample.regrid_slices(array, distances, targets)
    spacing = float(targets[1] - targets[0])
    notes.append(f"uneven spacing resampled (linear): {len(distances)} slices -> {len(targets)} "
                 f"at {spacing:.4g} mm")
    return regular, spacing


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


def _conversion_fields(layout: Layout, stack: geometry.StackGeometry, volume: Volume) -> dict:
    """What convkit found and did, for the sidecar."""
    return {
        "SliceSpacingFromPositions": round(volume.spacing[2], 6),
        "GantryTiltFromPositions": round(stack.tilt_degrees, 4),
        "TiltCorrected": stack.sheared,
        "Resampled": bool(stack.gaps),
        "SlicesDropped": 0,
        "VolumeOrderedBy": layout.time_key,
        "ConvkitNotes": list(volume.notes),
    }
