"""Volume: a voxel array, its affine and its metadata, the one currency of convkit.

Conventions (see geometry.py): ``array`` is indexed (i, j, k[, t]) and held in
Fortran order, so that ``array[:, :, k]`` is one contiguous DICOM slice and the
bytes are already in NIfTI's on-disk order. ``affine`` maps (i, j, k) to RAS mm.
``array`` holds stored values; real-world values are ``array * slope + intercept``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from convkit.errors import InputError
from convkit.geometry import axis_codes

RGB_DTYPE = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
#: The largest image convkit allocates by default (a header describing more is corrupt, not
#: a scan): checked against the header before any voxel is read or decompressed. Raise it
#: for one call with max_bytes=, for a block of code with memory_limit(), on the command
#: line with --max-memory.
MAX_VOLUME_BYTES = 16 * 1024**3
_LIMIT: ContextVar[int] = ContextVar("convkit_max_volume_bytes", default=MAX_VOLUME_BYTES)
#: What a refusal for size tells the user to do when the image is real.
LIMIT_HINT = "the header looks corrupt (its sizes); if the image is real, raise --max-memory"


def max_volume_bytes() -> int:
    """The limit in force: MAX_VOLUME_BYTES unless memory_limit() set another."""
    return _LIMIT.get()


@contextmanager
def memory_limit(nbytes: int | None) -> Iterator[None]:
    """Within the block, images up to nbytes are allocated (None: the default limit)."""
    token = _LIMIT.set(MAX_VOLUME_BYTES if nbytes is None else int(nbytes))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def set_memory_limit(nbytes: int) -> None:
    """Set the limit for the rest of the current context (the CLI runs each command in a
    context of its own); prefer memory_limit() in library code."""
    _LIMIT.set(int(nbytes))


def check_volume_bytes(nbytes: int, what: str, max_bytes: int | None = None) -> None:
    """Raise InputError when an image of nbytes is larger than max_bytes (default: the limit
    in force): 'WHAT: the image needs N GiB, limit M GiB'."""
    limit = max_volume_bytes() if max_bytes is None else max_bytes
    if nbytes > limit:
        raise InputError(f"{what}: the image needs {format_gib(nbytes)}, limit "
                         f"{format_gib(limit)}", LIMIT_HINT, "volume.too-large")


def format_gib(nbytes: int) -> str:
    """'16 GiB', '8.4 GiB', '0.0012 GiB' (3 significant digits), or '1000 bytes' below 1 MiB."""
    if nbytes < 1024**2:
        return f"{nbytes} bytes"
    gib = nbytes / 1024**3
    return f"{gib:.0f} GiB" if gib >= 1000 else f"{gib:.3g} GiB"


@dataclass
class Volume:
    """A 3D or 4D image in RAS world space.

    array: (i, j, k[, t]) stored values (Fortran order), or RGB_DTYPE for colour.
    affine: 4x4, voxel index -> RAS mm.
    slope, intercept: real-world value = stored * slope + intercept.
    metadata: acquisition fields for the JSON sidecar (no patient identifiers
        unless asked for).
    notes: what convkit did to get here (tilt corrected, resampled, ...), for
        people and for the sidecar.
    diffusion: the gradient table of a diffusion series: b-values and unit LPS
        directions per volume (NaN rows for b=0); written as FSL .bval/.bvec.
        Directions are None when they are unknown: only the .bval is written.
    """

    array: np.ndarray
    affine: np.ndarray
    slope: float = 1.0
    intercept: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    repetition_time_s: float | None = None
    diffusion: tuple[np.ndarray, np.ndarray | None] | None = None  # b (t,), LPS (t, 3) or None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size (mm) along i, j, k."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def is_rgb(self) -> bool:
        return self.array.dtype == RGB_DTYPE

    @property
    def scaled(self) -> bool:
        return (self.slope, self.intercept) != (1.0, 0.0)

    @property
    def orientation(self) -> str:
        """Closest canonical axis codes, e.g. 'LPS' or 'RAS'."""
        return axis_codes(self.affine)

    def real_array(self, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
        """Real-world values (stored * slope + intercept) as a new array of dtype."""
        if self.is_rgb:
            return self.array.copy()
        if not self.scaled:
            return self.array.astype(dtype, order="F")
        real = self.array.astype(dtype, order="F")
        real *= dtype_type(dtype)(self.slope)
        real += dtype_type(dtype)(self.intercept)
        return real


def dtype_type(dtype: npt.DTypeLike) -> type:
    return np.dtype(dtype).type
