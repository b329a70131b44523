"""A SEG or RTSTRUCT file as a label Volume on a given grid (preview --overlay, compare).

Unlike dicom2nii (which refuses a SEG off its source grid), a viewer or a comparison
wants the labels on the grid of the image beside it: the SEG's segments are placed there
exactly when the grids share voxel centres, else by nearest neighbour (noted); RTSTRUCT
contours are rasterised on it directly. Overlapping segments are drawn in segment order
(a later segment covers an earlier one; noted).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from convkit.seg.dicomseg import hd_label_channels, segments_json
from convkit.seg.rtstruct import read_rtstruct
from convkit.seg.sampling import place_labels
from convkit.seg.sopclass import segmentation_file_kind
from convkit.volume import Volume


def segmentation_on_grid(path: Path | str, affine: np.ndarray, grid_shape: tuple[int, ...]
                         ) -> Volume:
    """The labels of the SEG/RTSTRUCT at path on the grid affine (RAS) / grid_shape (3D; a
    4D image's time axis is ignored)."""
    path = Path(path)
    shape = _shape3(grid_shape)
    notes: list[str] = []
    masks: list[np.ndarray]
    if segmentation_file_kind(path) == "RTSTRUCT":
        maps = read_rtstruct(path, affine, shape)
        numbers = [s["SegmentNumber"] for s in maps.segments]
        masks = maps.arrays if maps.overlap else [maps.arrays[0] == n for n in numbers]
        notes += maps.notes
        metadata = maps.metadata
    else:
        seg, numbers, channels, seg_affine = hd_label_channels(path)
        masks, worst = [], 0.0
        for channel in channels:
            placement = place_labels(channel, seg_affine, affine, shape, nearest=True)
            worst = max(worst, placement.residual)
            masks.append(placement.array)
        if worst > 0:
            notes.append(f"{path.name}: placed by nearest neighbour (voxel centres up to "
                         f"{worst:.3g} voxels apart)")
        metadata = {"Segments": segments_json(seg, numbers, masks)}
    labels = np.zeros(shape, dtype=np.uint16 if max(numbers, default=0) > 255 else np.uint8,
                      order="F")
    covered = np.zeros(shape, dtype=bool)
    for number, mask in zip(numbers, masks, strict=True):
        inside = np.asarray(mask) > 0
        if (covered & inside).any() and not any("overlap" in n for n in notes):
            notes.append(f"{path.name}: segments overlap (a later segment covers an earlier one)")
        covered |= inside
        labels[inside] = number
    return Volume(labels, affine, metadata=metadata, notes=notes)


def load_pair(paths: tuple[Path, Path], load: Callable[[Path, int], Volume]
              ) -> tuple[Volume, Volume]:
    """Two images for a comparison; a SEG/RTSTRUCT side is placed on the other side's grid.

    load(path, side) reads a volume file or DICOM folder (side 0 or 1)."""
    kinds = [segmentation_file_kind(p) for p in paths]
    if kinds[1] and not kinds[0]:
        a = load(paths[0], 0)
        return a, segmentation_on_grid(paths[1], a.affine, a.shape)
    if kinds[0] and not kinds[1]:
        b = load(paths[1], 1)
        return segmentation_on_grid(paths[0], b.affine, b.shape), b
    return load(paths[0], 0), load(paths[1], 1)


def _shape3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2] if len(shape) > 2 else 1)
