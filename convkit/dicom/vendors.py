"""Vendor-specific (private) attributes: where they live and how they are read.

PRIVATE_ELEMENTS lists every private element convkit reads, so that the fast tag
walker (fastheader.py) can capture them without pydicom's private dictionary.
"""

from __future__ import annotations

import functools
from typing import Any

from convkit.dicom import values
from convkit.dicom.csa import CSAError, read_csa, scalar
from convkit.errors import InputError

#: (group, private creator) -> {element offset in the creator's block: VR}.
PRIVATE_ELEMENTS: dict[tuple[int, str], dict[int, str]] = {
    (0x0019, "GEMS_ACQU_01"): {0xBB: "DS", 0xBC: "DS", 0xBD: "DS",  # GE gradient (logical)
                               0x9C: "LO", 0x9E: "LO",  # pulse sequence name, internal name
                               0xB3: "DS"},  # user data 12 (pepolar: which volumes reversed)
    (0x0021, "GEMS_RELA_01"): {0x4F: "SS"},  # GE locations in acquisition
    (0x0029, "SIEMENS CSA HEADER"): {0x10: "OB"},  # CSA image header
    (0x0043, "GEMS_PARM_01"): {0x39: "IS"},  # GE b-value (slop_int_6..9)
    (0x2001, "Philips Imaging DD 001"): {0x03: "FL", 0x04: "CS"},  # b-value, direction code
    (0x2005, "Philips MR Imaging DD 001"): {0x0E: "FL", 0xB0: "FL", 0xB1: "FL", 0xB2: "FL"},
    (0x0065, "Image Private Header"): {0x50: "DS"},  # UIH NumberOfImagesInGrid
}


def private_element(ds: Any, group: int, offset: int, creator: str) -> Any | None:
    """The element of creator's block at offset; its usual (gggg,10xx) address when the
    file has lost its private creators (some anonymisers drop them)."""
    try:
        return ds.get_private_item(group, offset, creator)
    except (KeyError, ValueError):
        pass
    if (group, 0x0010) in ds:  # the usual block belongs to another creator
        return None
    return ds.get((group, 0x1000 + offset))


@functools.lru_cache(maxsize=8)
def _parsed_csa(raw: bytes) -> dict[str, list[Any]]:
    """Mosaic layout, diffusion and phase encoding each read the same header of a file."""
    return read_csa(raw)


def siemens_csa_header(ds: Any) -> dict[str, list[Any]] | None:
    """The Siemens CSA image header (0029,xx10) as {tag name: values}; None when absent.

    Raises InputError when the header is present but damaged.
    """
    element = private_element(ds, 0x0029, 0x10, "SIEMENS CSA HEADER")
    raw = getattr(element, "value", None)
    if not raw:
        return None
    try:
        return dict(_parsed_csa(bytes(raw)))  # a copy: callers may replace entries
    except CSAError as exc:
        raise InputError(f"unreadable Siemens CSA image header: {exc}",
                         "the private tag (0029,xx10) is damaged") from exc


def is_uih(manufacturer: str) -> bool:
    """United Imaging Healthcare ('UIH', 'United Imaging')."""
    text = manufacturer.upper()
    return text.startswith("UIH") or "UNITED IMAGING" in text


def uih_grid_images(ds: Any) -> int:
    """How many images a UIH 'virtual frame' grid tiles into this one (UIH private
    NumberOfImagesInGrid (0065,xx50), as dcm2niix reads it); 0 when it is no grid."""
    if not is_uih(str(ds.get("Manufacturer", "") or "")):
        return 0
    element = private_element(ds, 0x0065, 0x50, "Image Private Header")
    try:
        count = values.to_float(getattr(element, "value", None), "UIH NumberOfImagesInGrid")
    except values.BadValueError:
        return 0
    return int(count) if count and count > 1 else 0


def is_ge(manufacturer: str) -> bool:
    return manufacturer.strip().upper().startswith("GE")


def ge_sequence_fields(ds: Any) -> dict[str, Any]:
    """GE's pulse sequence name (0019,109C, else the internal name 0019,109E, lower case),
    locations in acquisition (0021,104F) and user data 12 (0019,10B3): what tells a B0 field
    map from its magnitude and a reversed phase-encoding volume from a forward one."""
    names = [getattr(private_element(ds, 0x0019, offset, "GEMS_ACQU_01"), "value", None)
             for offset in (0x9C, 0x9E)]
    texts = [n.decode("latin-1") if isinstance(n, bytes) else str(n or "") for n in names]
    name = next((t.strip("\x00 ").lower() for t in texts if t.strip("\x00 ")), "")
    locations = values.to_int(getattr(private_element(ds, 0x0021, 0x4F, "GEMS_RELA_01"),
                                      "value", None), "GE locations in acquisition (0021,xx4F)")
    user12 = values.to_float(getattr(private_element(ds, 0x0019, 0xB3, "GEMS_ACQU_01"),
                                     "value", None), "GE user data 12 (0019,xxB3)")
    direction = str(ds.get("InPlanePhaseEncodingDirection", "") or "").strip().upper()
    return {"pulse_sequence": name, "ge_locations": locations, "ge_user_data12": user12,
            "ge_phase_direction": direction}


def is_philips(manufacturer: str) -> bool:
    return "PHILIPS" in manufacturer.upper()


def philips_scale_slope(ds: Any) -> float | None:
    """Philips' private MR scale slope (2005,100E) in ds (a Philips dataset or frame item).

    Philips stores display values DV = PV * RescaleSlope + RescaleIntercept; the
    'precise' (floating point) value is FP = DV / (RescaleSlope * scale slope).
    """
    element = private_element(ds, 0x2005, 0x0E, "Philips MR Imaging DD 001")
    value = values.to_float(getattr(element, "value", None), "Philips scale slope (2005,xx0E)")
    return value if value else None


def siemens_csa_scalar(ds: Any, name: str) -> Any:
    """One scalar from the Siemens CSA image header, or None (absent or damaged)."""
    try:
        return scalar(siemens_csa_header(ds), name)
    except InputError:
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
    if positive not in (0, 1) and is_ge(str(ds.get("Manufacturer", "") or "")):
        # GE (RX27+): RectilinearPhaseEncodeReordering LINEAR is the flipped polarity (dcm2niix)
        reordering = str(ds.get("RectilinearPhaseEncodeReordering", "") or "").upper()
        positive = {"LINEAR": 0, "REVERSE_LINEAR": 1}.get(reordering)
    if positive in (0, 1):
        fields["PhaseEncodingDirection"] = axis + ("" if positive == 1 else "-")
    recon_pe = columns if axis == "i" else rows
    bandwidth = values.finite_or_none(getattr(ds.get((0x0019, 0x1028)), "value", None)) or \
        values.finite_or_none(siemens_csa_scalar(ds, "BandwidthPerPixelPhaseEncode"))
    if bandwidth:
        fields["ReconMatrixPE"] = recon_pe
        fields["BandwidthPerPixelPhaseEncode"] = bandwidth
        fields["EffectiveEchoSpacing"] = round(1.0 / (bandwidth * recon_pe), 9)
        fields["TotalReadoutTime"] = round((recon_pe - 1) / (bandwidth * recon_pe), 9)
    return fields
