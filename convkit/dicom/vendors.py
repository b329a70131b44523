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


def siemens_csa_scalar(ds: Any, name: str) -> Any:
    """One scalar from the Siemens CSA image header, or None (via nibabel's reader)."""
    import warnings

    if (0x0029, 0x1010) not in ds:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel.nicom announces itself as experimental
        from nibabel.nicom import csareader

        try:
            csa = csareader.get_csa_header(ds, "image")
            return csareader.get_scalar(csa, name) if csa else None
        except (csareader.CSAReadError, KeyError, IndexError, ValueError):
            return None


def phase_encoding_fields(ds: Any, rows: int, columns: int) -> dict[str, Any]:
    """BIDS phase-encoding fields in convkit's voxel axes (i along a row, j down a column).

    PhaseEncodingDirection needs the polarity (Siemens CSA PhaseEncodingDirectionPositive);
    without it only PhaseEncodingAxis is given. EffectiveEchoSpacing and TotalReadoutTime
    follow from the bandwidth per pixel in the phase direction (Siemens (0019,1028)):
    1 / (bandwidth * ReconMatrixPE) and that times (ReconMatrixPE - 1).
    """
    direction = str(ds.get("InPlanePhaseEncodingDirection", "") or "").upper()
    if direction not in ("ROW", "COL"):
        return {}
    axis = "i" if direction == "ROW" else "j"
    fields: dict[str, Any] = {"PhaseEncodingAxis": axis}
    positive = siemens_csa_scalar(ds, "PhaseEncodingDirectionPositive")
    if positive in (0, 1):
        fields["PhaseEncodingDirection"] = axis + ("" if positive == 1 else "-")
    recon_pe = columns if axis == "i" else rows
    bandwidth = values.to_float(getattr(ds.get((0x0019, 0x1028)), "value", None)) or \
        values.to_float(siemens_csa_scalar(ds, "BandwidthPerPixelPhaseEncode"))
    if bandwidth:
        fields["ReconMatrixPE"] = recon_pe
        fields["BandwidthPerPixelPhaseEncode"] = bandwidth
        fields["EffectiveEchoSpacing"] = round(1.0 / (bandwidth * recon_pe), 9)
        fields["TotalReadoutTime"] = round((recon_pe - 1) / (bandwidth * recon_pe), 9)
    return fields
