"""NIfTI (.nii / .nii.gz, NIfTI-1 and -2) -> Volume, with the header's ambiguities reported.

Which affine: the sform when its code is set (as ITK does since 2020), else the
qform, else the zooms (ANALYZE-like). A qform and an sform that disagree are
ambiguous: the sform wins and Volume.notes says so. A sheared sform (e.g. gantry
tilt written by another converter) cannot be represented by a qform; it is kept
as the affine and reported, never replaced by the qform silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convkit.errors import InputError, RefusedError, exception_reason
from convkit.geometry import is_sheared
from convkit.volume import RGB_DTYPE, Volume

#: qform and sform closer than this (mm, on any affine entry) agree.
QFORM_SFORM_ATOL_MM = 1e-3
SHEARED_SFORM_NOTE = "the sform is sheared (not representable by a qform)"


def read_nifti(path: Path) -> Volume:
    """Stored values, scaling and RAS affine of a NIfTI file (the whole file is checked)."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        # nibabel types load() as FileBasedImage (no dataobj, header without get_zooms); a .nii
        # loads as a Nifti1Image or Nifti2Image whose dataobj is an ArrayProxy.
        proxy = image.dataobj  # type: ignore[attr-defined]
        array = np.asarray(proxy.get_unscaled())
    except Exception as exc:  # nibabel raises many types for damaged files
        reason = exception_reason(exc)
        raise InputError(f"{path}: cannot read NIfTI ({reason})",
                         "the file may be truncated or not NIfTI") from exc
    if array.ndim == 2:
        array = array[:, :, np.newaxis]  # one slice: a 3D volume of depth 1
    if array.ndim > 4:
        raise RefusedError(f"{path}: a {array.ndim}D NIfTI is not supported",
                           "convkit handles 3D volumes and 4D time series")
    header = image.header
    affine, notes = choose_affine(header)
    slope, intercept = proxy.slope, proxy.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    intercept = 0.0 if intercept is None or not np.isfinite(intercept) else float(intercept)
    if array.dtype.names and array.dtype != RGB_DTYPE:
        array = array.astype(RGB_DTYPE)
    metadata = nifti_fields(header)
    volume = Volume(np.asfortranarray(array), affine, slope, intercept, metadata, notes)
    zooms = header.get_zooms()  # type: ignore[attr-defined]  # a Nifti1Header: see above
    if len(zooms) > 3 and zooms[3] > 0:
        volume.repetition_time_s = float(zooms[3]) * _time_unit_seconds(header)
    return volume


def choose_affine(header) -> tuple[np.ndarray, list[str]]:
    """(affine, notes): the sform when set, else the qform, else the zooms."""
    notes = []
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if scode and scode > 0:
        if qcode and qcode > 0 and not np.allclose(qform, sform, atol=QFORM_SFORM_ATOL_MM):
            notes.append("qform and sform disagree: the sform is used")
        if is_sheared(sform):
            notes.append(SHEARED_SFORM_NOTE)
        return sform, notes
    if qcode and qcode > 0:
        return qform, notes
    notes.append("neither qform nor sform is set: the affine is only the voxel sizes")
    return header.get_base_affine(), notes


def nifti_fields(header) -> dict:
    """Header fields worth reporting (descrip may carry identifying text: audit checks it)."""
    spatial, temporal = header.get_xyzt_units()
    return {
        "Format": f"NIfTI-{2 if header.sizeof_hdr == 540 else 1}",
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "descrip": header["descrip"].item().decode(errors="replace").strip("\x00 "),
        "xyzt_units": [spatial, temporal],
        "intent": str(header.get_intent()[0]),
    }


def _time_unit_seconds(header) -> float:
    return {"msec": 1e-3, "usec": 1e-6}.get(header.get_xyzt_units()[1], 1.0)
