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


def segmentation_file_kind(path: object) -> str:
    """'SEG' or 'RTSTRUCT' for a DICOM file holding one, '' for anything else (a volume
    file, a folder, other DICOM); reads only the first elements of the file."""
    from pathlib import Path

    path = Path(str(path))
    if not path.is_file():  # a folder, a FIFO (opening one would wait for a writer)
        return ""
    try:
        with open(path, "rb") as handle:
            if handle.read(132)[128:] != b"DICM":  # what pydicom (force=False) refuses too:
                return ""  # a volume file is told without importing it
    except OSError:  # unreadable: not a segmentation convkit can read either
        return ""
    try:
        import pydicom

        dataset = pydicom.dcmread(path, stop_before_pixels=True, force=False,
                                  specific_tags=["SOPClassUID"])
    except Exception:  # not DICOM at all (a NIfTI, an NRRD): not a segmentation object
        return ""
    meta = getattr(dataset, "file_meta", None)
    uid = dataset.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "")
                                             if meta is not None else "")
    return segmentation_kind(str(uid))
