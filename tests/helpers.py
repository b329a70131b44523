"""Helpers for tests: world-space comparison of volumes and dcm2niix as an oracle."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np

#: Affines must agree to this many mm (issue: 0.01 mm) after canonical reorientation.
AFFINE_ATOL_MM = 0.01


def canonical(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(scaled voxel values, affine) reoriented to the closest canonical (RAS+) axes."""
    image = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(image.dataobj)
    if data.dtype.names is None:
        data = image.get_fdata(dtype=np.float64)
    return data, image.affine


def assert_same_world(a: Path | str, b: Path | str, atol_values: float = 0.0) -> None:
    """Same shape, same affine (to AFFINE_ATOL_MM) and same values once both are canonical."""
    data_a, affine_a = canonical(a)
    data_b, affine_b = canonical(b)
    assert data_a.shape == data_b.shape, f"shape {data_a.shape} != {data_b.shape}"
    np.testing.assert_allclose(affine_a, affine_b, atol=AFFINE_ATOL_MM)
    if data_a.dtype.names:
        assert np.array_equal(data_a, data_b)
    else:
        np.testing.assert_allclose(data_a, data_b, atol=atol_values, rtol=0)


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix Rz(az) @ Ry(ay) @ Rx(ax), angles in degrees."""
    x, y, z = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def run_dcm2niix(binary: str, series_dir: Path, out_dir: Path) -> list[Path]:
    """Convert series_dir with dcm2niix (uncompressed NIfTI) and return the .nii files it wrote."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([binary, "-z", "n", "-b", "y", "-f", "%s_%d", "-o", str(out_dir),
                    str(series_dir)], check=True, capture_output=True, timeout=300)
    return sorted(out_dir.glob("*.nii"))
