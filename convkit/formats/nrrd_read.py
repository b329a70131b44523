"""NRRD (.nrrd attached, .nhdr detached) -> Volume, honouring the file's own `space`.

pynrrd converts nothing: a RAS-space NRRD and an LPS-space NRRD of the same image
have opposite x and y directions in their headers. Both become the same RAS affine
here. Non-spatial axes (RGB, a list of time points or components) must come first
(as ITK and Slicer write them) or last; they end up last (i, j, k, t).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit.errors import InputError, RefusedError, exception_reason
from convkit.volume import RGB_DTYPE, Volume

#: NRRD spaces -> sign of x, y, z relative to RAS.
SPACE_SIGNS = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
    "scanner-xyz": (1, 1, 1),
}


def read_nrrd(path: Path) -> Volume:
    """Real values and RAS affine of an NRRD file (3D, or 3D plus leading non-spatial axes)."""
    import nrrd

    try:
        data, header = nrrd.read(str(path), index_order="F")
    except Exception as exc:  # pynrrd raises its own and numpy errors for damaged files
        reason = exception_reason(exc)
        raise InputError(f"{path}: cannot read NRRD ({reason})",
                         "the file may be truncated, or its data file missing") from exc
    space = str(header.get("space", "")).strip().lower()
    if space not in SPACE_SIGNS or "space directions" not in header:
        raise RefusedError(f"{path}: NRRD without a 3D patient space (space: {space or 'none'})",
                           "only NRRDs with 'space' and 'space directions' have a world geometry")
    affine, spatial = nrrd_geometry(header)
    leading = spatial == list(range(data.ndim - 3, data.ndim))
    if affine is None or data.ndim > 4 or not (leading or spatial == [0, 1, 2]):
        raise RefusedError(f"{path}: {len(spatial)} spatial axes of {data.ndim} (convkit reads "
                           "3D volumes with one optional list, time or RGB axis)")
    if not np.all(np.isfinite(affine)):
        raise RefusedError(f"{path}: the NRRD's space origin or directions are not finite",
                           "set 'space origin' and 'space directions' to real numbers")
    kinds = [str(k).lower() for k in header.get("kinds", [])]
    array = _move_components_last(data, kinds) if leading else data
    metadata = {"Format": "NRRD", "space": space,
                "kinds": kinds, "encoding": str(header.get("encoding", ""))}
    return Volume(np.asfortranarray(array), affine, metadata=metadata)


def nrrd_geometry(header: dict) -> tuple[np.ndarray | None, list[int]]:
    """(RAS affine, or None without a 3D patient space; indices of the spatial axes).

    The affine is built from 'space directions' (one row per spatial axis, in the
    file's space) and 'space origin' (zero when absent), with the signs of the
    header's own space. Axes whose direction is 'none' are not spatial.
    """
    space = str(header.get("space", "")).strip().lower()
    directions = header.get("space directions")
    if directions is None:
        return None, []
    directions = np.asarray(directions, dtype=float)
    spatial = [i for i, row in enumerate(directions) if np.all(np.isfinite(row))]
    if space not in SPACE_SIGNS or len(spatial) != 3:
        return None, spatial
    signs = np.array(SPACE_SIGNS[space], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = (directions[spatial] * signs).T
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float)
    affine[:3, 3] = origin * signs
    return affine, spatial


def _move_components_last(data: np.ndarray, kinds: list[str]) -> np.ndarray:
    if data.ndim == 3:
        return data
    if data.ndim == 4 and kinds and kinds[0] in ("rgb-color", "rgb") and data.shape[0] == 3:
        rgb = np.empty(data.shape[1:], dtype=RGB_DTYPE, order="F")
        for channel, name in enumerate("RGB"):
            rgb[name] = data[channel]
        return rgb
    if data.ndim == 4:
        return np.moveaxis(data, 0, 3)
    raise RefusedError(f"NRRD with {data.ndim} dimensions is not supported")
