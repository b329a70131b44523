"""Siemens mosaic images: many slices of one volume tiled into one 2D DICOM image.

Pure functions (no file I/O) on a pydicom Dataset and its pixel array. All
positions and directions are in DICOM patient space (LPS), millimetres.

A mosaic holds ``n`` slices as square-ish tiles, row-major from the top left:
tile ``t`` sits at block row ``t // tiles_per_row``, block column
``t % tiles_per_row``; trailing tiles are blank. Inside a tile, rows and columns
keep the orientation of the file's ImageOrientationPatient (IOP): the column
index grows along IOP[:3] (row_dir), the row index along IOP[3:] (col_dir).

Three facts that converters get wrong, all checked against dcm2niix and the
scanner protocol (ASCCONV sSliceArray) in tests/test_mosaic.py:

- ImagePositionPatient is the corner of the whole mosaic as if it were one
  huge slice centred on the real one, not the first voxel of tile 0; shift it
  by half the size difference (as nibabel's MosaicWrapper does).
- Tiles are in spatial order along the CSA SliceNormalVector, whatever the
  acquisition order (ascending, descending, interleaved: only the slice times
  differ). That vector can point against row_dir x col_dir (sagittal, for
  one), so stacking tiles along row_dir x col_dir mirrors the volume.
- Tiles are SpacingBetweenSlices apart (centre to centre); SliceThickness
  leaves out the gap between slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convkit.dicom import values
from convkit.dicom.csa import CSAError, scalar, vector
from convkit.dicom.vendors import siemens_csa_header
from convkit.errors import InputError, RefusedError
from convkit.geometry import ORIENTATION_TOLERANCE, plane_axes

MOSAIC_IMAGE_TYPE = "MOSAIC"
#: More tiles than this is a corrupt CSA NumberOfImagesInMosaic (each tile becomes a slice).
MAX_TILES = 4096


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields make == and hash meaningless
class MosaicLayout:
    """Where the tiles of one mosaic image lie (LPS).

    Tile order is the order of the tiles in the image (0 = top left,
    row-major) and is also the spatial order: tile t is
    ``positions[0] + t * spacing * normal``. Arrays are read-only.
    """

    n_slices: int  # CSA NumberOfImagesInMosaic
    tiles_per_row: int  # ceil(sqrt(n_slices)); the same number of tile rows
    tile_rows: int  # Rows / tiles_per_row
    tile_cols: int  # Columns / tiles_per_row
    row_dir: np.ndarray  # (3,) unit, IOP[:3]: direction of increasing column index
    col_dir: np.ndarray  # (3,) unit, IOP[3:]: direction of increasing row index
    pixel_spacing: tuple[float, float]  # DICOM PixelSpacing: [between rows, between columns]
    normal: np.ndarray  # (3,) unit, sign of CSA SliceNormalVector: tile index grows along it
    spacing: float  # mm between consecutive tiles along normal (> 0)
    spacing_source: str  # "SpacingBetweenSlices" or "SliceThickness" (no gap known)
    positions: np.ndarray  # (n, 3) LPS position of each tile's first voxel, tile order
    slice_times_s: np.ndarray | None  # (n,) CSA MosaicRefAcqTimes in seconds, tile order

    def __post_init__(self) -> None:
        for name in ("row_dir", "col_dir", "normal", "positions", "slice_times_s"):
            value = getattr(self, name)
            if value is not None:
                frozen = np.array(value, dtype=float)
                frozen.setflags(write=False)
                object.__setattr__(self, name, frozen)

    @property
    def reversed(self) -> bool:
        """True when tiles run against row_dir x col_dir (convkit's slice normal)."""
        return bool(np.dot(self.normal, np.cross(self.row_dir, self.col_dir)) < 0)

    @property
    def ascending_order(self) -> np.ndarray:
        """Tile indices in convkit's slice order: ascending along row_dir x col_dir.

        ``untile(...)[order]``, ``positions[order]`` and ``slice_times_s[order]``
        then form a stack that convkit's geometry (analyse_stack, affine_lps)
        takes as it is: no reversed normal to carry around.
        """
        order = np.arange(self.n_slices)
        return order[::-1].copy() if self.reversed else order


def is_mosaic(ds: Any) -> bool:
    """True when ImageType says MOSAIC and a readable Siemens CSA image header is present.

    Both are needed: without the CSA header the number of tiles and their
    stacking direction are unknown, so the image cannot be cut into slices.
    """
    image_type = ds.get("ImageType", None) or ()
    types = [image_type] if isinstance(image_type, str) else list(image_type)
    if MOSAIC_IMAGE_TYPE not in (str(value).strip().upper() for value in types):
        return False
    try:
        return siemens_csa_header(ds) is not None
    except InputError:
        return False


#: What a mosaic cannot be un-tiled without, and what each tells (CSA image header tags).
MOSAIC_CSA_TAGS = {"NumberOfImagesInMosaic": "the tile count",
                   "SliceNormalVector": "the slice normal"}
ANONYMISER_NOTE = ("an anonymiser probably removed it (de-identification tools often drop or "
                   "blank private elements); convert a copy exported with the private Siemens "
                   "elements kept")


def mosaic_problem(ds: Any) -> str:
    """Why a MOSAIC image cannot be un-tiled ('' when its CSA image header has what the
    layout needs): the header (0029,xx10) is missing or damaged, or lacks the tile count
    (NumberOfImagesInMosaic) or the slice normal (SliceNormalVector). Without them
    converters guess the number of slices; convkit refuses, saying what is missing."""
    try:
        csa = siemens_csa_header(ds)
    except InputError as exc:
        return (f"Siemens MOSAIC image with a damaged CSA image header ({exc.message}): the "
                f"tile count and slice normal cannot be read; {ANONYMISER_NOTE}")
    needed = " and ".join(f"{what} ({tag})" for tag, what in MOSAIC_CSA_TAGS.items())
    if csa is None:
        return (f"Siemens MOSAIC image without its CSA image header (0029,xx10): {needed} are "
                f"missing, so the tiles cannot be cut into slices; {ANONYMISER_NOTE}")
    missing = [f"{what} ({tag})" for tag, what in MOSAIC_CSA_TAGS.items() if not csa.get(tag)]
    if not missing:
        return ""
    return (f"Siemens MOSAIC image whose CSA image header lacks {' and '.join(missing)}, so the "
            f"tiles cannot be cut into slices; {ANONYMISER_NOTE}")


def mosaic_layout(ds: Any) -> MosaicLayout:
    """The layout of the tiles of one mosaic Dataset (pixel data not needed), in LPS.

    Raises InputError when the headers needed are missing or inconsistent and
    RefusedError when the CSA slice normal is not perpendicular to the image
    plane (the slices would be sheared, which a mosaic cannot express).
    """
    csa = siemens_csa_header(ds)
    if csa is None:
        raise InputError("mosaic image without a Siemens CSA image header",
                         "the tile count and slice direction are only in the CSA header")
    n_slices = _n_slices(csa)
    tiles_per_row = int(np.ceil(np.sqrt(n_slices)))
    rows, cols = int(ds.Rows), int(ds.Columns)
    if rows % tiles_per_row or cols % tiles_per_row:
        raise InputError(f"mosaic of {rows} x {cols} pixels cannot hold {tiles_per_row} x "
                         f"{tiles_per_row} equal tiles ({n_slices} slices)",
                         "the CSA NumberOfImagesInMosaic does not fit the image size")
    row_dir, col_dir, iop_normal = plane_axes(_floats(ds, "ImageOrientationPatient", 6))
    pixel_spacing = tuple(_floats(ds, "PixelSpacing", 2))
    tile_shape = (rows // tiles_per_row, cols // tiles_per_row)
    first = _first_tile_position(_floats(ds, "ImagePositionPatient", 3), row_dir, col_dir,
                                 pixel_spacing, (rows, cols), tile_shape)
    normal = _stacking_normal(csa, iop_normal)
    spacing, source = _slice_spacing(ds)
    positions = first + np.arange(n_slices)[:, None] * (spacing * normal)
    return MosaicLayout(n_slices, tiles_per_row, tile_shape[0], tile_shape[1], row_dir, col_dir,
                        (float(pixel_spacing[0]), float(pixel_spacing[1])), normal, spacing,
                        source, positions, _slice_times_s(csa, n_slices))


def untile(pixels: np.ndarray, layout: MosaicLayout) -> np.ndarray:
    """Cut a (Rows, Columns) mosaic into (n_slices, tile_rows, tile_cols), tile order.

    Each tile keeps its in-plane orientation: result[t, r, c] is row r, column
    c of tile t (so index order (k, j, i) in convkit terms). Blank trailing
    tiles are dropped; the n tiles are copied once, nothing else is.
    """
    n_per_row, tile_rows, tile_cols = layout.tiles_per_row, layout.tile_rows, layout.tile_cols
    expected = (n_per_row * tile_rows, n_per_row * tile_cols)
    if pixels.shape != expected:
        raise ValueError(f"mosaic pixels have shape {pixels.shape}, the layout needs {expected}")
    blocks = pixels.reshape(n_per_row, tile_rows, n_per_row, tile_cols).swapaxes(1, 2)
    tiles = np.arange(layout.n_slices)
    return blocks[tiles // n_per_row, tiles % n_per_row]


def _n_slices(csa: dict) -> int:
    n_slices = scalar(csa, "NumberOfImagesInMosaic")
    if not n_slices or not np.isfinite(float(n_slices)) or int(n_slices) < 1:
        raise InputError("mosaic image without a valid CSA NumberOfImagesInMosaic "
                         f"({n_slices!r})", "the number of slices in the mosaic is unknown")
    if int(n_slices) > MAX_TILES:
        raise InputError(f"mosaic image of {int(n_slices)} tiles (CSA NumberOfImagesInMosaic): "
                         f"more than {MAX_TILES}", "the CSA header looks corrupt")
    return int(n_slices)


def _floats(ds: Any, keyword: str, count: int) -> np.ndarray:
    numbers = values.floats(ds.get(keyword, None), count, keyword)
    if numbers is None:
        raise InputError(f"mosaic image without a valid {keyword}",
                         "the slices cannot be placed in patient space without it")
    return np.asarray(numbers)


def _first_tile_position(
    mosaic_position: np.ndarray,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    pixel_spacing: tuple[float, float],
    mosaic_shape: tuple[int, int],
    tile_shape: tuple[int, int],
) -> np.ndarray:
    """LPS position of the first voxel of tile 0 from the mosaic's ImagePositionPatient.

    Siemens computes ImagePositionPatient as slice centre minus half the
    *mosaic* size; the first voxel of a tile is slice centre minus half the
    *tile* size, so move by half the difference (nibabel's MosaicWrapper).
    """
    half_rows = (mosaic_shape[0] - tile_shape[0]) / 2
    half_cols = (mosaic_shape[1] - tile_shape[1]) / 2
    return (mosaic_position + col_dir * pixel_spacing[0] * half_rows
            + row_dir * pixel_spacing[1] * half_cols)


def _stacking_normal(csa: dict, iop_normal: np.ndarray) -> np.ndarray:
    """Unit direction in which the tile index grows: row x col with the CSA normal's sign.

    The cross product is exactly perpendicular to the plane; the CSA vector
    carries the sign (it is stored with fewer digits, and may point either way).
    """
    try:
        csa_vector = vector(csa, "SliceNormalVector", 3)
    except CSAError as exc:
        raise InputError(f"mosaic image with a damaged CSA SliceNormalVector: {exc}",
                         "the direction in which the tiles are stacked is unknown") from exc
    if csa_vector is None:
        raise InputError("mosaic image without CSA SliceNormalVector",
                         "the direction in which the tiles are stacked is unknown")
    csa_normal = np.asarray(csa_vector, dtype=float)
    length = float(np.linalg.norm(csa_normal))
    if not np.isfinite(length) or length < ORIENTATION_TOLERANCE:
        raise InputError(f"mosaic image with a degenerate CSA SliceNormalVector "
                         f"{csa_normal.tolist()}",
                         "the direction in which the tiles are stacked is unknown")
    cosine = float(np.dot(csa_normal / length, iop_normal))
    if abs(cosine) < 1 - ORIENTATION_TOLERANCE:
        raise RefusedError(f"mosaic slice normal {csa_normal.round(4).tolist()} is not "
                           "perpendicular to the image plane",
                           "the headers disagree; the slices cannot be stacked faithfully")
    return iop_normal if cosine > 0 else -iop_normal


def _slice_spacing(ds: Any) -> tuple[float, str]:
    """Centre-to-centre distance of the tiles and the attribute it came from.

    SpacingBetweenSlices includes the gap (3.6 mm for 3 mm slices in the test
    data, matching the protocol's slice positions); SliceThickness is only a
    fallback for files without it, right only when there is no gap.
    """
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = values.to_float(ds.get(keyword, None), keyword)
        if value is not None and value > 0:
            return value, keyword
    raise InputError("mosaic image without SpacingBetweenSlices or SliceThickness",
                     "the distance between the tiled slices is unknown")


def _slice_times_s(csa: dict, n_slices: int) -> np.ndarray | None:
    """CSA MosaicRefAcqTimes (ms, tile order) in seconds; None when absent or too short."""
    items = csa.get("MosaicRefAcqTimes") or []
    if len(items) < n_slices:
        return None
    try:
        times = np.asarray(items[:n_slices], dtype=float) / 1000.0
    except (TypeError, ValueError):  # an empty item ('') among the numbers
        return None
    return times if np.all(np.isfinite(times)) else None
