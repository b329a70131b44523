"""The plan of one series, from headers only: slice layout, geometry, output grid, refusals.

This is what dicom2nii will do with a series before any pixel is decoded, and all
that the audit reports: both take their decisions from plan_series, so the audit
never disagrees with dicom2nii. Order comes from positions projected on the slice
normal, never from file names or InstanceNumber; spacing comes from those
positions. What is not a regular straight grid (gaps, duplicate positions, gantry
tilt) is refused or, when the options allow it, planned for resampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

import numpy as np

from convkit import geometry, resample
from convkit.dicom.diffusion import Diffusion
from convkit.dicom.group import SeriesGroup
from convkit.dicom.header import SliceHeader
from convkit.errors import InputError, RefusedError, UsageError
from convkit.volume import LIMIT_HINT, RGB_DTYPE, format_gib, max_volume_bytes

#: Attributes that order repeated positions in time, strongest first.
TIME_KEYS = (
    ("TemporalPositionIdentifier", "temporal_position"),
    ("TriggerTime", "trigger_time"),
    ("AcquisitionTime", "acquisition_time"),
    ("ContentTime", "content_time"),
    ("AcquisitionNumber", "acquisition_number"),
    ("InstanceNumber", "instance_order"),  # then the frame number within a multi-frame file
)
#: What repeated images must share to be ordered by InstanceNumber alone (nothing else
#: tells their order): images that differ in any of these are different kinds of image.
SAME_ATTRIBUTES = (("EchoTime", "echo_time"), ("ImageType", "image_type"),
                   ("RescaleSlope", "rescale_slope"), ("RescaleIntercept", "rescale_intercept"),
                   ("ComplexImageComponent", "complex_component"),
                   ("GE pulse sequence name", "pulse_sequence"))
#: GE sequences whose repeated images are different kinds of image (B0 map: field map and
#: magnitude; pepolar: two phase-encoding polarities): never a time series by InstanceNumber.
GE_MIXED_SEQUENCES = ("b0map", "pepolar")
#: Values a user may ask for with --dtype.
OUTPUT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
#: Error codes of refusals (the audit reports them as findings of the same code).
UNSUPPORTED = "series.unsupported"
DUPLICATE_POSITION = "series.duplicate-position"

class TiltPolicy(StrEnum):
    """What dicom2nii does with gantry tilt (--tilt)."""

    RESAMPLE = "resample"  # shift each slice in-plane onto a grid along the slice normal
    REFUSE = "refuse"


TILT_POLICIES = frozenset(policy.value for policy in TiltPolicy)


@dataclass(frozen=True)
class ConvertOptions:
    """How to handle what is not a plain regular stack.

    tilt: TiltPolicy.RESAMPLE (default: shift each slice onto a grid along the
        slice normal) or TiltPolicy.REFUSE; the strings 'resample' and 'refuse'
        are accepted.
    resample: interpolate uneven spacing / missing slices onto a regular grid
        instead of refusing.
    dtype: write real-world values in this type (refusing casts that overflow or
        lose values) instead of stored values with a slope/intercept.
    keep_identifiers: put patient name, ID and birth date into the metadata.
    philips_precise: Philips 'precise' floating-point values (private scale slope, True)
        or the display values that RescaleSlope/Intercept give (False); None (the
        default): per image kind, precise for phase and field maps (radians, Hz), display
        values for the others (SliceHeader.uses_precise).
    provenance: record each output slice's SOPInstanceUID and file (sidecar SourceImages).
    """

    tilt: TiltPolicy | str = TiltPolicy.RESAMPLE  # or its value, as --tilt gives it
    resample: bool = False
    dtype: str | None = None
    keep_identifiers: bool = False
    philips_precise: bool | None = None
    provenance: bool = False

    def __post_init__(self) -> None:
        if self.tilt not in TILT_POLICIES:  # a TiltPolicy, or its value as a plain string
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


@dataclass(frozen=True)
class Grid:
    """A voxel grid in world space (RAS) that a conversion of a series writes."""

    name: str  # output | resampled (the --resample grid of a series with gaps) | positions
    affine: np.ndarray  # voxel (i, j, k) -> RAS mm
    shape: tuple[int, int, int]
    n_times: int

    @cached_property
    def placed(self) -> geometry.PlacedGrid:
        """The grid in canonical axes (computed once: the audit compares it with many files)."""
        return geometry.place_grid(self.affine, self.shape)


@dataclass
class SeriesPlan:
    """What read_series would produce, from headers only (no pixel data is decoded)."""

    stack: geometry.StackGeometry
    layout: Layout
    grid: Grid  # where read_series puts the voxels (after tilt correction, resampling)
    diffusion: GradientTable | None  # b-values and LPS directions per volume (DWI only)
    refusal: RefusedError | None  # why read_series would refuse, with these options
    notes: list[str] = field(default_factory=list)  # what reading the headers met and fixed

    @property
    def first(self) -> SliceHeader:
        return self.layout.positions[0][0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The output shape (i, j, k[, t])."""
        times = (self.grid.n_times,) if self.grid.n_times > 1 else ()
        return self.grid.shape + times


def plan_series(group: SeriesGroup, options: ConvertOptions | None = None) -> SeriesPlan:
    """Headers-only dry run of read_series: the layout, geometry, output grid and any refusal.

    A grid that read_series would refuse (gap, tilt with --tilt refuse) is returned
    as plan.refusal; a series that cannot even be laid out (no geometry, unsupported
    pixels, duplicate positions, diffusion weightings that differ within a volume)
    raises RefusedError (InputError for an absurd size), as read_series does. Every
    error carries the audit's code for its cause.
    """
    options = options or ConvertOptions()
    check_supported(group)
    layout = arrange_slices(group.headers, group.label)
    reps = [images[0] for images in layout.positions]
    first = reps[0]
    assert first.pixel_spacing is not None, "check_supported refuses a header without it"
    stack = geometry.analyse_stack([_position(h) for h in reps], _orientation(first),
                                   first.pixel_spacing, first.nominal_spacing)
    diffusion = gradient_table(layout, group.label)
    grid = output_grid(stack, first.pixel_spacing, (first.columns, first.rows), layout.n_times)
    check_memory(group, grid, options.philips_precise)
    notes = (header_notes(group.headers) + layout_notes(stack, layout)
             + list(diffusion.notes if diffusion else ()))
    try:
        _check_grid(stack, options, group, reps)
        _check_reversed_phase(stack, group)
    except RefusedError as refusal:
        return SeriesPlan(stack, layout, grid, diffusion, refusal, notes)
    return SeriesPlan(stack, layout, grid, diffusion, None, notes)


def two_slices_note(stack: geometry.StackGeometry) -> str:
    """What dicom2nii notes and the audit reports (series.two-slices) for a 3D series of two
    slices: its spacing rests on one step."""
    return (f"two slices ({stack.spacing:.4g} mm apart): nothing confirms the spacing, so a "
            "missing slice cannot be detected")


def layout_notes(stack: geometry.StackGeometry, layout: Layout) -> list[str]:
    """Notes on the layout itself: a 3D series of only two slices."""
    if len(layout.positions) == 2 and layout.n_times == 1:
        return [two_slices_note(stack)]
    return []


def header_notes(headers: list[SliceHeader]) -> list[str]:
    """The notes of the headers (what reading them met and fixed), each once, with the
    number of images it applies to."""
    return counted([note for header in headers for note in header.notes], "images")


def counted(notes: list[str], what: str) -> list[str]:
    """Each note once, in order, with how many of what it was made for when more than one."""
    counts: dict[str, int] = {}
    for note in notes:
        counts[note] = counts.get(note, 0) + 1
    return [note if count == 1 else f"{note} ({count} {what})" for note, count in counts.items()]


def check_memory(group: SeriesGroup, grid: Grid, philips_precise: bool | None = None) -> None:
    """Refuse (InputError) a series whose conversion would need more than max_volume_bytes()
    (memory_needed)."""
    needed = memory_needed(group, grid, philips_precise)
    if needed > max_volume_bytes():
        first = group.first
        raise InputError(f"series {group.label}: {first.rows} x {first.columns} x "
                         f"{len(group.headers)} images on a {' x '.join(map(str, grid.shape))} "
                         f"grid would need {format_gib(needed)}, limit "
                         f"{format_gib(max_volume_bytes())}",
                         LIMIT_HINT, UNSUPPORTED)


def memory_needed(group: SeriesGroup, grid: Grid, philips_precise: bool | None = None) -> int:
    """Bytes the conversion of a series holds at its peak, counted before anything is
    allocated: the decoded images (float32 when rescale values differ between images), the
    grid they are straightened or regridded onto when it differs, and the largest single
    file as a decoder holds it (twice: the decoded bytes and the array made of them)."""
    first = group.first
    scales = {h.real_scaling(philips_precise) for h in group.headers}
    if first.samples_per_pixel == 3:
        voxel = RGB_DTYPE.itemsize
    else:
        voxel = 4 if len(scales) > 1 else max(first.bits_allocated // 8, 1)
    images = first.rows * first.columns * len(group.headers) * voxel
    planned = grid.shape[0] * grid.shape[1] * grid.shape[2] * grid.n_times * voxel
    decode = 2 * max(h.expected_pixel_bytes for h in group.headers)
    return images + decode + (planned if planned != images else 0)


def output_grid(stack: geometry.StackGeometry, pixel_spacing: tuple[float, float],
                matrix: tuple[int, int], n_times: int = 1) -> Grid:
    """The grid (RAS) that read_series writes: straightened when tilted, regular when gapped.

    A tilted stack goes onto a grid along the slice normal, grown in-plane to hold
    every shifted slice (resample.unshear fills it); a stack with gaps goes onto
    the regular grid of resample.regular_targets (only written with --resample).
    pixel_spacing is DICOM's [between rows, between columns], matrix (columns, rows).
    """
    spacing_rc = pixel_spacing
    size = matrix
    origin = stack.origin
    if stack.sheared:
        offsets_px = stack.offsets / np.array([spacing_rc[1], spacing_rc[0]])
        origin_px, size = resample.shear_grid(offsets_px, size)
        origin = (stack.origin + origin_px[0] * spacing_rc[1] * stack.row_dir
                  + origin_px[1] * spacing_rc[0] * stack.col_dir)
    name, step, n_k = "output", stack.spacing, len(stack.distances)
    if stack.gaps:
        _check_regrid_size(stack, size)
        targets = resample.regular_targets(stack.distances)
        name, step, n_k = "resampled", float(targets[1] - targets[0]), len(targets)
    orientation = np.concatenate([stack.row_dir, stack.col_dir])
    affine = geometry.lps_to_ras(geometry.affine_lps(orientation, spacing_rc, origin,
                                                     stack.normal * step))
    return Grid(name, affine, (int(size[0]), int(size[1]), n_k), n_times)


def _check_regrid_size(stack: geometry.StackGeometry, size: tuple[int, int]) -> None:
    """Refuse a regular grid for uneven slices that would have absurdly many slices (a few
    slices a hair apart and one far away) before its positions are even listed."""
    span = float(stack.distances[-1] - stack.distances[0])
    steps = np.diff(stack.distances)
    count = span / max(geometry.typical_step(steps), geometry.SAME_POSITION_TOLERANCE_MM) + 1
    if count * size[0] * size[1] > max_volume_bytes():
        raise InputError(f"uneven slices spanning {span:.6g} mm at {len(steps) + 1} positions "
                         f"would be regridded onto {count:.3g} slices",
                         "the positions look corrupt (ImagePositionPatient)", UNSUPPORTED)


def slice_timing(layout: Layout) -> list[float] | None:
    """Seconds from the start of the first volume to each of its slices (k order), or None.

    From the Siemens CSA header where there is one; otherwise, for a time series,
    from the per-slice (or per-frame) acquisition times of the first volume.
    """
    first_volume = [images[0] for images in layout.positions]
    slice_times = [h.slice_time for h in first_volume if h.slice_time is not None]
    if len(slice_times) == len(first_volume):
        return [round(t, 6) for t in slice_times]
    times = [h.acquisition_time for h in first_volume if h.acquisition_time is not None]
    if layout.n_times < 2 or len(times) < len(first_volume) or len(set(times)) < 2:
        return None
    start = min(times)
    return [round(t - start, 6) for t in times]


@dataclass(frozen=True)
class GradientTable:
    """The gradient table of a diffusion series, one entry per volume.

    bvals: (t,) s/mm^2. directions: (t, 3) unit LPS gradients, NaN rows for b=0
    (and trace) volumes; None when some volume's direction is UNKNOWN: the .bval is
    written, the .bvec is not, and missing_bvec says why. notes: what reading it did.
    """

    bvals: np.ndarray
    directions: np.ndarray | None
    missing_bvec: str = ""
    notes: tuple[str, ...] = ()


def gradient_table(layout: Layout, label: str) -> GradientTable | None:
    """The gradient table of a diffusion series, else None (not a DWI).

    A series is a DWI when some image has a gradient direction, known or UNKNOWN
    (b=0 only, or a trace map, is not). A volume none of whose slices carries
    diffusion attributes is b=0 (Canon/Toshiba export b=0 images without them).
    The slices of one volume must carry the same weighting (directions within
    diffusion.DIRECTION_TOLERANCE, each slice computes its own): otherwise, or when
    some slices of a volume carry attributes and others none, the volumes are not
    what they claim and the series is refused.
    """
    if not any(h.diffusion is not None and h.diffusion.is_directional
               for images in layout.positions for h in images):
        return None
    bvals = np.zeros(layout.n_times)
    directions = np.full((layout.n_times, 3), np.nan)
    unknown: list[str] = []
    notes: list[str] = []
    for t in range(layout.n_times):
        weight = _volume_weighting([images[t] for images in layout.positions], t, label)
        if weight is None:
            continue  # no attributes on any slice: b=0
        bvals[t] = weight.bvalue
        if weight.direction_lps is not None:
            directions[t] = weight.direction_lps
        if weight.unknown_reason:
            unknown.append(weight.unknown_reason)
        notes.extend(weight.notes)
    if not unknown:
        return GradientTable(bvals, directions, notes=tuple(dict.fromkeys(notes)))
    missing = "; ".join(dict.fromkeys(unknown))
    return GradientTable(bvals, None, missing, tuple(dict.fromkeys(
        [*notes, f"no .bvec written: {missing}"])))


def _volume_weighting(images: list[SliceHeader], t: int, label: str) -> Diffusion | None:
    """The weighting every slice of volume t shares, None when no slice has one (b=0)."""
    weights = [h.diffusion for h in images]
    labelled = [w for w in weights if w is not None]
    if not labelled:
        return None
    if len(labelled) < len(weights):
        raise RefusedError(f"series {label}: {len(weights) - len(labelled)} of the "
                           f"{len(weights)} slices of volume {t} carry no diffusion attributes "
                           "while the others do", "convert the acquisitions separately",
                           UNSUPPORTED)
    if not all(labelled[0].same_weighting(w) for w in labelled[1:]):
        raise RefusedError(f"series {label}: the slices of volume {t} carry different "
                           "diffusion weightings", "convert the acquisitions separately",
                           UNSUPPORTED)
    return labelled[0]


def check_supported(group: SeriesGroup) -> None:
    """Refuse what convkit cannot (yet) convert faithfully: multi-frame, mosaic, no geometry."""
    first = group.first
    problem = next((h for h in group.headers if h.problem), None)
    if problem is not None:
        raise RefusedError(f"series {group.label}: {problem.path.name}: {problem.problem}",
                          code=UNSUPPORTED)
    if first.is_mosaic and first.mosaic is None:
        raise RefusedError(f"series {group.label}: a MOSAIC image without a readable Siemens "
                           "CSA header cannot be un-tiled", "re-export the series", UNSUPPORTED)
    missing = [name for name, attribute in (("ImagePositionPatient", "position"),
                                            ("ImageOrientationPatient", "orientation"),
                                            ("PixelSpacing", "pixel_spacing"))
               if any(getattr(h, attribute) is None for h in group.headers)]
    if missing:  # in any image: the one planned first need not be the first by instance
        raise RefusedError(f"series {group.label}: no patient geometry "
                           f"({', '.join(missing)} missing)",
                           "without positions the slices cannot be placed in world space",
                           "series.no-geometry")
    pixel_layout = {(h.bits_allocated, h.pixel_representation, h.samples_per_pixel,
                     h.photometric) for h in group.headers}
    if len(pixel_layout) > 1:
        raise RefusedError(f"series {group.label}: slices differ in pixel format "
                           f"{sorted(pixel_layout)}",
                           "convert the slices with one format separately (--series)", UNSUPPORTED)
    if first.samples_per_pixel not in (1, 3) or first.bits_allocated not in (8, 16, 32):
        raise RefusedError(f"series {group.label}: {first.samples_per_pixel} samples of "
                           f"{first.bits_allocated} bits per pixel is not supported",
                           code=UNSUPPORTED)
    size = first.rows * first.columns * len(group.headers) * max(first.bits_allocated // 8, 1)
    if size * first.samples_per_pixel > max_volume_bytes():
        raise InputError(f"series {group.label}: {first.rows} x {first.columns} x "
                         f"{len(group.headers)} would need "
                         f"{format_gib(size * first.samples_per_pixel)}, limit "
                         f"{format_gib(max_volume_bytes())}",
                         LIMIT_HINT, UNSUPPORTED)


def arrange_slices(headers: list[SliceHeader], label: str = "") -> Layout:
    """Sort by position along the normal; repeated positions become time points."""
    where = f"series {label}: " if label else ""
    normal = geometry.plane_axes(_orientation(headers[0]))[2]
    distance = {id(h): float(np.dot(_position(h), normal)) for h in headers}
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
            "remove the extra files, or convert the acquisitions separately", DUPLICATE_POSITION)
    time_key, attribute = _time_key(clusters, where)
    ordered_clusters = [sorted(c, key=lambda h: getattr(h, attribute)) for c in clusters]
    return Layout(ordered_clusters, time_key)


def _position(header: SliceHeader) -> tuple[float, float, float]:
    """ImagePositionPatient of a header in a series that check_supported accepted."""
    assert header.position is not None, "check_supported refuses a header without a position"
    return header.position


def _orientation(header: SliceHeader) -> tuple[float, ...]:
    """ImageOrientationPatient of a header in a series that check_supported accepted."""
    assert header.orientation is not None, "check_supported refuses a header without one"
    return header.orientation


def _time_key(clusters: list[list[SliceHeader]], where: str = "") -> tuple[str, str]:
    """The strongest attribute that tells the files at each position apart."""
    for keyword, attribute in TIME_KEYS:
        values_ok = all(
            all(getattr(h, attribute) is not None for h in cluster)
            and len({getattr(h, attribute) for h in cluster}) == len(cluster)
            for cluster in clusters
        )
        if values_ok:
            if keyword == "InstanceNumber":
                _check_instance_order(clusters, where)
            return keyword, attribute
    raise RefusedError(
        f"{where}slices at duplicate positions: {len(clusters[0])} files at each of "
        f"{len(clusters)} "
        "positions, and no time or instance attribute tells them apart",
        "the files look like copies: remove the duplicates", DUPLICATE_POSITION)


def _check_reversed_phase(stack: geometry.StackGeometry, group: SeriesGroup) -> None:
    """GE pepolar volumes acquired with the reversed polarity are stored mirrored along the
    image columns (read_series mirrors them back, as dcm2niix does): established for column
    phase encoding on a straight, regular grid only; refuse the rest rather than write
    mirrored volumes."""
    first = group.first
    if not first.reversed_phase:
        return
    if first.ge_phase_direction != "COL" or stack.sheared or stack.gaps:
        raise RefusedError(
            f"series {group.label}: GE reverse-polarity EPI volumes are stored mirrored; "
            "mirroring them back is established for column phase encoding "
            "(InPlanePhaseEncodingDirection COL) on a straight, regular grid only, not "
            f"{first.ge_phase_direction or 'no phase-encoding direction'}"
            f"{' with gantry tilt' if stack.sheared else ''}"
            f"{' with uneven slices' if stack.gaps else ''}",
            "convert the series with a tool that knows this sequence", UNSUPPORTED)


def _check_instance_order(clusters: list[list[SliceHeader]], where: str) -> None:
    """Images at one position told apart only by InstanceNumber are a time series only when
    nothing says they are different kinds of image: refuse them when they differ in an
    attribute (which grouping could not split them by) or come from a GE sequence that mixes
    kinds (B0 map, pepolar) whose own rule did not apply."""
    headers = [h for cluster in clusters for h in cluster]
    differ = [f"{keyword} ({', '.join(sorted({_shown(getattr(h, attribute)) for h in headers}))})"
              for keyword, attribute in SAME_ATTRIBUTES
              if len({getattr(h, attribute) for h in headers}) > 1]
    mixed = next((h.pulse_sequence for h in headers  # pepolar reversed throughout is one kind
                  if any(name in h.pulse_sequence for name in GE_MIXED_SEQUENCES)
                  and not ("pepolar" in h.pulse_sequence and h.ge_user_data12 == 1)), "")
    if not differ and not mixed:
        return
    why = f"they differ in {'; '.join(differ)}" if differ else \
        f"the GE sequence {mixed!r} mixes kinds of image and its rule did not apply"
    raise RefusedError(
        f"{where}{len(clusters[0])} images at each of {len(clusters)} positions are told apart "
        f"only by InstanceNumber (no {', '.join(k for k, _ in TIME_KEYS[:-1])} orders them) and "
        f"{why}: they are not time points of one volume",
        "convert the images of each kind separately (split the files by that attribute)",
        DUPLICATE_POSITION)


def _shown(value: object) -> str:
    return "\\".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _check_grid(stack: geometry.StackGeometry, options: ConvertOptions, group: SeriesGroup,
                reps: list[SliceHeader]) -> None:
    if stack.gaps and not options.resample:
        gap = stack.gaps[0]
        where = reps[gap.after_index]
        position = "\\".join(f"{v:g}" for v in _position(where))
        more = f" (and {len(stack.gaps) - 1} more)" if len(stack.gaps) > 1 else ""
        raise RefusedError(
            f"series {group.label}: uneven slice spacing: a {gap.step_mm:.3g} mm step after the "
            f"slice at ImagePositionPatient {position} ({where.path.name}) where the series "
            f"steps {gap.expected_mm:.3g} mm{more}: missing or extra slices",
            "--resample interpolates onto a regular grid", "series.gap")
    if stack.sheared and options.tilt == TiltPolicy.REFUSE:
        raise RefusedError(
            f"series {group.label}: gantry tilt of {stack.tilt_degrees:.2f} degrees "
            "(slices are sheared, not stacked along their normal)",
            "--tilt resample puts the slices on a regular grid along the normal", "series.tilt")
