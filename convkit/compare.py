"""Compare two volumes: headers on a normalised model, voxels in world space.

Whatever the formats (NIfTI-1/-2, NRRD in any space, MetaImage, DICOM), both
sides are Volumes: stored values with slope/intercept, and an affine from voxel
(i, j, k) to RAS mm. All positions and directions here are RAS.

Headers: each side is described by the same fields (shape, spacing, origin,
direction cosines, orientation, world bounding box, data type, scaling, units,
format-specific fields, acquisition fields). A row is

- ``same``: equal (positions and spacing within ``atol_mm``, direction cosines
  within ``atol_dir``);
- ``layout``: differs on disk only because the voxel axes are ordered or
  reversed differently; the world grid is the same;
- ``encoding``: the image is stored differently (data type, scaling, qform/sform
  codes, NRRD space) without changing the real-world values;
- ``info``: the container format, which never makes two images different;
- ``one-side``: the field exists on one side only (e.g. ``space`` in an NRRD);
- ``different``: a real difference. Acquisition fields (from DICOM or a JSON
  sidecar) and value units that differ are reported as ``different`` too, but
  they are metadata: they make the verdict ``equal`` rather than ``identical``,
  never ``different``.

Voxels: real-world values (stored * slope + intercept, in float64) are compared
at the same world positions. When the grids are the same up to a permutation and
reversal of the voxel axes, B's array is transposed/flipped (views, no copy, no
interpolation) and compared exactly. Otherwise, with ``resample``, B is sampled
at A's voxel centres with SimpleITK (linear, or nearest neighbour for label
maps); A voxels outside the box of B's voxel centres are left out. Everything is
processed in slabs of A's k axis, so memory stays bounded.

The verdict is ``identical`` (same grid, bit-equal values, same encoding),
``equal`` (equal within tolerance, or the same image stored differently) or
``different`` (geometry, components or voxel values differ).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convkit.dicom.sidecar import ACQUISITION_FIELDS
from convkit.errors import InputError, UsageError
from convkit.formats.itk import sitk_image
from convkit.geometry import axis_codes, grid_corners, lps_to_ras
from convkit.inputs import load_volume
from convkit.seg.objects import load_pair
from convkit.volume import Volume

#: Positions (origin, bounding box, voxel centres) and voxel spacing agree within this (mm).
POSITION_ATOL_MM = 1e-3
#: Direction cosines (unit axis vectors, RAS) agree within this, per component. NIfTI keeps
#: affines in float32 (~1e-7); voxel positions are checked separately (POSITION_ATOL_MM at
#: the grid's corners), so a small tilt over a large field of view is still caught.
DIRECTION_ATOL = 1e-5
#: Voxel values: a voxel differs when |a - b| > VALUE_ATOL + VALUE_RTOL * (value range of A).
VALUE_ATOL = 0.0
#: Relative to A's value range (max - min), not to each voxel: float32 rounding scales with
#: the largest operands of stored * slope + intercept, not with the result.
VALUE_RTOL = 1e-5
#: An integer-valued image with at most this many distinct values is a label map (Dice per
#: label, nearest-neighbour resampling), unless the caller says otherwise.
LABEL_MAX_VALUES = 128
#: Upper limit on distinct labels when label mode is forced.
FORCED_LABEL_MAX_VALUES = 65536
#: Acquisition numbers agree within this relative tolerance (dcm2niix sidecars keep ~6
#: significant digits).
ACQUISITION_RTOL = 1e-5
#: Voxels per processing slab: float64 work arrays of 2 MB stay in cache (1 << 18 measured
#: 2-2.5x faster than 1 << 22 on a 512x512x300 pair).
CHUNK_VOXELS = 1 << 18
#: Voxels per SimpleITK resampling call (each call has a fixed cost: threads, set-up).
RESAMPLE_CHUNK_VOXELS = 1 << 22
#: Index-space slack (voxels) when deciding whether a point lies inside B's grid.
INSIDE_EPS_VOXELS = 1e-6

SAME, DIFFERENT, ONE_SIDE, ENCODING, LAYOUT, INFO = (
    "same", "different", "one-side", "encoding", "layout", "info")
INTERPOLATIONS = ("auto", "linear", "nearest")

#: Sidecar / DICOM acquisition fields compared when present on both sides.
EXTRA_ACQUISITION_FIELDS = (
    "ImageOrientationPatientDICOM", "PhaseEncodingAxis", "PhaseEncodingDirection",
    "EffectiveEchoSpacing", "TotalReadoutTime", "SliceTiming", "Units",
)
#: Other converters' names for the same field (dcm2niix writes BIDS names).
FIELD_ALIASES = {"ManufacturersModelName": "ManufacturerModelName"}
_SCALED_FORMATS = ("NIfTI-1", "NIfTI-2", "DICOM")


# ----------------------------------------------------------------------------------------
# Result objects


@dataclass
class FieldRow:
    """One header field side by side. a and b are JSON values (None: absent on that side)."""

    name: str
    group: str  # geometry | values | encoding | file | acquisition
    a: Any
    b: Any
    status: str
    detail: str = ""

    def text(self, side: str) -> str:
        value = self.a if side == "a" else self.b
        return format_value(value)


@dataclass
class LabelStats:
    label: float
    voxels_a: int
    voxels_b: int
    overlap: int

    @property
    def dice(self) -> float:
        total = self.voxels_a + self.voxels_b
        return 2.0 * self.overlap / total if total else 1.0

    def to_json(self) -> dict:
        label: float | int = int(self.label) if float(self.label).is_integer() else self.label
        return {"label": label, "voxels_a": self.voxels_a, "voxels_b": self.voxels_b,
                "overlap": self.overlap, "dice": self.dice}


@dataclass
class VoxelStats:
    """Real-world values of A and B at the same world positions."""

    method: str  # "same grid" | "axes reordered" | "resampled"
    mapping: str  # how B's voxel axes map onto A's, or the interpolation
    interpolation: str | None  # None (no interpolation) | "linear" | "nearest"
    compared: int  # voxel values compared (all components)
    outside: int  # A voxel values outside B's grid (resampled only)
    tolerance: float  # |a - b| above this differs
    value_range_a: float
    nonzero: int  # values with any difference at all
    differing: int  # values differing beyond the tolerance
    max_abs_diff: float
    mean_abs_diff: float
    max_at: tuple[int, ...] | None  # A voxel (i, j, k[, component]) of the largest difference
    max_at_ras: tuple[float, float, float] | None
    correlation: float | None
    nonfinite_mismatches: int = 0  # values NaN/inf on one side only (or different infinities)
    labels: list[LabelStats] | None = None
    label_note: str = ""

    @property
    def exact(self) -> bool:
        return self.nonzero == 0

    @property
    def fraction_differing(self) -> float:
        return self.differing / self.compared if self.compared else 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data["labels"] = None if self.labels is None else [s.to_json() for s in self.labels]
        data["fraction_differing"] = self.fraction_differing
        data["exact"] = self.exact
        return data


@dataclass
class Comparison:
    """The result of compare_volumes: rows, voxel statistics and the verdict."""

    a_name: str
    b_name: str
    fields: list[FieldRow]
    voxels: VoxelStats | None
    voxels_skipped: str | None
    verdict: str  # identical | equal | different
    summary: str  # one line: the verdict and why
    differences: list[str]
    encoding: list[str]
    acquisition: list[str]
    notes_a: list[str] = field(default_factory=list)
    notes_b: list[str] = field(default_factory=list)
    tolerances: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when the images are identical or equal, 1 when they differ."""
        return 1 if self.verdict == "different" else 0

    def row(self, name: str) -> FieldRow:
        for row in self.fields:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "exit_code": self.exit_code,
            "differences": self.differences,
            "encoding": self.encoding,
            "acquisition": self.acquisition,
            "a": {"name": self.a_name, "notes": self.notes_a},
            "b": {"name": self.b_name, "notes": self.notes_b},
            "tolerances": self.tolerances,
            "fields": [asdict(row) for row in self.fields],
            "voxels": self.voxels.to_json() if self.voxels else None,
            "voxels_skipped": self.voxels_skipped,
        }


@dataclass(frozen=True)
class GridMatch:
    """B's voxel axis perm[d] runs along A's axis d, reversed where flips[d]."""

    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def trivial(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flips)

    def describe(self) -> str:
        """'A (i, j, k) = B (k, -i, j)': which B axis (and direction) runs along each A axis."""
        names = "ijk"
        parts = [("-" if flip else "") + names[p] for p, flip in zip(self.perm, self.flips,
                                                                     strict=True)]
        return f"A (i, j, k) = B ({', '.join(parts)})"


# ----------------------------------------------------------------------------------------
# Public API


def compare_files(
    path_a: Path | str,
    path_b: Path | str,
    *,
    series: str | None = None,
    series_b: str | None = None,
    **options: Any,
) -> Comparison:
    """Load two inputs (volume files or DICOM folders) and compare_volumes them.

    A DICOM SEG or RTSTRUCT file on one side is read onto the other side's grid (Dice per
    label for a mask against its SEG).

    series picks a series in a DICOM folder (both sides unless series_b is given for B).
    A JSON sidecar next to a volume file (same name, .json) adds acquisition fields.
    """
    chosen = (series, series_b or series)
    # with the sidecar's fields (inputs.attach_sidecar); a SEG/RTSTRUCT file on the other's grid
    a, b = load_pair((Path(path_a), Path(path_b)), lambda path, side: load_volume(path,
                                                                                 chosen[side]))
    return compare_volumes(a, b, names=(str(path_a), str(path_b)), **options)


def compare_volumes(
    a: Volume,
    b: Volume,
    *,
    atol_mm: float = POSITION_ATOL_MM,
    atol_dir: float = DIRECTION_ATOL,
    atol: float = VALUE_ATOL,
    rtol: float = VALUE_RTOL,
    resample: bool = False,
    interpolation: str = "auto",
    labels: bool | None = None,
    header_only: bool = False,
    names: tuple[str, str] = ("A", "B"),
) -> Comparison:
    """Compare two volumes: header rows, voxel statistics in world space, a verdict.

    atol_mm: positions and spacing (mm); atol_dir: direction cosines; atol, rtol:
    voxel values (|a - b| > atol + rtol * value range of A differs). resample:
    sample B on A's grid when the grids differ beyond axis order and reversal.
    interpolation: auto (nearest for label maps, else linear) | linear | nearest.
    labels: None detects label maps (integer values, at most LABEL_MAX_VALUES of
    them), True forces Dice per label, False disables it. header_only: no voxels.
    """
    for name, value in (("--atol-mm", atol_mm), ("--atol-dir", atol_dir), ("--atol", atol),
                        ("--rtol", rtol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UsageError(f"{name} must be a finite number >= 0, got {value}")
    if interpolation not in INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {interpolation!r}",
                         f"use one of {', '.join(INTERPOLATIONS)}")
    model_a, model_b = header_model(a), header_model(b)
    match = match_grids(a.affine, a.shape[:3], b.affine, b.shape[:3], atol_mm, atol_dir)
    rows = header_rows(model_a, model_b, match, atol_mm, atol_dir)
    same_components = model_a["components"] == model_b["components"]

    voxels: VoxelStats | None = None
    skipped: str | None = None
    if header_only:
        skipped = "--header-only"
    elif not same_components:
        skipped = "the numbers of components differ"
    elif match is None and not resample:
        skipped = "the grids differ (--resample samples B on A's grid)"
    elif match is None and not (_invertible(a.affine) and _invertible(b.affine)):
        skipped = "an affine is not invertible: B cannot be resampled on A's grid"
    else:
        voxels = compare_voxels(a, b, match, atol=atol, rtol=rtol, interpolation=interpolation,
                                labels=labels)
    verdict, summary, differences, encoding, acquisition = _verdict(rows, voxels, skipped, match)
    tolerances = {"atol_mm": atol_mm, "atol_dir": atol_dir, "atol": atol, "rtol": rtol}
    return Comparison(names[0], names[1], rows, voxels, skipped, verdict, summary, differences,
                      encoding, acquisition, list(a.notes), list(b.notes), tolerances)


# ----------------------------------------------------------------------------------------
# Headers


def header_model(volume: Volume) -> dict[str, Any]:
    """The normalised header of a volume: JSON values, geometry in RAS mm."""
    meta = volume.metadata
    fmt = str(meta.get("Format") or ("DICOM" if "TransferSyntaxUID" in meta else "unknown"))
    affine = np.asarray(volume.affine, dtype=float)
    shape = tuple(int(n) for n in volume.shape)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    safe = np.where(spacing > 0, spacing, 1.0)
    model: dict[str, Any] = {
        "format": fmt,
        "shape": list(shape),
        "spacing": spacing.tolist(),
        "origin": affine[:3, 3].tolist(),
        "directions": (affine[:3, :3] / safe).T.tolist(),  # one unit vector per voxel axis
        "orientation": _orientation(affine),
        "bounding_box": _bounding_box(affine, shape[:3]),
        "spatial_units": _spatial_units(fmt, meta),
        "components": _components_label(volume),
        "dtype": "RGB (3 x uint8)" if volume.is_rgb else volume.array.dtype.name,
        "scaling": ({"slope": float(volume.slope), "intercept": float(volume.intercept)}
                    if fmt in _SCALED_FORMATS else None),
        "value_units": _first(meta, ("Units", "RescaleType")),
        "qform_sform_codes": ({"qform": meta["qform_code"], "sform": meta["sform_code"]}
                              if "qform_code" in meta and "sform_code" in meta else None),
        "space": meta.get("space") if fmt == "NRRD" else None,
        "acquisition": acquisition_fields(meta),
    }
    return model


def acquisition_fields(metadata: dict[str, Any]) -> dict[str, Any]:
    """The acquisition fields of a DICOM volume or sidecar, under convkit's names."""
    wanted = set(ACQUISITION_FIELDS) | set(EXTRA_ACQUISITION_FIELDS)
    found: dict[str, Any] = {}
    for key, value in metadata.items():
        key = FIELD_ALIASES.get(key, key)
        if key in wanted and value is not None and value != "" and value != []:
            found.setdefault(key, value)
    return dict(sorted(found.items()))


def header_rows(model_a: dict, model_b: dict, match: GridMatch | None, atol_mm: float,
                atol_dir: float) -> list[FieldRow]:
    """Side-by-side rows with a status each (see the module docstring)."""
    rows: list[FieldRow] = []

    def geometry(name: str, key: str, delta: float | None, tol: float, unit: str) -> None:
        va, vb = model_a[key], model_b[key]
        if delta is not None and delta <= tol:
            rows.append(FieldRow(name, "geometry", va, vb, SAME))
        elif match is not None:
            rows.append(FieldRow(name, "geometry", va, vb, LAYOUT, "axes reordered"))
        else:
            detail = f"Δ {_num(delta)}{unit}" if delta is not None else ""
            rows.append(FieldRow(name, "geometry", va, vb, DIFFERENT, detail))

    shape_a, shape_b = model_a["shape"][:3], model_b["shape"][:3]
    rows.append(FieldRow("shape", "geometry", model_a["shape"], model_b["shape"],
                         SAME if shape_a == shape_b else (LAYOUT if match else DIFFERENT),
                         "" if shape_a == shape_b else
                         ("axes reordered" if match else "")))
    geometry("spacing", "spacing", _max_delta(model_a["spacing"], model_b["spacing"]), atol_mm,
             " mm")
    geometry("origin", "origin", _distance(model_a["origin"], model_b["origin"]), atol_mm, " mm")
    geometry("direction cosines", "directions",
             _max_delta(model_a["directions"], model_b["directions"]), atol_dir, "")
    same_code = model_a["orientation"] == model_b["orientation"]
    rows.append(FieldRow("orientation", "geometry", model_a["orientation"],
                         model_b["orientation"],
                         SAME if same_code else (LAYOUT if match else DIFFERENT),
                         "" if same_code else ("axes reordered" if match else "")))
    box_delta = _max_delta(model_a["bounding_box"], model_b["bounding_box"])
    rows.append(FieldRow("world bounding box", "geometry", model_a["bounding_box"],
                         model_b["bounding_box"],
                         SAME if box_delta is not None and box_delta <= atol_mm else DIFFERENT,
                         "" if box_delta is not None and box_delta <= atol_mm
                         else (f"Δ {_num(box_delta)} mm" if box_delta is not None else "")))
    rows.append(_optional_row("spatial units", "geometry", model_a["spatial_units"],
                              model_b["spatial_units"], DIFFERENT))
    rows.append(FieldRow("components", "geometry", model_a["components"],
                         model_b["components"],
                         SAME if model_a["components"] == model_b["components"] else DIFFERENT))
    rows.append(FieldRow("data type", "encoding", model_a["dtype"], model_b["dtype"],
                         SAME if model_a["dtype"] == model_b["dtype"] else ENCODING))
    rows.append(_scaling_row(model_a, model_b))
    rows.append(_optional_row("value units", "values", model_a["value_units"],
                              model_b["value_units"], DIFFERENT))
    rows.append(_optional_row("qform/sform codes", "encoding", model_a["qform_sform_codes"],
                              model_b["qform_sform_codes"], ENCODING))
    rows.append(_optional_row("NRRD space", "encoding", model_a["space"], model_b["space"],
                              ENCODING))
    same_format = model_a["format"] == model_b["format"]
    rows.append(FieldRow("format", "file", model_a["format"], model_b["format"],
                         SAME if same_format else INFO))
    rows.extend(_acquisition_rows(model_a["acquisition"], model_b["acquisition"]))
    return rows


def _optional_row(name: str, group: str, va: Any, vb: Any, when_differs: str) -> FieldRow:
    if va is None and vb is None:
        return FieldRow(name, group, None, None, SAME, "not in either")
    if va is None or vb is None:
        return FieldRow(name, group, va, vb, ONE_SIDE, f"only in {'A' if vb is None else 'B'}")
    same = _same_value(va, vb)
    return FieldRow(name, group, va, vb, SAME if same else when_differs)


def _scaling_row(model_a: dict, model_b: dict) -> FieldRow:
    sa, sb = model_a["scaling"], model_b["scaling"]
    if sa is not None and sb is not None:
        same = sa == sb
        return FieldRow("scaling", "encoding", sa, sb, SAME if same else ENCODING)
    if sa is None and sb is None:
        return FieldRow("scaling", "encoding", None, None, SAME, "not in either format")
    present = sa if sa is not None else sb
    identity = present == {"slope": 1.0, "intercept": 0.0}
    side = "A" if sa is not None else "B"
    return FieldRow("scaling", "encoding", sa, sb, ONE_SIDE if identity else ENCODING,
                    f"only in {side}" + ("" if identity else ": values stored scaled"))


def _acquisition_rows(acq_a: dict, acq_b: dict) -> list[FieldRow]:
    rows = []
    for key in sorted(set(acq_a) & set(acq_b)):
        same = _same_value(acq_a[key], acq_b[key])
        rows.append(FieldRow(key, "acquisition", acq_a[key], acq_b[key],
                             SAME if same else DIFFERENT))
    only_a = sorted(set(acq_a) - set(acq_b))
    only_b = sorted(set(acq_b) - set(acq_a))
    if only_a or only_b:
        rows.append(FieldRow("other acquisition fields", "acquisition",
                             only_a or None, only_b or None, ONE_SIDE,
                             f"{len(only_a)} only in A, {len(only_b)} only in B"))
    return rows


def _same_value(va: Any, vb: Any) -> bool:
    """Acquisition/header values equal after normalisation (case, 'A\\B' lists, numbers)."""
    va, vb = _normalise(va), _normalise(vb)
    if isinstance(va, list) and isinstance(vb, list):
        return len(va) == len(vb) and all(_same_value(x, y) for x, y in zip(va, vb, strict=True))
    if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
        return math.isclose(float(va), float(vb), rel_tol=ACQUISITION_RTOL, abs_tol=1e-12)
    if isinstance(va, str) and isinstance(vb, str):
        return va.strip().casefold() == vb.strip().casefold()
    return va == vb


def _normalise(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and "\\" in value:
        return [_normalise(v) for v in value.split("\\")]
    if isinstance(value, (list, tuple)):
        items = [_normalise(v) for v in value]
        return items[0] if len(items) == 1 else items
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _orientation(affine: np.ndarray) -> str:
    try:
        return axis_codes(affine)
    except Exception:  # a degenerate affine (zero columns) has no axis codes
        return "?"


def _bounding_box(affine: np.ndarray, shape: tuple[int, ...]) -> list[list[float]]:
    """[min xyz, max xyz] of the voxel centres (RAS mm)."""
    world = grid_corners(affine, shape)
    return [world.min(axis=0).tolist(), world.max(axis=0).tolist()]


def _spatial_units(fmt: str, meta: dict) -> str | None:
    if fmt.startswith("NIfTI"):
        units = (meta.get("xyzt_units") or [None])[0]
        return None if units in (None, "unknown") else str(units)
    if fmt == "DICOM":
        return "mm"
    units = meta.get("space units")
    return str(units) if units else None


def _components_label(volume: Volume) -> str:
    if volume.is_rgb:
        return "3 (RGB)"
    if volume.array.ndim == 4:
        return f"{volume.array.shape[3]} (4th axis)"
    return "1"


def _first(meta: dict, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if meta.get(key) not in (None, "", []):
            return meta[key]
    return None


def _max_delta(va: Any, vb: Any) -> float | None:
    try:
        xa, xb = np.asarray(va, dtype=float), np.asarray(vb, dtype=float)
    except (TypeError, ValueError):
        return None
    if xa.shape != xb.shape:
        return None
    return float(np.max(np.abs(xa - xb))) if xa.size else 0.0


def _distance(va: Any, vb: Any) -> float | None:
    xa, xb = np.asarray(va, dtype=float), np.asarray(vb, dtype=float)
    return float(np.linalg.norm(xa - xb)) if xa.shape == xb.shape else None


# ----------------------------------------------------------------------------------------
# Grids


def match_grids(affine_a: np.ndarray, shape_a: tuple[int, ...], affine_b: np.ndarray,
                shape_b: tuple[int, ...], atol_mm: float = POSITION_ATOL_MM,
                atol_dir: float = DIRECTION_ATOL) -> GridMatch | None:
    """The axis permutation and reversals that put B's voxels on A's (RAS affines), or None.

    The grids match when, after reordering B's axes, the shapes are equal, every
    voxel centre is within atol_mm of A's (checked at the 8 corners: the map is
    affine), the spacings within atol_mm and the direction cosines within atol_dir.
    """
    affine_a = np.asarray(affine_a, dtype=float)
    affine_b = np.asarray(affine_b, dtype=float)
    if len(shape_a) != 3 or len(shape_b) != 3 or not _invertible(affine_b):
        return None
    linear = (np.linalg.inv(affine_b) @ affine_a)[:3, :3]  # A index step -> B index step
    perm = tuple(int(np.argmax(np.abs(linear[:, d]))) for d in range(3))
    if sorted(perm) != [0, 1, 2]:
        return None
    flips = tuple(bool(linear[perm[d], d] < 0) for d in range(3))
    if any(shape_b[perm[d]] != shape_a[d] for d in range(3)):
        return None
    index_map = np.zeros((4, 4))  # A index -> B index
    index_map[3, 3] = 1
    for d in range(3):
        index_map[perm[d], d] = -1.0 if flips[d] else 1.0
        index_map[perm[d], 3] = shape_b[perm[d]] - 1 if flips[d] else 0
    aligned = affine_b @ index_map
    if np.max(np.linalg.norm(grid_corners(affine_a, shape_a) - grid_corners(aligned, shape_a),
                             axis=1)) > atol_mm:
        return None
    spacing_a = np.linalg.norm(affine_a[:3, :3], axis=0)
    spacing_b = np.linalg.norm(aligned[:3, :3], axis=0)
    if np.any(spacing_a == 0) or np.max(np.abs(spacing_a - spacing_b)) > atol_mm:
        return None
    if np.max(np.abs(affine_a[:3, :3] / spacing_a - aligned[:3, :3] / spacing_b)) > atol_dir:
        return None
    return GridMatch(perm, flips)  # type: ignore[arg-type]


def align_to(array: np.ndarray, match: GridMatch) -> np.ndarray:
    """A view of B's 3D array indexed like A's (transpose and reverse, no copy)."""
    view = np.transpose(array, match.perm)
    for axis, flip in enumerate(match.flips):
        if flip:
            view = np.flip(view, axis)
    return view


def _invertible(affine: np.ndarray) -> bool:
    linear = np.asarray(affine, dtype=float)[:3, :3]
    return bool(np.all(np.isfinite(linear)) and abs(np.linalg.det(linear)) > 1e-12)


# ----------------------------------------------------------------------------------------
# Voxels


def components(volume: Volume) -> list[np.ndarray]:
    """3D views of each component: the volume itself, each RGB channel or each time point."""
    array = volume.array
    if volume.is_rgb:
        return [array[name] for name in ("R", "G", "B")]
    if array.ndim == 4:
        return [array[..., t] for t in range(array.shape[3])]
    if array.ndim != 3:
        raise InputError(f"cannot compare a {array.ndim}D array", "convkit compares 3D/4D volumes")
    return [array]


def label_values(volume: Volume, limit: int) -> np.ndarray | None:
    """The distinct real values of an integer-valued image with at most limit of them, or None."""
    if volume.is_rgb:
        return None
    found: set = set()
    for comp in components(volume):
        for start, stop in _slabs(comp.shape):
            block = np.asarray(comp[:, :, start:stop])
            if block.dtype.kind in "iu" and block.dtype.itemsize <= 2:
                low = int(np.iinfo(block.dtype).min)
                counts = np.bincount((block.astype(np.int32) - low).ravel())
                values = np.flatnonzero(counts) + low
            else:
                values = np.unique(block)
            found.update(values.tolist())
            if len(found) > limit:
                return None
    real = np.array(sorted(found), dtype=np.float64) * volume.slope + volume.intercept
    if not np.all(np.isfinite(real)) or not np.array_equal(real, np.rint(real)):
        return None
    return np.unique(real)


def value_range(volume: Volume) -> float:
    """max - min of the finite real-world values (0 for a constant or empty image)."""
    low, high = math.inf, -math.inf
    for comp in components(volume):
        for start, stop in _slabs(comp.shape):  # slab by slab: no volume-sized masks
            block = comp[:, :, start:stop]
            if block.dtype.kind == "f":
                block = block[np.isfinite(block)]
            if block.size:
                low, high = min(low, float(block.min())), max(high, float(block.max()))
    if not math.isfinite(low):
        return 0.0
    if volume.is_rgb:
        return high - low
    ends = sorted((low * volume.slope + volume.intercept, high * volume.slope + volume.intercept))
    return ends[1] - ends[0]


def compare_voxels(a: Volume, b: Volume, match: GridMatch | None, *, atol: float, rtol: float,
                   interpolation: str = "auto", labels: bool | None = None) -> VoxelStats:
    """Real-world values of A against B at A's voxel centres (see the module docstring)."""
    labels_a = labels_b = None
    if labels is not False:
        limit = FORCED_LABEL_MAX_VALUES if labels else LABEL_MAX_VALUES
        labels_a, labels_b = label_values(a, limit), label_values(b, limit)
        if labels and (labels_a is None or labels_b is None):
            raise UsageError("--labels needs integer-valued images on both sides "
                             f"(at most {FORCED_LABEL_MAX_VALUES} labels)",
                             "drop --labels to compare intensities")
    chosen = interpolation
    if match is None and interpolation == "auto":
        chosen = "nearest" if labels_b is not None else "linear"
    label_note = ""
    use_labels = labels_a is not None and labels_b is not None
    if use_labels and match is None and chosen == "linear":
        use_labels, label_note = False, "no Dice: labels resampled with linear interpolation"
    label_set = None
    if use_labels and labels_a is not None and labels_b is not None:
        label_set = np.union1d(labels_a, labels_b)
    range_a = value_range(a)
    comps_a, comps_b = components(a), components(b)
    nonfinite = a.array.dtype.kind not in "iub" or b.array.dtype.kind not in "iub"
    acc = _Accumulator(atol + rtol * range_a, label_set, nonfinite)
    scale_a = None if a.is_rgb else (a.slope, a.intercept)
    scale_b = None if b.is_rgb else (b.slope, b.intercept)
    if match is not None:
        for c, (comp_a, comp_b) in enumerate(zip(comps_a, comps_b, strict=True)):
            aligned = align_to(comp_b, match)
            for start, stop in _slabs(comp_a.shape):
                acc.add(acc.real(comp_a[:, :, start:stop], scale_a, "a"),
                        acc.real(aligned[:, :, start:stop], scale_b, "b"), start, c)
        method = "same grid" if match.trivial else "axes reordered"
        mapping = "" if match.trivial else match.describe()
        used = None
    else:
        _resample_into(acc, a, comps_a, b, comps_b, scale_a, scale_b, chosen)
        method, mapping, used = "resampled", f"B sampled at A's voxel centres ({chosen})", chosen
    return acc.result(method, mapping, used, a.affine, a.array.ndim == 4 or a.is_rgb,
                      range_a, label_note)


def _slabs(shape: tuple[int, ...], voxels: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) ranges of k holding about `voxels` (default CHUNK_VOXELS) voxels each."""
    per_slice = max(1, int(shape[0]) * int(shape[1]))
    step = max(1, (voxels or CHUNK_VOXELS) // per_slice)
    return [(k, min(k + step, shape[2])) for k in range(0, shape[2], step)]


def _resample_into(acc: _Accumulator, a: Volume, comps_a: list, b: Volume, comps_b: list,
                   scale_a, scale_b, interpolation: str) -> None:
    """Sample each component of B at A's voxel centres (SimpleITK), slab by slab."""
    import SimpleITK as sitk

    lps_a = lps_to_ras(a.affine)
    spacing_a = np.linalg.norm(lps_a[:3, :3], axis=0)
    index_map = np.linalg.inv(b.affine) @ a.affine  # A index -> B index
    interpolator = sitk.sitkNearestNeighbor if interpolation == "nearest" else sitk.sitkLinear
    for c, (comp_a, comp_b) in enumerate(zip(comps_a, comps_b, strict=True)):
        values = np.asarray(comp_b)
        if values.dtype.kind == "b" or values.dtype.itemsize < 4 and values.dtype.kind == "f":
            values = values.astype(np.float32)  # types SimpleITK has no pixel type for
        image = sitk_image(values, b.affine)
        for start, stop in _slabs(comp_a.shape, RESAMPLE_CHUNK_VOXELS):
            resampler = sitk.ResampleImageFilter()
            resampler.SetSize([int(comp_a.shape[0]), int(comp_a.shape[1]), stop - start])
            resampler.SetOutputSpacing([float(s) for s in spacing_a])
            resampler.SetOutputDirection([float(v) for v in (lps_a[:3, :3] / spacing_a).ravel()])
            resampler.SetOutputOrigin([float(v) for v in lps_a[:3, :3] @ [0, 0, start]
                                       + lps_a[:3, 3]])
            resampler.SetInterpolator(interpolator)
            resampler.SetOutputPixelType(sitk.sitkFloat64)
            resampler.SetDefaultPixelValue(0.0)
            sampled = resampler.Execute(image)  # keeps the view below alive
            values_b = sitk.GetArrayViewFromImage(sampled).T  # (i, j, k), Fortran, no copy
            if scale_b is not None and scale_b != (1.0, 0.0):
                values_b = values_b * scale_b[0] + scale_b[1]
            mask = _inside(index_map, comp_a.shape, start, stop, comp_b.shape)
            for first, last in _slabs(values_b.shape):
                acc.add(acc.real(comp_a[:, :, start + first:start + last], scale_a, "a"),
                        values_b[:, :, first:last], start + first, c, mask[:, :, first:last])


def _inside(index_map: np.ndarray, shape_a: tuple[int, ...], start: int, stop: int,
            shape_b: tuple[int, ...]) -> np.ndarray:
    """Mask of A voxels (slab start:stop) whose centre lies in the box of B's voxel centres.

    Each B index coordinate is affine in A's i: for every (j, k) line the inside part
    is one interval of i, found analytically (no per-voxel coordinates).
    """
    j = np.arange(shape_a[1], dtype=float)[:, None]
    k = np.arange(start, stop, dtype=float)[None, :]
    low = np.full((shape_a[1], stop - start), -np.inf)
    high = np.full((shape_a[1], stop - start), np.inf)
    for d in range(3):
        slope = index_map[d, 0]
        offset = index_map[d, 1] * j + index_map[d, 2] * k + index_map[d, 3]
        lo, hi = -INSIDE_EPS_VOXELS, shape_b[d] - 1 + INSIDE_EPS_VOXELS
        if abs(slope) < 1e-12:
            outside = (offset < lo) | (offset > hi)
            low[outside], high[outside] = np.inf, -np.inf
            continue
        first, second = (lo - offset) / slope, (hi - offset) / slope
        low = np.maximum(low, np.minimum(first, second))
        high = np.minimum(high, np.maximum(first, second))
    i = np.arange(shape_a[0], dtype=float)[:, None, None]
    return np.asfortranarray((i >= low[None]) & (i <= high[None]))


def _dot(u: np.ndarray, v: np.ndarray) -> float:
    """Dot product without BLAS: a threaded BLAS ddot was 8x slower on a busy 2-core machine."""
    return float(np.einsum("i,i->", u, v))


class _Accumulator:
    """Streaming statistics over slabs: differences, correlation, label overlaps.

    Work arrays are allocated once and reused: allocating fresh 32 MB arrays per
    slab costs more (page faults) than the arithmetic.
    """

    def __init__(self, tolerance: float, labels: np.ndarray | None, nonfinite: bool) -> None:
        self.tolerance = tolerance
        self.labels = labels
        self.nonfinite = nonfinite  # float data on either side: NaN/inf possible
        self.compared = self.outside = self.nonzero = self.differing = 0
        self.nonfinite_mismatches = 0
        self.finite = 0
        self.sum_abs = 0.0
        self.max_abs = 0.0
        self.max_at: tuple[int, ...] | None = None
        self.center: tuple[float, float] | None = None
        self.sums = np.zeros(5)  # sum x, sum y, sum xx, sum yy, sum xy (shifted by center)
        self._buffers: dict[str, np.ndarray] = {}
        if labels is not None:
            size = len(labels)
            self.count_a = np.zeros(size, dtype=np.int64)
            self.count_b = np.zeros(size, dtype=np.int64)
            self.overlap = np.zeros(size, dtype=np.int64)

    def buffer(self, name: str, size: int) -> np.ndarray:
        """A reusable flat float64 work array of at least size elements."""
        found = self._buffers.get(name)
        if found is None or found.size < size:
            found = self._buffers[name] = np.empty(size, dtype=np.float64)
        return found[:size]

    def real(self, view: np.ndarray, scale: tuple[float, float] | None, name: str) -> np.ndarray:
        """Real-world float64 values of a block (Fortran order), in a reused buffer."""
        out = self.buffer(name, view.size).reshape(view.shape, order="F")
        np.copyto(out, view, casting="unsafe")
        if scale is not None and scale != (1.0, 0.0):
            out *= scale[0]
            out += scale[1]
        return out

    def add(self, a: np.ndarray, b: np.ndarray, start: int, component: int,
            mask: np.ndarray | None = None) -> None:
        """One slab: a and b (Fortran order, same shape) at the same world positions; mask
        (when resampled) marks the A voxels inside B's grid."""
        shape = a.shape
        x, y = a.ravel(order="F"), b.ravel(order="F")  # views: all blocks are Fortran-ordered
        positions: np.ndarray | None = None  # flat (Fortran) indices of x within the block
        if mask is not None and not mask.all():
            flat_mask = mask.ravel(order="F")
            positions = np.flatnonzero(flat_mask)
            self.outside += mask.size - positions.size
            x, y = x[positions], y[positions]
        if x.size == 0:
            return
        self.compared += x.size
        if self.nonfinite:
            both = np.isfinite(x)
            both &= np.isfinite(y)
            if not both.all():  # NaN/inf: equal when both hold the same non-finite value
                same = (x == y) | (np.isnan(x) & np.isnan(y))
                mismatched = int(np.count_nonzero(~both & ~same))
                self.nonfinite_mismatches += mismatched
                self.nonzero += mismatched
                self.differing += mismatched
                keep = np.flatnonzero(both)
                x, y = x[keep], y[keep]
                positions = keep if positions is None else positions[keep]
        n = x.size
        if n == 0:
            return
        self.finite += n
        equal = np.array_equal(x, y)
        if self.center is None:
            self.center = (float(x.mean()), float(y.mean()))
        if self.labels is not None:
            self._add_labels(self.labels, x, y, equal)
        shift = self.center[0] - self.center[1]  # y - cy = (x - cx) + shift where y == x
        xs = np.subtract(x, self.center[0], out=self.buffer("xs", n))
        sx, sxx = float(xs.sum()), _dot(xs, xs)
        if equal:
            self.sums += (sx, sx + n * shift, sxx, sxx + 2 * shift * sx + n * shift * shift,
                          sxx + shift * sx)
            return
        ys = np.subtract(y, self.center[1], out=self.buffer("ys", n))
        self.sums += (sx, float(ys.sum()), sxx, _dot(ys, ys), _dot(xs, ys))
        self.nonzero += int(np.count_nonzero(x != y))
        diff = np.subtract(x, y, out=self.buffer("xs", n))
        np.abs(diff, out=diff)
        self.differing += int(np.count_nonzero(diff > self.tolerance))
        self.sum_abs += float(diff.sum())
        where = int(np.argmax(diff))
        if diff[where] > self.max_abs:
            self.max_abs = float(diff[where])
            flat = where if positions is None else int(positions[where])
            i, j, k = (int(v) for v in np.unravel_index(flat, shape, order="F"))
            self.max_at = (i, j, k + start, component)

    def _add_labels(self, labels: np.ndarray, x: np.ndarray, y: np.ndarray, equal: bool) -> None:
        size = len(labels)
        index_x = np.clip(np.searchsorted(labels, x), 0, size - 1)
        valid_x = labels[index_x] == x
        self.count_a += np.bincount(index_x[valid_x], minlength=size)
        if equal:
            counts = np.bincount(index_x[valid_x], minlength=size)
            self.count_b += counts
            self.overlap += counts
            return
        index_y = np.clip(np.searchsorted(labels, y), 0, size - 1)
        valid_y = labels[index_y] == y
        self.count_b += np.bincount(index_y[valid_y], minlength=size)
        same = valid_x & (x == y)
        self.overlap += np.bincount(index_x[same], minlength=size)

    def result(self, method: str, mapping: str, interpolation: str | None, affine: np.ndarray,
               with_component: bool, range_a: float, label_note: str) -> VoxelStats:
        n = self.finite
        correlation = None
        if n > 1:
            sx, sy, sxx, syy, sxy = self.sums
            var_x, var_y = sxx - sx * sx / n, syy - sy * sy / n
            if var_x > 0 and var_y > 0:
                correlation = float(np.clip((sxy - sx * sy / n) / math.sqrt(var_x * var_y),
                                            -1.0, 1.0))
                if self.nonzero == 0:
                    correlation = 1.0
        max_at = max_ras = None
        if self.max_at is not None:
            i, j, k, c = self.max_at
            max_at = (i, j, k, c) if with_component else (i, j, k)
            x_mm, y_mm, z_mm = (affine @ [i, j, k, 1])[:3]
            max_ras = (float(x_mm), float(y_mm), float(z_mm))
        labels = None
        if self.labels is not None:
            labels = [LabelStats(float(value), int(self.count_a[n_]), int(self.count_b[n_]),
                                 int(self.overlap[n_]))
                      for n_, value in enumerate(self.labels) if value != 0]
        return VoxelStats(
            method=method, mapping=mapping, interpolation=interpolation,
            compared=self.compared, outside=self.outside, tolerance=self.tolerance,
            value_range_a=range_a, nonzero=self.nonzero, differing=self.differing,
            max_abs_diff=self.max_abs, mean_abs_diff=self.sum_abs / n if n else 0.0,
            max_at=max_at, max_at_ras=max_ras, correlation=correlation,
            nonfinite_mismatches=self.nonfinite_mismatches, labels=labels,
            label_note=label_note)


# ----------------------------------------------------------------------------------------
# Verdict


def _verdict(rows: list[FieldRow], voxels: VoxelStats | None, skipped: str | None,
             match: GridMatch | None) -> tuple[str, str, list[str], list[str], list[str]]:
    differences = [_describe_row(row) for row in rows
                   if row.status == DIFFERENT and row.group == "geometry"]
    encoding = [_describe_row(row) for row in rows if row.status == ENCODING]
    if any(row.status == LAYOUT for row in rows) and match is not None:
        encoding.append(f"voxel axes ordered differently on disk ({match.describe()})")
    acquisition = [_describe_row(row) for row in rows
                   if row.status == DIFFERENT and row.group in ("acquisition", "values")]
    within: list[str] = []
    if voxels is not None:
        if voxels.differing:
            differences.append(_describe_voxels(voxels))
        elif not voxels.exact:
            within.append(f"voxel values within tolerance (max |diff| "
                          f"{_num(voxels.max_abs_diff)} <= {_num(voxels.tolerance)})")
    elif skipped and skipped != "--header-only":
        differences.append(f"voxels not compared: {skipped}")
    if differences:
        verdict = "different"
        summary = "different: " + "; ".join(differences)
        if voxels is not None and voxels.method == "resampled" and not voxels.differing:
            summary += (f"; B resampled on A's grid ({voxels.interpolation}) agrees within "
                        f"tolerance (max |diff| {_num(voxels.max_abs_diff)})")
    elif voxels is not None and voxels.exact and not encoding and not acquisition:
        verdict = "identical"
        summary = "identical: same grid, same voxel values, same encoding"
    else:
        verdict = "equal"
        parts = ["same image in world space" if voxels is not None
                 else "same headers (voxels not compared: --header-only)"]
        parts += within
        if encoding:
            parts.append("stored differently: " + ", ".join(encoding))
        if acquisition:
            parts.append("acquisition fields differ: " + ", ".join(acquisition))
        summary = "equal within tolerance: " + "; ".join(parts)
    return verdict, summary, differences, encoding, acquisition


def _describe_row(row: FieldRow) -> str:
    if row.group == "acquisition":
        return row.name
    detail = f", {row.detail}" if row.detail and row.detail.startswith("Δ") else ""
    return f"{row.name} ({format_value(row.a)} vs {format_value(row.b)}{detail})"


def _describe_voxels(v: VoxelStats) -> str:
    where = f" at voxel {tuple(v.max_at)}" if v.max_at is not None else ""
    nonfinite = (f", {v.nonfinite_mismatches:,} NaN/inf on one side only"
                 if v.nonfinite_mismatches else "")
    return (f"voxel values: {v.differing:,} of {v.compared:,} ({100 * v.fraction_differing:.4g}%) "
            f"differ beyond {_num(v.tolerance)}, max |diff| {_num(v.max_abs_diff)}{where}"
            f"{nonfinite}")


# ----------------------------------------------------------------------------------------
# Formatting (shared by tables and messages)


def format_value(value: Any) -> str:
    """Compact text for a JSON value: numbers to 6 significant digits, vectors in brackets."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _num(float(value))
    if isinstance(value, dict):
        if set(value) == {"slope", "intercept"}:
            return f"slope {_num(value['slope'])}, intercept {_num(value['intercept'])}"
        return _clip(", ".join(f"{k} {format_value(v)}" for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        if 0 < len(value) <= 4 and all(isinstance(v, (int, np.integer))
                                       and not isinstance(v, bool) for v in value):
            return "x".join(str(int(v)) for v in value)  # a shape
        if value and all(_all_numbers(v) for v in value):
            return " ".join(_vector(v) for v in value)  # directions, bounding box
        if _all_numbers(value):
            return _vector(value)
        return _clip(", ".join(format_value(v) for v in value))
    return _clip(str(value))


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _all_numbers(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in values)


def _vector(values: Any) -> str:
    shown = [_num(float(v)) for v in values[:8]]
    more = f" ... ({len(values)} values)" if len(values) > 8 else ""
    return "[" + " ".join(shown) + more + "]"


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    if value == 0:
        return "0"
    text = f"{value:.6g}"
    return "0" if text in ("-0", "0") else text
