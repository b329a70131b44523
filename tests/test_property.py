"""Property test: any orientation, spacing, shape and slice order -> the known affine and array.

The expected affine is built here from first principles (see test_synthetic_series.py):
column 0 = row direction * PixelSpacing[1], column 1 = column direction * PixelSpacing[0],
column 2 = normal * slice spacing (slices sorted ascending along normal = row x col),
column 3 = position of the lowest slice, rows 0 and 1 negated for LPS -> RAS.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from helpers import rotation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convkit.dicom.series import read_series
from convkit.testing.synthetic import write_series

#: DS strings carry at most 16 characters (~13 significant digits for these magnitudes),
#: so 1e-4 mm is far above the rounding and far below any real error.
AFFINE_ATOL = 1e-4


finite = {"allow_nan": False, "allow_infinity": False}


@st.composite
def series_cases(draw):
    # Any angle, with multiples of 90 degrees (the canonical planes and their flips) common.
    angle = st.one_of(st.sampled_from([0.0, 90.0, 180.0, -90.0]),
                      st.floats(-180.0, 180.0, **finite))
    angles = draw(st.tuples(angle, angle, angle))
    n = draw(st.integers(1, 8))
    order = draw(st.sampled_from(["ascending", "descending", "shuffled"]))
    permutation = draw(st.permutations(range(n))) if order == "shuffled" else None
    return {
        "rotation": rotation(*angles),
        "pixel_spacing": (draw(st.floats(0.2, 3.0, **finite)), draw(st.floats(0.2, 3.0, **finite))),
        "slice_spacing": draw(st.floats(0.3, 6.0, **finite)),
        # Never equal to the slice spacing: catches spacing taken from SliceThickness.
        "thickness": draw(st.floats(0.5, 9.0, **finite)),
        "rows": draw(st.integers(2, 12)),
        "cols": draw(st.integers(2, 12)),
        "n": n,
        "origin": draw(st.tuples(*[st.floats(-300.0, 300.0, **finite)] * 3)),
        "order": order,
        "permutation": permutation,
        "dtype": draw(st.sampled_from(["int16", "uint16", "uint8"])),
        "rescale": draw(st.sampled_from([(None, None), (1.0, -1024.0), (2.5, 10.0)])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def expected_affine_ras(iop, pixel_spacing, positions, single_slice_spacing):
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    n = len(positions)
    spacing = ((distances[order[-1]] - distances[order[0]]) / (n - 1) if n > 1
               else single_slice_spacing)
    lps = np.eye(4)
    lps[:3, 0] = row * pixel_spacing[1]
    lps[:3, 1] = col * pixel_spacing[0]
    lps[:3, 2] = normal * spacing
    lps[:3, 3] = positions[order[0]]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, order


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=series_cases())
def test_any_geometry_gives_the_known_affine_and_array(case):
    rotation = case["rotation"]
    iop = tuple(rotation[:, 0]) + tuple(rotation[:, 1])
    n = case["n"]
    regular = np.asarray(case["origin"]) + np.outer(np.arange(n),
                                                     rotation[:, 2] * case["slice_spacing"])
    if case["order"] == "descending":
        written = np.arange(n)[::-1]
    elif case["order"] == "shuffled":
        written = np.array(case["permutation"], int)
    else:
        written = np.arange(n)
    positions = regular[written]
    info = np.iinfo(case["dtype"])
    rng = np.random.default_rng(case["seed"])
    stored = rng.integers(max(info.min, -3000), min(info.max, 3000), endpoint=True,
                          size=(n, case["rows"], case["cols"])).astype(case["dtype"])
    slope, intercept = case["rescale"]

    with tempfile.TemporaryDirectory() as folder:
        write_series(Path(folder), stored, positions, orientation=iop,
                     pixel_spacing=case["pixel_spacing"], slice_thickness=case["thickness"],
                     rescale_slope=slope, rescale_intercept=intercept, seed=case["seed"] % 1000)
        volume = read_series(Path(folder))

    affine, order = expected_affine_ras(iop, case["pixel_spacing"], positions, case["thickness"])
    np.testing.assert_allclose(volume.affine, affine, atol=AFFINE_ATOL, rtol=0)
    assert volume.shape == (case["cols"], case["rows"], n)
    expected = np.swapaxes(np.moveaxis(stored[order], 0, 2), 0, 1)  # [i, j, k] = slice k [j, i]
    assert volume.array.dtype == stored.dtype
    np.testing.assert_array_equal(volume.array, expected)
    assert (volume.slope, volume.intercept) == ((slope, intercept) if slope else (1.0, 0.0))
    np.testing.assert_allclose(
        volume.spacing,
        (case["pixel_spacing"][1], case["pixel_spacing"][0],
         case["slice_spacing"] if n > 1 else case["thickness"]),
        rtol=1e-9, atol=1e-9)
    assert volume.metadata["TiltCorrected"] is False
    assert volume.metadata["Resampled"] is False
