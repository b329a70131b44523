"""Display windows: CT presets, the DICOM window, percentiles; values -> 0..255 grey.

A window (centre L, width W) maps L - W/2 to 0 and L + W/2 to 255, linearly,
clipping outside (the usual CT display convention; DICOM's VOI LUT formula
differs by at most one grey level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from convkit.errors import UsageError

#: CT window presets: name -> (centre L, width W) in Hounsfield units.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 2000.0),
    "brain": (40.0, 80.0),
    "soft-tissue": (40.0, 400.0),
}
#: Percentiles of the volume's values that bound the window when nothing better is known.
DEFAULT_PERCENTILES = (1.0, 99.0)
#: Values in this range (HU) are air; a volume where at least AIR_FRACTION of the sampled
#: voxels are air, and none is below MIN_PLAUSIBLE_HU, is taken to be in Hounsfield units.
AIR_HU_RANGE = (-1100.0, -900.0)
AIR_FRACTION = 0.02
MIN_PLAUSIBLE_HU = -3100.0  # padding outside a CT's field of view is often -2048 or -3024
#: Lung-density values (HU); this fraction of sampled voxels in it makes 'lung' the default
#: preset of a CT whose body part is not known.
LUNG_HU_RANGE = (-950.0, -500.0)
LUNG_FRACTION = 0.05
#: Voxels sampled (evenly strided) to choose a default window.
SAMPLE_VOXELS = 1_000_000

_BODY_PART_PRESETS = (
    (("HEAD", "BRAIN", "SKULL"), "brain"),
    (("CHEST", "LUNG", "THORAX", "THX"), "lung"),
)


@dataclass(frozen=True)
class Window:
    """centre and width (real-world units), where they came from, and a preset name."""

    center: float
    width: float
    source: str  # 'preset', 'wl', 'dicom', 'ct-default', 'percentile', 'rgb'
    name: str = ""  # preset name, when one was used
    reason: str = ""  # why this default was chosen

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2

    def describe(self) -> str:
        """'lung W 1500 L -600' or 'W 1500 L -600 (DICOM)'."""
        values = f"W {self.width:g} L {self.center:g}"
        if self.name:
            return f"{self.name} {values}"
        label = {"dicom": "DICOM", "percentile": "1-99%"}.get(self.source)
        return f"{values} ({label})" if label else values

    def to_json(self) -> dict[str, Any]:
        return {"center": self.center, "width": self.width, "low": self.low, "high": self.high,
                "source": self.source, "preset": self.name or None,
                "reason": self.reason or None}


def parse_wl(text: str) -> Window:
    """'CENTER,WIDTH' -> Window (UsageError when malformed or width <= 0)."""
    try:
        center, width = (float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--wl {text!r}: expected CENTER,WIDTH, e.g. --wl -600,1500") from None
    if not width > 0:
        raise UsageError(f"--wl {text!r}: the width must be positive")
    return Window(center, width, "wl")


def preset_window(name: str) -> Window:
    if name not in WINDOW_PRESETS:
        raise UsageError(f"unknown window preset {name!r}",
                         f"choose one of {', '.join(WINDOW_PRESETS)} or give --wl CENTER,WIDTH")
    center, width = WINDOW_PRESETS[name]
    return Window(center, width, "preset", name)


def choose_window(values: np.ndarray, metadata: dict[str, Any], slope: float = 1.0,
                  intercept: float = 0.0) -> Window:
    """The default window of a volume.

    1. the DICOM window (WindowCenter/WindowWidth; the first pair when there are several);
    2. a CT preset when the values are Hounsfield units (Modality CT or RescaleType HU
       in the metadata, or, without them, values that look like HU: some air and nothing
       implausible): 'brain' for a head, 'lung' for a chest (by BodyPartExamined,
       SeriesDescription or ProtocolName) or when lung-density voxels abound,
       'soft-tissue' otherwise;
    3. the 1st-99th percentile of the values.

    values: stored values (any layout, any number of dimensions); real-world = stored *
    slope + intercept. Only a strided sample of SAMPLE_VOXELS is read.
    """
    dicom = _dicom_window(metadata)
    if dicom is not None:
        return dicom
    sample = _sample(values).astype(np.float32) * np.float32(slope) + np.float32(intercept)
    sample = sample[np.isfinite(sample)]
    hu_reason = _hounsfield_reason(sample, metadata)
    if hu_reason:
        name, why = _ct_preset(sample, metadata)
        center, width = WINDOW_PRESETS[name]
        return Window(center, width, "ct-default", name, f"{hu_reason}; {why}")
    if sample.size == 0:
        return Window(0.5, 1.0, "percentile", reason="no finite values")
    low, high = (float(v) for v in np.percentile(sample, DEFAULT_PERCENTILES))
    center, width = (low + high) / 2, high - low
    if not width > 0:  # a flat image, centred; at 1e38 a width of 1 is lost: scale it
        center, width = low, max(1.0, abs(low) * 1e-6)
    return Window(center, width, "percentile",
                  reason="no DICOM window and not Hounsfield units")


def hounsfield_reason(volume) -> str:
    """Why a Volume's real-world values are Hounsfield units ('' when they are not)."""
    array = volume.array[..., 0] if volume.array.ndim == 4 else volume.array
    if volume.is_rgb:
        return ""
    sample = _sample(array).astype(np.float32) * np.float32(volume.slope)
    sample += np.float32(volume.intercept)
    return _hounsfield_reason(sample[np.isfinite(sample)], volume.metadata)


def _dicom_window(metadata: dict[str, Any]) -> Window | None:
    center, width = metadata.get("WindowCenter"), metadata.get("WindowWidth")
    if isinstance(center, list):
        center = center[0] if center else None
    if isinstance(width, list):
        width = width[0] if width else None
    if center is None or width is None:
        return None
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        return None
    return Window(center, width, "dicom", reason="WindowCenter/WindowWidth of the series")


def _hounsfield_reason(sample: np.ndarray, metadata: dict[str, Any]) -> str:
    if str(metadata.get("RescaleType", "")).upper() == "HU":
        return "RescaleType HU"
    if str(metadata.get("Modality", "")).upper() == "CT":
        return "Modality CT"
    if metadata.get("Modality"):
        return ""  # another modality: never guess HU
    if sample.size == 0 or sample.min() < MIN_PLAUSIBLE_HU:
        return ""
    air = np.mean((sample >= AIR_HU_RANGE[0]) & (sample <= AIR_HU_RANGE[1]))
    return "values look like Hounsfield units (air at -1000)" if air >= AIR_FRACTION else ""


def _ct_preset(sample: np.ndarray, metadata: dict[str, Any]) -> tuple[str, str]:
    for key in ("BodyPartExamined", "SeriesDescription", "ProtocolName"):
        text = str(metadata.get(key, "") or "").upper()
        for words, name in _BODY_PART_PRESETS:
            if any(word in text for word in words):
                return name, f"{key} {metadata[key]!s}"
    if sample.size:
        lung = np.mean((sample >= LUNG_HU_RANGE[0]) & (sample <= LUNG_HU_RANGE[1]))
        if lung >= LUNG_FRACTION:
            return "lung", f"{100 * lung:.0f}% of voxels at lung density"
    return "soft-tissue", "body part unknown"


def _sample(values: np.ndarray) -> np.ndarray:
    """About SAMPLE_VOXELS values, strided evenly along every axis (no copy of the volume)."""
    values = np.asarray(values)
    if values.size <= SAMPLE_VOXELS:
        return values.ravel()
    stride = int(np.ceil((values.size / SAMPLE_VOXELS) ** (1 / values.ndim)))
    return values[(slice(None, None, stride),) * values.ndim].ravel()


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """uint8 grey: window.low -> 0, window.high -> 255, linear between, clipped (NaN -> 0)."""
    scaled = (np.asarray(values, dtype=np.float32) - np.float32(window.low))
    scaled *= np.float32(255.0 / window.width)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0, 255, out=scaled)
    return np.rint(scaled).astype(np.uint8)
