"""Diffusion gradient tables: b-values and gradient directions from DICOM, FSL bval/bvec.

Pure functions over pydicom Datasets and numpy arrays; the series reader decides
which volumes they apply to. Directions are unit vectors in the DICOM patient
frame (LPS) until ``fsl_bvecs`` turns them into the voxel frame of one image.

Where each vendor keeps the table, in the order ``diffusion_of`` reads it:

1. Standard attributes (any vendor, single-frame or enhanced): DiffusionBValue
   (0018,9087), DiffusionDirectionality (0018,9075) and DiffusionGradientOrientation
   (0018,9089), at the top level or inside MRDiffusionSequence (0018,9117) /
   DiffusionGradientDirectionSequence (0018,9076) of a frame's functional groups.
   PS3.3 defines the orientation as direction cosines in the patient frame (LPS).
   A BMATRIX directionality gives the direction as the principal eigenvector of
   DiffusionBMatrixSequence (0018,9601): a b-matrix has no sign, so the vector's
   polarity is a convention (first non-zero component positive); FSL does not mind.
2. Siemens CSA image header (0029,xx10 of 'SIEMENS CSA HEADER'), read with
   convkit.dicom.csa: B_value and DiffusionGradientDirection, in the
   patient frame (LPS) like the standard attribute. nibabel documents the CSA
   B_matrix as "the DICOM patient coordinate space" and dcm2niix projects these
   vectors on ImageOrientationPatient exactly as it does (0018,9089); for
   non-HFS patient positions dcm2niix applies the same projection (its issue 238)
   and only warns. A b-value with no direction is a trace (isotropic) image.
3. GE private tags: (0043,xx39) of 'GEMS_PARM_01', first value = b-value, with a
   bias of 1e9 added for multi-b and synthetic-b series (the bias itself is in
   (0043,xx7F); dcm2niix strips it with ``b % 1e9``, its issue 602). The gradient
   (0019,xxBB/BC/BD of 'GEMS_ACQU_01') is NOT in the patient frame: GE stores it
   in the "MR physics" logical frame (frequency, phase, slice), whose signs depend
   on the slice plane and the phase-encoding axis (dcm2niix GE notes; its issues
   970/971 fixed the coronal + ROW case as late as 2025). There is no documented
   rule from those values to LPS, so a GE directional volume without the standard
   attribute is refused (``GradientFrameError``) rather than guessed.
4. Philips private tags: b-value (2001,xx03) of 'Philips Imaging DD 001';
   direction (2005,xxB0/B1/B2) of 'Philips MR Imaging DD 001', named RL, AP, FH:
   the LPS x, y, z components (patient frame; dcm2niix treats them exactly as
   (0018,9089), and its issue 182 shows a Philips through-plane gradient whose
   private vector equals the LPS slice normal). (2001,xx04) = 'I' marks the
   isotropic (trace) image, whose stored direction may be stale.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convkit.dicom import csa, values
from convkit.dicom.vendors import private_element, siemens_csa_header
from convkit.errors import InputError, RefusedError
from convkit.geometry import is_sheared

#: Gradient vectors shorter than this are "no direction" (b=0 or isotropic).
ZERO_VECTOR_NORM = 1e-3
#: b-values at or below this (s/mm^2) count as b=0 for directions (Philips stores 0.001...).
B0_THRESHOLD = 1e-3
#: GE adds this to the b-value in (0043,xx39) of multi-b and synthetic-b series.
GE_BVALUE_BIAS = 1_000_000_000
#: ImageType values that mark a computed diffusion map, never a DWI volume.
DERIVED_DIFFUSION_TYPES = frozenset({"ADC", "EADC", "TRACEW", "TRACE", "FA", "COLFA"})

#: LPS <-> RAS for a direction: negate x and y.
LPS_RAS_SIGNS = np.array([-1.0, -1.0, 1.0])

_B_MATRIX_KEYWORDS = ("DiffusionBValueXX", "DiffusionBValueXY", "DiffusionBValueXZ",
                      "DiffusionBValueYY", "DiffusionBValueYZ", "DiffusionBValueZZ")


class GradientFrameError(RefusedError):
    """Gradient directions are stored in a frame that cannot be mapped to LPS faithfully."""


@dataclass(frozen=True, eq=False)
class Diffusion:
    """The diffusion weighting of one image (a DICOM file or one frame of it).

    bvalue: s/mm^2 as stored (vendor biases removed).
    direction_lps: unit gradient direction in the DICOM patient frame (LPS), or
        None for b=0 and for isotropic (trace) images.
    source: where it was read: 'standard', 'siemens-csa', 'ge-private' or
        'philips-private'.
    """

    bvalue: float
    direction_lps: np.ndarray | None
    source: str = "standard"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Diffusion):
            return NotImplemented
        if (self.direction_lps is None) != (other.direction_lps is None):
            return False
        same_direction = self.direction_lps is None or other.direction_lps is None or bool(
            np.array_equal(self.direction_lps, other.direction_lps))
        return (self.bvalue, self.source) == (other.bvalue, other.source) and same_direction

    __hash__ = None  # type: ignore[assignment]  # holds an array

    @property
    def is_b0(self) -> bool:
        return self.bvalue <= B0_THRESHOLD

    @property
    def is_isotropic(self) -> bool:
        """b > 0 without a direction: a trace-weighted image, a separate output from the DWI."""
        return not self.is_b0 and self.direction_lps is None


def diffusion_of(ds: Any, frame: Any | None = None) -> Diffusion | None:
    """b-value and LPS gradient direction of one image, or None when it holds none.

    ds: the pydicom Dataset (single-frame file, or the enhanced file itself).
    frame: for enhanced (multi-frame) files, one per-frame functional-group item
        already merged with the shared groups by the caller (or ds itself); its
        MRDiffusionSequence is read before anything at the top level.

    Sources are tried in order (see the module docstring): standard attributes,
    Siemens CSA, GE private, Philips private. A standard b > 0 without a direction
    (GE RX27 writes DiffusionBValue but not DiffusionGradientOrientation) is
    completed from the vendor tags; if none has a direction either, the image is
    isotropic (trace) unless DiffusionDirectionality says DIRECTIONAL, which is
    refused as contradictory. Raises GradientFrameError for GE directional images
    whose only gradient is GE's logical-frame one.
    """
    standard, directionality = _standard(ds, frame)
    if standard is not None and (standard.is_b0 or standard.direction_lps is not None
                                 or directionality in ("NONE", "ISOTROPIC")):
        return standard
    for reader in (_siemens_csa, _ge_private, _philips_private):
        found = reader(ds)
        if found is not None:
            if standard is None or found.direction_lps is not None:
                return found
            break
    if standard is not None and directionality in ("DIRECTIONAL", "BMATRIX"):
        raise RefusedError(
            f"DiffusionDirectionality is {directionality} with b = {standard.bvalue:g} but no "
            "gradient direction is stored (standard or vendor tags)",
            "the export dropped the gradient table: re-export the series from the scanner")
    return standard


def diffusion_header_fields(ds: Any, frame: Any | None = None) -> dict[str, Any]:
    """SliceHeader fields for an MR image's diffusion weighting, or why it is unusable."""
    if str(ds.get("Modality", "")) != "MR":
        return {}
    try:
        return {"diffusion": diffusion_of(ds, frame)}
    except RefusedError as exc:
        return {"problem": f"{exc.message} ({exc.hint})" if exc.hint else exc.message}


def fsl_bvecs(directions_lps: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    """FSL bvecs (3, n) of gradient directions (n, 3) for the image with this affine.

    directions_lps: (n, 3) unit gradients in the DICOM patient frame (LPS); rows
        of NaN or zeros are b=0 / isotropic volumes and become (0, 0, 0).
    affine_ras: the 4x4 voxel (i, j, k) -> RAS mm affine of the NIfTI image the
        bvecs go with (convkit's, dcm2niix's, any: the bvecs follow the file).

    FSL reads bvecs in the image's voxel axes, not in world space:

    1. LPS -> RAS: negate x and y, g_ras = (-gx, -gy, gz).
    2. World -> voxel axes: with R the affine's direction cosines (its columns
       scaled to unit length, which removes the voxel size), v = R^T g_ras, i.e.
       v[a] is the component of g along voxel axis a.
    3. FSL's radiological convention: FSL treats every image internally as if
       stored with a negative-determinant (radiological, LAS-like) voxel-to-world
       matrix and flips the first voxel axis of images whose determinant is
       positive (neurological, RAS-like). So when det(affine[:3, :3]) > 0, v[0]
       is negated (FSL's FDT FAQ; MRtrix3 applies the same rule in
       core/dwi/gradient.cpp). dcm2niix's output (rows flipped, det < 0) needs
       no flip; convkit's own affine (i along IOP[:3], j along IOP[3:], k along
       row x col: det > 0 in RAS) always does.

    The result is a proper direction per voxel axis: rotating it back with R
    (after undoing step 3) gives g_ras again. A sheared affine has no single
    voxel frame for a direction: it raises ValueError.
    """
    rotation, flip = _voxel_frame(affine_ras)
    voxel = (_unit_rows(directions_lps) * LPS_RAS_SIGNS) @ rotation  # row-wise R^T g_ras
    voxel[:, 0] *= flip
    voxel[np.abs(voxel) < 1e-12] = 0.0  # no "-0" in the file
    return voxel.T


def fsl_bvecs_to_lps(bvecs: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    """The inverse of fsl_bvecs: (n, 3) unit LPS directions of FSL bvecs (3, n) of an image.

    Zero columns (b=0) stay zero. Use it to check bvecs against DICOM directions,
    or to carry a gradient table from one image to another with a different affine.
    """
    rotation, flip = _voxel_frame(affine_ras)
    voxel = _unit_rows(np.asarray(bvecs, dtype=float).reshape(3, -1).T)
    voxel[:, 0] *= flip
    return (voxel @ rotation.T) * LPS_RAS_SIGNS  # row-wise R v, then RAS -> LPS


def _voxel_frame(affine_ras: np.ndarray) -> tuple[np.ndarray, float]:
    """Direction cosines R (columns = voxel axes in RAS) and FSL's x sign (-1 if det > 0)."""
    linear = np.asarray(affine_ras, dtype=float)[:3, :3]
    rotation = linear / np.linalg.norm(linear, axis=0)
    if is_sheared(linear):
        raise ValueError("the affine's voxel axes are not orthogonal (sheared): "
                         "straighten the volume before writing bvecs")
    return rotation, (-1.0 if np.linalg.det(linear) > 0 else 1.0)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """(n, 3) rows scaled to unit length; NaN, zero and near-zero rows become zeros."""
    vectors = np.asarray(vectors, dtype=float).reshape(-1, 3)
    norms = np.linalg.norm(vectors, axis=1)
    present = np.isfinite(norms) & (norms > ZERO_VECTOR_NORM)
    unit = np.zeros_like(vectors)
    unit[present] = vectors[present] / norms[present, None]
    return unit


def write_bval_bvec(stem: Path | str, bvals: Sequence[float] | np.ndarray,
                    bvecs: np.ndarray) -> tuple[Path, Path]:
    """Write stem.bval (one line) and stem.bvec (three lines), as dcm2niix does.

    bvals: n b-values (s/mm^2); bvecs: (3, n) from fsl_bvecs. Numbers are written
    with %g (6 significant digits), space-separated, one trailing newline per line.
    Plain writes: call it inside formats.output.staged_files for atomic output.
    Returns the two paths.
    """
    values = np.asarray(bvals, dtype=float).reshape(-1)
    vectors = np.asarray(bvecs, dtype=float)
    if vectors.shape != (3, values.size):
        raise ValueError(f"bvecs of shape {vectors.shape} do not match {values.size} b-values "
                         "(expected (3, n))")
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(vectors))):
        raise ValueError("b-values and b-vectors must be finite (write 0 for b=0 volumes)")
    stem = Path(stem)
    bval_path, bvec_path = (stem.with_name(stem.name + suffix) for suffix in (".bval", ".bvec"))
    bval_path.write_text(_line(values))
    bvec_path.write_text("".join(_line(row) for row in vectors))
    return bval_path, bvec_path


def _line(values: np.ndarray) -> str:
    return " ".join(_number(v) for v in values) + "\n"


def _number(value: float) -> str:
    text = f"{value:g}"
    return "0" if text == "-0" else text


# --- standard attributes -------------------------------------------------------------------

def _standard(ds: Any, frame: Any | None) -> tuple[Diffusion | None, str]:
    """The standard attributes' weighting and DiffusionDirectionality ('' when absent)."""
    for item in _diffusion_items(ds, frame):
        bvalue = _float(getattr(item, "DiffusionBValue", None))
        if bvalue is None:
            continue
        directionality = str(getattr(item, "DiffusionDirectionality", "") or "").strip().upper()
        if bvalue <= B0_THRESHOLD or directionality in ("NONE", "ISOTROPIC"):
            return Diffusion(bvalue, None, "standard"), directionality
        if directionality == "BMATRIX":
            return Diffusion(bvalue, _b_matrix_direction(item), "standard"), directionality
        orientation = getattr(item, "DiffusionGradientOrientation", None)
        sequence = getattr(item, "DiffusionGradientDirectionSequence", None)
        if orientation is None and sequence:
            orientation = getattr(sequence[0], "DiffusionGradientOrientation", None)
        return Diffusion(bvalue, _unit(orientation), "standard"), directionality
    return None, ""


def _diffusion_items(ds: Any, frame: Any | None) -> list[Any]:
    """Datasets that may hold the standard diffusion attributes, most specific first."""
    items = []
    for owner in (frame, ds):
        if owner is None:
            continue
        sequence = getattr(owner, "MRDiffusionSequence", None)
        if sequence:
            items.append(sequence[0])
        items.append(owner)
    return items


def _b_matrix_direction(item: Any) -> np.ndarray | None:
    sequence = getattr(item, "DiffusionBMatrixSequence", None)
    if not sequence:
        return None
    values = [_float(getattr(sequence[0], keyword, None)) for keyword in _B_MATRIX_KEYWORDS]
    if any(v is None for v in values):
        return None
    xx, xy, xz, yy, yz, zz = values
    matrix = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]], dtype=float)
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    if eigenvalues[-1] <= B0_THRESHOLD:
        return None
    vector = eigenvectors[:, -1]
    first = vector[np.argmax(np.abs(vector) > ZERO_VECTOR_NORM)]
    return vector if first > 0 else -vector


# --- Siemens CSA -------------------------------------------------------------------------

def _siemens_csa(ds: Any) -> Diffusion | None:
    try:
        header = siemens_csa_header(ds)
    except InputError:
        return None  # a damaged CSA header holds no usable table
    if not header:
        return None
    bvalue = _float(csa.scalar(header, "B_value"))
    if bvalue is None:
        return None
    try:
        vector = csa.vector(header, "DiffusionGradientDirection", 3)
    except csa.CSAError:  # not three values
        vector = None
    if vector is not None and np.all(np.asarray(vector, float) < -1.0):
        # Syngo 2004A marks b=0 images with impossible vectors (dcm2niix does the same).
        return Diffusion(0.0, None, "siemens-csa")
    direction = None if bvalue <= B0_THRESHOLD else _unit(vector)
    return Diffusion(bvalue, direction, "siemens-csa")


# --- GE private ----------------------------------------------------------------------------

def _ge_private(ds: Any) -> Diffusion | None:
    values = _private_numbers(ds, 0x0043, 0x39, "GEMS_PARM_01", "IS")
    if not values:
        return None
    bvalue = float(values[0] % GE_BVALUE_BIAS)
    if bvalue <= B0_THRESHOLD:
        return Diffusion(bvalue, None, "ge-private")
    gradient = [_private_numbers(ds, 0x0019, offset, "GEMS_ACQU_01", "DS")
                for offset in (0xBB, 0xBC, 0xBD)]
    components = [g[0] if g else 0.0 for g in gradient]
    if np.linalg.norm(components) <= ZERO_VECTOR_NORM:
        return Diffusion(bvalue, None, "ge-private")  # isotropic (trace) image
    raise GradientFrameError(
        f"GE diffusion gradient ({', '.join(f'{c:g}' for c in components)}) is stored only in "
        "GE's logical frame (frequency, phase, slice; tags 0019,10BB-10BD), which has no "
        "documented mapping to patient coordinates",
        "convert this series with dcm2niix, whose GE-specific rules are validated by GE "
        "engineers, or export it with DiffusionGradientOrientation (0018,9089)")


# --- Philips private -----------------------------------------------------------------------

def _philips_private(ds: Any) -> Diffusion | None:
    values = _private_numbers(ds, 0x2001, 0x03, "Philips Imaging DD 001", "FL")
    if not values:
        return None
    bvalue = float(values[0])
    direction_code = _private_text(ds, 0x2001, 0x04, "Philips Imaging DD 001").upper()
    if bvalue <= B0_THRESHOLD or direction_code == "I":
        return Diffusion(bvalue, None, "philips-private")
    components = [_private_numbers(ds, 0x2005, offset, "Philips MR Imaging DD 001", "FL")
                  for offset in (0xB0, 0xB1, 0xB2)]
    if not all(components):
        return Diffusion(bvalue, None, "philips-private")
    return Diffusion(bvalue, _unit([c[0] for c in components]), "philips-private")


# --- value helpers -------------------------------------------------------------------------

def _private_numbers(ds: Any, group: int, offset: int, creator: str, vr: str) -> list[float]:
    """Numbers of a private element, decoding raw bytes (VR UN) as the expected VR."""
    element = private_element(ds, group, offset, creator)
    if element is None or element.value is None:
        return []
    value = element.value
    if isinstance(value, bytes | bytearray):
        try:
            if vr == "FL":
                count = len(value) // 4
                return [float(v) for v in struct.unpack(f"<{count}f", value[: 4 * count])]
            value = value.decode("ascii").strip("\x00 ").split("\\")
        except (UnicodeDecodeError, struct.error):
            return []
    numbers = [_float(v) for v in values.multi(value)]
    return [v for v in numbers if v is not None]


def _private_text(ds: Any, group: int, offset: int, creator: str) -> str:
    element = private_element(ds, group, offset, creator)
    if element is None or element.value is None:
        return ""
    value = element.value
    if isinstance(value, bytes | bytearray):
        value = value.decode("ascii", errors="replace")
    return str(value).strip("\x00 ")


def _float(value: Any) -> float | None:
    """The first value as a finite float, or None."""
    if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
        value = values.first(value)
    return values.finite_or_none(value)


def _unit(vector: Any) -> np.ndarray | None:
    if vector is None:
        return None
    numbers = [values.finite_or_none(v) for v in values.multi(vector)]
    if len(numbers) != 3 or any(v is None for v in numbers):
        return None
    array = np.asarray(numbers, dtype=float)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > ZERO_VECTOR_NORM else None
