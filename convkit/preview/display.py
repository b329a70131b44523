"""The display frame: a volume seen in patient orientation, its planes and slices.

Everything here works on a *canonical view* of the volume's array: the axes
permuted and flipped (numpy views, no copy) so that index x increases towards
the patient's Right, y towards Anterior and z towards Superior (RAS+), whatever
the layout on disk. The permutation comes from the affine (geometry.io_orientation,
nibabel's closest canonical axes). Oblique volumes are shown on
those closest axes, not resampled: the slices are the acquired ones, and
Frame.obliquity_degrees says by how much the display is tilted.

A displayed plane is a 2D image of this view with the conventional
orientation: axial seen from the feet and coronal seen from the front (patient
Right on the image left in the radiological convention, on the image right in
the neurological one), sagittal with Anterior on the left; Superior at the top
of coronal and sagittal images, Anterior at the top of axial ones. Pixels are
square in millimetres: the plane is resampled to one pixel size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convkit.errors import UsageError
from convkit.geometry import (
    io_orientation,
    obliquity_degrees,
    reorientation_affine,
    reoriented,
)
from convkit.volume import Volume

PLANES = ("axial", "coronal", "sagittal")
#: Obliquity (degrees) above which the display says it shows the closest canonical axes.
OBLIQUE_NOTE_DEGREES = 0.5
#: Interpolation of image values when resampling a plane to square pixels.
INTERPOLATIONS = ("linear", "nearest")
_AXIS_POSITIVE = "RAS"
_AXIS_NEGATIVE = "LPI"


@dataclass(frozen=True)
class PlaneLayout:
    """How a plane's image axes run: canonical axis and direction of columns and rows.

    col_reversed: the image's column 0 is at the high end of the canonical axis.
    letters: the patient directions at the (left, right, top, bottom) edges.
    """

    normal: int
    col_axis: int
    col_reversed: bool
    row_axis: int
    row_reversed: bool

    @property
    def letters(self) -> tuple[str, str, str, str]:
        def ends(axis: int, reversed_: bool) -> tuple[str, str]:
            low, high = _AXIS_NEGATIVE[axis], _AXIS_POSITIVE[axis]
            return (high, low) if reversed_ else (low, high)

        left, right = ends(self.col_axis, self.col_reversed)
        top, bottom = ends(self.row_axis, self.row_reversed)
        return left, right, top, bottom


def plane_layout(plane: str, neurological: bool = False) -> PlaneLayout:
    """Image axes of a plane: radiological (default) or neurological left-right."""
    if plane == "axial":
        return PlaneLayout(2, 0, not neurological, 1, True)
    if plane == "coronal":
        return PlaneLayout(1, 0, not neurological, 2, True)
    if plane == "sagittal":
        return PlaneLayout(0, 1, True, 2, True)
    raise UsageError(f"unknown plane {plane!r}", f"choose one of {', '.join(PLANES)}")


@dataclass
class Frame:
    """A 3D volume in the canonical display frame (views of the volume's array, no copy).

    array: stored values indexed (x, y, z) towards R, A, S (or RGB_DTYPE).
    affine: canonical voxel -> RAS mm. ornt: nibabel orientation of the file's axes
    (for each file axis: canonical axis, +1/-1). file_shape: the file's 3D shape.
    """

    array: np.ndarray
    affine: np.ndarray
    ornt: np.ndarray
    file_shape: tuple[int, int, int]
    slope: float
    intercept: float
    obliquity_degrees: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape[:3])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size (mm) along the canonical x, y, z axes."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def is_rgb(self) -> bool:
        return self.array.dtype.names is not None

    def file_axis(self, canonical_axis: int) -> int:
        """The file's array axis (0, 1, 2 = i, j, k) shown along a canonical axis."""
        return int(np.flatnonzero(self.ornt[:, 0] == canonical_axis)[0])

    def to_file_index(self, canonical_axis: int, index: int) -> int:
        axis = self.file_axis(canonical_axis)
        return index if self.ornt[axis, 1] > 0 else self.file_shape[axis] - 1 - index

    def to_canonical_index(self, canonical_axis: int, file_index: int) -> int:
        return self.to_file_index(canonical_axis, file_index)  # an involution

    def slice_position(self, canonical_axis: int, index: int) -> float:
        """World coordinate (RAS mm, along that axis) of the centre of a slice."""
        centre = (np.array(self.shape, dtype=float) - 1) / 2
        centre[canonical_axis] = index
        return float((self.affine @ np.append(centre, 1.0))[canonical_axis])

    def index_of_point(self, ras_mm) -> np.ndarray:
        """Canonical voxel index (x, y, z) nearest to a RAS point; UsageError when outside."""
        point = np.append(np.asarray(ras_mm, dtype=float), 1.0)
        voxel = (np.linalg.inv(self.affine) @ point)[:3]
        index = np.floor(voxel + 0.5).astype(int)
        if np.any(index < 0) or np.any(index >= np.array(self.shape)):
            low = self.affine @ np.array([0, 0, 0, 1.0])
            high = self.affine @ np.append(np.array(self.shape) - 1.0, 1.0)
            bounds = ", ".join(f"{min(a, b):.1f}..{max(a, b):.1f}"
                               for a, b in zip(low[:3], high[:3], strict=True))
            raise UsageError(f"--at {','.join(f'{v:g}' for v in ras_mm)} mm is outside the "
                             f"volume (RAS x, y, z within {bounds})",
                             "give RAS millimetres (DICOM LPS x and y change sign)")
        return index

    def centre_index(self) -> np.ndarray:
        return np.array(self.shape) // 2


def display_frame(volume: Volume, time_index: int = 0) -> Frame:
    """The canonical frame of one 3D volume (time_index for 4D volumes)."""

    array = volume.array
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim == 4:
        if not 0 <= time_index < array.shape[3]:
            raise UsageError(f"--volume {time_index} is out of range: the volume has "
                             f"{array.shape[3]} time points (0..{array.shape[3] - 1})")
        array = array[..., time_index]
    elif time_index:
        raise UsageError(f"--volume {time_index}: the image is 3D (only --volume 0)")
    if array.ndim != 3:
        raise UsageError(f"cannot preview a {array.ndim}D array of shape {array.shape}",
                         "preview takes 3D and 4D volumes")
    affine = np.asarray(volume.affine, dtype=float)
    ornt = io_orientation(affine)
    canonical = reoriented(array, ornt)
    canonical_affine = affine @ reorientation_affine(ornt, array.shape)
    return Frame(canonical, canonical_affine, ornt, tuple(array.shape), volume.slope,
                 volume.intercept, obliquity_degrees(affine))


@dataclass
class PlaneImage:
    """One displayed plane resampled to square pixels.

    values: (rows, cols) float32 real-world values (or (rows, cols, 3) for RGB).
    voxel_origin, voxel_col, voxel_row: canonical voxel coordinates of the centre of
    pixel (0, 0) and their step per column and per row, so that pixel (r, c) shows
    voxel_origin + c * voxel_col + r * voxel_row.
    """

    plane: str
    index: int  # canonical slice index along layout.normal
    layout: PlaneLayout
    values: np.ndarray
    voxel_origin: np.ndarray
    voxel_col: np.ndarray
    voxel_row: np.ndarray


def plane_extent_mm(frame: Frame, plane: str) -> tuple[float, float]:
    """(width, height) in mm of a plane's image: voxel count x spacing along each image axis."""
    layout = plane_layout(plane)
    spacing, shape = frame.spacing, frame.shape
    return (float(shape[layout.col_axis] * spacing[layout.col_axis]),
            float(shape[layout.row_axis] * spacing[layout.row_axis]))


def extract_plane(frame: Frame, plane: str, index: int, pixel_mm: float,
                  neurological: bool = False, interpolation: str = "linear") -> PlaneImage:
    """A plane through canonical slice `index`, resampled to pixel_mm square pixels.

    The image spans the voxels' full extent (from the outer edge of the first voxel
    to that of the last); each image axis gets round(extent / pixel_mm) pixels (at
    least one), so pixels are square to within half a pixel over the whole image.
    """
    layout = plane_layout(plane, neurological)
    shape, spacing = frame.shape, frame.spacing
    if not 0 <= index < shape[layout.normal]:
        raise UsageError(f"slice {index} is outside 0..{shape[layout.normal] - 1}")
    taker: list[slice | int] = [slice(None)] * 3
    taker[layout.normal] = index
    data = frame.array[tuple(taker)]  # 2D, remaining axes in ascending canonical order
    if layout.col_axis > layout.row_axis:
        data = data.T
    # data is now indexed (col_axis, row_axis); make it (rows, cols) in display order.
    data = data.T
    if layout.row_reversed:
        data = data[::-1]
    if layout.col_reversed:
        data = data[:, ::-1]
    data = _real_values(frame, data)
    n_rows, n_cols = shape[layout.row_axis], shape[layout.col_axis]
    out_rows = max(1, int(round(n_rows * spacing[layout.row_axis] / pixel_mm)))
    out_cols = max(1, int(round(n_cols * spacing[layout.col_axis] / pixel_mm)))
    linear = interpolation == "linear"
    values = _resample_axis(_resample_axis(data, 0, out_rows, linear), 1, out_cols, linear)
    # Pixel centre c sits at display index (c + 0.5) * n / out - 0.5.
    origin = np.zeros(3)
    origin[layout.normal] = index
    col_step, row_step = np.zeros(3), np.zeros(3)
    for axis, reversed_, count, out, step in (
            (layout.col_axis, layout.col_reversed, n_cols, out_cols, col_step),
            (layout.row_axis, layout.row_reversed, n_rows, out_rows, row_step)):
        first = 0.5 * count / out - 0.5
        increment = count / out
        origin[axis] = count - 1 - first if reversed_ else first
        step[axis] = -increment if reversed_ else increment
    return PlaneImage(plane, index, layout, values, origin, col_step, row_step)


def _real_values(frame: Frame, data: np.ndarray) -> np.ndarray:
    if frame.is_rgb:
        return np.stack([data[c] for c in "RGB"], axis=-1).astype(np.float32)
    values = data.astype(np.float32)
    if (frame.slope, frame.intercept) != (1.0, 0.0):
        values *= np.float32(frame.slope)
        values += np.float32(frame.intercept)
    return values


def _resample_axis(data: np.ndarray, axis: int, count: int, linear: bool) -> np.ndarray:
    """Resample one axis from n to count samples, pixel centres at (c + 0.5) * n / count - 0.5."""
    n = data.shape[axis]
    if count == n:
        return np.ascontiguousarray(data)
    source = (np.arange(count) + 0.5) * (n / count) - 0.5
    if not linear or n == 1:
        index = np.clip(np.floor(source + 0.5).astype(int), 0, n - 1)
        return np.take(data, index, axis=axis)
    source = np.clip(source, 0, n - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, n - 1)
    weight = (source - low).astype(np.float32)
    shape = [1] * data.ndim
    shape[axis] = count
    weight = weight.reshape(shape)
    below = np.take(data, low, axis=axis)
    above = np.take(data, high, axis=axis)
    return below + (above - below) * weight


def pixel_world(frame: Frame, image: PlaneImage) -> np.ndarray:
    """(rows, cols, 3) RAS mm of each pixel centre of a plane image."""
    rows, cols = image.values.shape[:2]
    r = np.arange(rows, dtype=float)[:, None, None]
    c = np.arange(cols, dtype=float)[None, :, None]
    voxel = image.voxel_origin + c * image.voxel_col + r * image.voxel_row
    return voxel @ frame.affine[:3, :3].T + frame.affine[:3, 3]
