"""The one place that tells segmentation objects from images, by SOPClassUID."""

from __future__ import annotations

#: Segmentation Storage (BINARY and FRACTIONAL) and Label Map Segmentation Storage.
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"

_KINDS = {SEG_STORAGE: "SEG", LABELMAP_SEG_STORAGE: "SEG", RTSTRUCT_STORAGE: "RTSTRUCT"}


def segmentation_kind(sop_class_uid: str) -> str:
    """'SEG', 'RTSTRUCT', or '' for anything else."""
    return _KINDS.get(str(sop_class_uid).strip(), "")
