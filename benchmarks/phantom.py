"""The synthetic chest CT that convert.py and preview.py time: one recipe for both."""

from __future__ import annotations

import numpy as np

SHAPE = (300, 512, 512)  # slices, rows, columns
PIXEL_SPACING_MM = (0.7, 0.7)
SLICE_SPACING_MM = 1.0
RESCALE_INTERCEPT = -1024
SEED = 0


def stored_values() -> np.ndarray:
    """The phantom as stored int16 values (slices, rows, columns): HU - RESCALE_INTERCEPT."""
    from convkit.testing import phantoms

    hu = phantoms.chest_ct_hu(SHAPE, PIXEL_SPACING_MM, SLICE_SPACING_MM, SEED)
    hu -= RESCALE_INTERCEPT
    return np.rint(hu, out=hu).astype(np.int16)
