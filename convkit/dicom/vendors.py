"""Vendor-specific (private) attributes that change what the pixels mean."""

from __future__ import annotations

from typing import Any

from convkit.dicom import values


def is_philips(manufacturer: str) -> bool:
    return "PHILIPS" in manufacturer.upper()


def philips_scale_slope(ds: Any) -> float | None:
    """Philips' private MR scale slope (2005,100E) in ds (a Philips dataset or frame item).

    Philips stores display values DV = PV * RescaleSlope + RescaleIntercept; the
    'precise' (floating point) value is FP = DV / (RescaleSlope * scale slope).
    """
    try:
        element = ds.get_private_item(0x2005, 0x0E, "Philips MR Imaging DD 001")
    except (KeyError, ValueError):
        element = ds.get((0x2005, 0x100E))
    value = values.to_float(getattr(element, "value", None))
    return value if value else None
