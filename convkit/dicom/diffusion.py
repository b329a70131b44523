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
   g = (0019,xxBB/BC/BD of 'GEMS_ACQU_01') is NOT in the patient frame: GE stores it
   in the "MR physics" logical frame (frequency, phase, slice) of the prescription
   (dcm2niix's GE notes; GE's Jaemin Shin in dcm2niix issue 970), so it turns with
   the slices (oblique included) and its signs depend on the slice plane and on the
   in-plane phase-encoding axis. convkit maps it exactly as dcm2niix's
   ``geCorrectBvecs`` does (derived from dicm2nii, validated on GE's multi-plane
   data; the coronal + ROW case fixed by dcm2niix PR 971, 2025). In dcm2niix's
   output frame (i along the rows, j against the columns, k along row x column:
   dcm2niix flips j and re-orders slices so that k runs along the normal), with
   g = (f, p, s) the FSL bvec is:

   ============  =================  =================
   plane         COL (0018,1312)    ROW
   ============  =================  =================
   axial         (-f,  p,  s)       (-p, -f,  s)
   coronal       (-f, -p,  s)       ( p, -f,  s)
   sagittal      ( f, -p, -s)       ( p,  f, -s)
   ============  =================  =================

   The plane is the largest component of the slice normal (dcm2niix's sliceDir);
   the slice direction does not matter (dcm2niix re-orders reversed stacks before
   mapping). convkit turns that bvec back into LPS with the image's own row, column
   and normal (GE_IMAGE_AXES), so the table is carried by any affine like the other
   vendors'. The mapping is written only where it is established: PatientPosition
   (0018,5100) HFS (GE documents the convention for head first supine; dcm2niix
   >= 2025 maps other positions too, with a warning), InPlanePhaseEncodingDirection
   ROW or COL (without it dcm2niix writes the raw logical vectors), and a normal
   whose largest component leads the next by GE_PLANE_MARGIN (near 45 degrees
   between two planes, which plane the prescription used is not known).
   Elsewhere the image and its b-values are written without a .bvec and the
   direction is UNKNOWN, with the reason (never "isotropic").

   b-values: GE stores one b (the largest) per series and shorter gradients for
   the lower shells of multi-shell tensors, b_shell = b * |g|^2. Like dcm2niix
   (its issue 163; rounding as in its current release), when
   GE_SCALE_RANGE[0] < |g| < GE_SCALE_RANGE[1] the b-value is b * |g|^2 rounded
   to the nearest 5 s/mm^2 (at least 5), and the direction is g / |g| (dcm2niix
   instead scales its bvec so that bval * |bvec|^2 stays b * |g|^2: the same
   direction, a length a hair off 1). This scaling does not depend on the frame,
   so it applies whether or not the direction can be mapped (dcm2niix scales only
   where it maps). tests/test_diffusion_vendors.py holds all of this against the
   dcm2niix binary (v1.0.20260724) in every plane and phase axis.

What is known of a direction is explicit (DirectionKind): NONE (b=0), KNOWN,
ISOTROPIC (a trace image, no direction by definition: its own output) and UNKNOWN
(a directional image whose gradient cannot be placed in LPS: a volume of the DWI,
whose .bvec is then not written). A missing vector is never read as isotropic.
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
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from convkit.dicom import csa, values
from convkit.dicom.vendors import private_element, siemens_csa_header
from convkit.errors import InputError
from convkit.geometry import DegenerateOrientation, is_sheared, plane_axes

#: Gradient vectors shorter than this are "no direction" (b=0 or isotropic).
ZERO_VECTOR_NORM = 1e-3
#: b-values at or below this (s/mm^2) count as b=0 for directions (Philips stores 0.001...).
B0_THRESHOLD = 1e-3
#: GE adds this to the b-value in (0043,xx39) of multi-b and synthetic-b series.
GE_BVALUE_BIAS = 1_000_000_000
#: ImageType values that mark a computed diffusion map, never a DWI volume.
DERIVED_DIFFUSION_TYPES = frozenset({"ADC", "EADC", "TRACEW", "TRACE", "FA", "COLFA"})

#: Directions that agree this closely (largest component difference of unit vectors) are
#: the same gradient: the images of one volume compute it from their own orientation,
#: which may differ in the last digits (geometry.ORIENTATION_TOLERANCE).
DIRECTION_TOLERANCE = 0.01
#: GE: gradient lengths strictly between these mark a lower shell (b scaled by |g|^2).
GE_SCALE_RANGE = (0.03, 0.97)
#: GE: scaled b-values are rounded to a multiple of this (s/mm^2), at least this.
GE_BVALUE_STEP = 5.0
#: GE: the largest component of the slice normal must lead the next by this for the
#: slice plane (axial, coronal, sagittal) of GE's logical frame to be known.
GE_PLANE_MARGIN = 0.1
#: GE logical gradient (f, p, s) -> components along (row, column, normal) of the image,
#: per (plane, InPlanePhaseEncodingDirection): (index into g, sign) for each image axis.
#: dcm2niix's bvec table (module docstring) with its j axis (against the columns) undone.
GE_IMAGE_AXES: dict[tuple[str, str], tuple[tuple[int, int], ...]] = {
    ("axial", "COL"): ((0, -1), (1, -1), (2, 1)),
    ("axial", "ROW"): ((1, -1), (0, 1), (2, 1)),
    ("coronal", "COL"): ((0, -1), (1, 1), (2, 1)),
    ("coronal", "ROW"): ((1, 1), (0, 1), (2, 1)),
    ("sagittal", "COL"): ((0, 1), (1, 1), (2, -1)),
    ("sagittal", "ROW"): ((1, 1), (0, -1), (2, -1)),
}
PLANES = ("sagittal", "coronal", "axial")  # by the largest LPS component of the normal

#: LPS <-> RAS for a direction: negate x and y.
LPS_RAS_SIGNS = np.array([-1.0, -1.0, 1.0])

_B_MATRIX_KEYWORDS = ("DiffusionBValueXX", "DiffusionBValueXY", "DiffusionBValueXZ",
                      "DiffusionBValueYY", "DiffusionBValueYZ", "DiffusionBValueZZ")


class DirectionKind(StrEnum):
    """What is known of an image's gradient direction; never inferred from a missing vector.

    An isotropic (trace) image is a b > 0 image that has no direction by definition
    (DiffusionDirectionality ISOTROPIC/NONE, Philips 'I', a GE zero vector, a Siemens
    b-value without vector): it is an output of its own (``_trace``). An UNKNOWN
    direction is a directional image whose gradient cannot be placed in the patient
    frame: it stays a volume of the DWI, whose .bvec is then not written.
    """

    NONE = "none"  # b = 0
    KNOWN = "known"  # direction_lps holds the gradient
    ISOTROPIC = "isotropic"  # b > 0, no direction by definition (trace)
    UNKNOWN = "unknown"  # b > 0, directional, direction not known (unknown_reason says why)


@dataclass(frozen=True, eq=False)
class Diffusion:
    """The diffusion weighting of one image (a DICOM file or one frame of it).

    bvalue: s/mm^2 (vendor biases removed, GE lower shells scaled).
    direction_lps: unit gradient direction in the DICOM patient frame (LPS), or
        None unless kind is KNOWN.
    source: where it was read: 'standard', 'siemens-csa', 'ge-private' or
        'philips-private'.
    kind: a DirectionKind. Given a direction it is KNOWN, for b = 0 NONE; a b > 0
        without a direction must say ISOTROPIC or UNKNOWN (ValueError otherwise).
    unknown_reason: why an UNKNOWN direction is unknown (for notes and the sidecar).
    notes: what reading it did that a user should know (GE mapping, b scaling).
    """

    bvalue: float
    direction_lps: np.ndarray | None
    source: str = "standard"
    kind: DirectionKind | None = None
    unknown_reason: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind is None:
            if self.direction_lps is not None:
                kind = DirectionKind.KNOWN
            elif self.bvalue <= B0_THRESHOLD:
                kind = DirectionKind.NONE
            else:
                raise ValueError("a b > 0 without a direction must be ISOTROPIC or UNKNOWN")
            object.__setattr__(self, "kind", kind)
        if (self.kind == DirectionKind.KNOWN) != (self.direction_lps is not None):
            raise ValueError(f"a {self.kind} direction with direction_lps={self.direction_lps}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Diffusion):
            return NotImplemented
        if (self.direction_lps is None) != (other.direction_lps is None):
            return False
        same_direction = self.direction_lps is None or other.direction_lps is None or bool(
            np.array_equal(self.direction_lps, other.direction_lps))
        return ((self.bvalue, self.source, self.kind) == (other.bvalue, other.source, other.kind)
                and same_direction)

    __hash__ = None  # type: ignore[assignment]  # holds an array

    def same_weighting(self, other: Diffusion) -> bool:
        """Same b-value, kind and (within DIRECTION_TOLERANCE) direction: one volume."""
        if self.kind != other.kind or not np.isclose(self.bvalue, other.bvalue, rtol=1e-6,
                                                     atol=B0_THRESHOLD):
            return False
        if self.direction_lps is None or other.direction_lps is None:
            return True
        difference = np.abs(self.direction_lps - other.direction_lps)
        return bool(np.max(difference) <= DIRECTION_TOLERANCE)

    @property
    def is_b0(self) -> bool:
        return self.kind == DirectionKind.NONE

    @property
    def is_isotropic(self) -> bool:
        """b > 0 without a direction by definition: a trace image, an output of its own.
        Never true for an UNKNOWN direction (that image belongs to the DWI)."""
        return self.kind == DirectionKind.ISOTROPIC

    @property
    def is_directional(self) -> bool:
        """A gradient direction, known or not: the image is a volume of a DWI."""
        return self.kind in (DirectionKind.KNOWN, DirectionKind.UNKNOWN)


def _isotropic(bvalue: float, source: str) -> Diffusion:
    return Diffusion(bvalue, None, source, DirectionKind.ISOTROPIC)


def _unknown(bvalue: float, source: str, reason: str, notes: tuple[str, ...] = ()) -> Diffusion:
    return Diffusion(bvalue, None, source, DirectionKind.UNKNOWN, reason, notes)


def diffusion_of(ds: Any, frame: Any | None = None) -> Diffusion | None:
    """b-value and LPS gradient direction of one image, or None when it holds none.

    ds: the pydicom Dataset (single-frame file, or the enhanced file itself).
    frame: for enhanced (multi-frame) files, one per-frame functional-group item
        already merged with the shared groups by the caller (or ds itself); its
        MRDiffusionSequence is read before anything at the top level.

    Sources are tried in order (see the module docstring): standard attributes,
    Siemens CSA, GE private, Philips private. A standard b > 0 without a direction
    (GE RX27 writes DiffusionBValue but not DiffusionGradientOrientation) is
    completed from the vendor tags, whose direction (known, or UNKNOWN with its
    reason) wins; if none has one either, the image is isotropic (trace) unless
    DiffusionDirectionality says DIRECTIONAL or BMATRIX: then its direction is
    UNKNOWN (the export dropped it), never isotropic.
    """
    standard, directionality = _standard(ds, frame)
    if standard is not None and (standard.is_b0 or standard.direction_lps is not None
                                 or directionality in ("NONE", "ISOTROPIC")):
        return standard
    for reader in (_siemens_csa, _ge_private, _philips_private):
        found = reader(ds, frame)
        if found is not None:
            if standard is None or found.is_directional:
                return found
            break
    if standard is not None and directionality in ("DIRECTIONAL", "BMATRIX"):
        return _unknown(standard.bvalue, "standard",
                        f"DiffusionDirectionality is {directionality} with b = "
                        f"{standard.bvalue:g} but no gradient direction is stored "
                        "(standard or vendor tags)")
    return standard


def diffusion_header_fields(ds: Any, frame: Any | None = None) -> dict[str, Any]:
    """SliceHeader fields for an MR image's diffusion weighting."""
    if str(ds.get("Modality", "")) != "MR":
        return {}
    return {"diffusion": diffusion_of(ds, frame)}


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
    bval_path = write_bval(stem, values)
    bvec_path = bval_path.with_suffix(".bvec")
    bvec_path.write_text("".join(_line(row) for row in vectors))
    return bval_path, bvec_path


def write_bval(stem: Path | str, bvals: Sequence[float] | np.ndarray) -> Path:
    """Write stem.bval alone (a DWI whose directions are unknown); returns its path."""
    values = np.asarray(bvals, dtype=float).reshape(-1)
    if not np.all(np.isfinite(values)):
        raise ValueError("b-values must be finite (write 0 for b=0 volumes)")
    stem = Path(stem)
    path = stem.with_name(stem.name + ".bval")
    path.write_text(_line(values))
    return path


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
        if bvalue <= B0_THRESHOLD:
            return Diffusion(bvalue, None, "standard"), directionality
        if directionality in ("NONE", "ISOTROPIC"):
            return _isotropic(bvalue, "standard"), directionality
        if directionality == "BMATRIX":
            direction = _b_matrix_direction(item)
        else:
            orientation = getattr(item, "DiffusionGradientOrientation", None)
            sequence = getattr(item, "DiffusionGradientDirectionSequence", None)
            if orientation is None and sequence:
                orientation = getattr(sequence[0], "DiffusionGradientOrientation", None)
            direction = _unit(orientation)
        if direction is None:  # the caller looks for it in vendor tags, then decides
            return _isotropic(bvalue, "standard"), directionality
        return Diffusion(bvalue, direction, "standard"), directionality
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

def _siemens_csa(ds: Any, frame: Any | None = None) -> Diffusion | None:
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
    if bvalue <= B0_THRESHOLD:
        return Diffusion(bvalue, None, "siemens-csa")
    direction = _unit(vector)
    if direction is None:
        return _isotropic(bvalue, "siemens-csa")  # a b-value without vector: trace
    return Diffusion(bvalue, direction, "siemens-csa")


# --- GE private ----------------------------------------------------------------------------

def _ge_private(ds: Any, frame: Any | None = None) -> Diffusion | None:
    field = _private_numbers(ds, 0x0043, 0x39, "GEMS_PARM_01", "IS")
    if not field:
        return None
    bvalue = float(field[0] % GE_BVALUE_BIAS)
    if bvalue <= B0_THRESHOLD:
        return Diffusion(bvalue, None, "ge-private")
    gradient = [_private_numbers(ds, 0x0019, offset, "GEMS_ACQU_01", "DS")
                for offset in (0xBB, 0xBC, 0xBD)]
    logical = np.array([g[0] if g else 0.0 for g in gradient])
    length = float(np.linalg.norm(logical))
    if length <= ZERO_VECTOR_NORM:
        return _isotropic(bvalue, "ge-private")  # a GE zero vector: trace
    notes: tuple[str, ...] = ()
    if GE_SCALE_RANGE[0] < length < GE_SCALE_RANGE[1]:
        bvalue = ge_shell_bvalue(bvalue, length)
        notes = (f"GE lower-shell b-values scaled by |g|^2 of (0019,10BB-10BD) and rounded to "
                 f"{GE_BVALUE_STEP:g} s/mm^2, as dcm2niix does",)
    direction, said = ge_direction_lps(logical, ds, frame)  # said: the rule, or why not
    if direction is None:
        return _unknown(bvalue, "ge-private", said, notes)
    return Diffusion(bvalue, direction, "ge-private", DirectionKind.KNOWN, notes=(said, *notes))


def ge_shell_bvalue(bvalue: float, length: float) -> float:
    """b * |g|^2 rounded to the nearest GE_BVALUE_STEP (halves up), at least one step."""
    steps = np.floor(bvalue * length * length / GE_BVALUE_STEP + 0.5)
    return float(max(steps, 1.0) * GE_BVALUE_STEP)


def ge_direction_lps(logical: np.ndarray, ds: Any, frame: Any | None = None,
                     ) -> tuple[np.ndarray | None, str]:
    """(unit LPS direction, note) of GE's logical gradient (f, p, s), or (None, why not).

    The note says which rule mapped it; why-not names what is missing or not
    established (patient position, phase-encoding axis, orientation, plane).
    """
    where = "GE gradient (0019,10BB-10BD) is in GE's logical frame"
    position = _text(getattr(ds, "PatientPosition", None)).upper()
    if position != "HFS":
        shown = f"PatientPosition {position}" if position else "no PatientPosition (0018,5100)"
        return None, (f"{where}, whose mapping to the patient is established for head first "
                      f"supine (HFS) only; this series has {shown}")
    phase = _text(_phase_encoding(ds, frame)).upper()
    if phase not in ("ROW", "COL"):
        shown = repr(phase) if phase else "missing"
        return None, (f"{where}; its mapping needs InPlanePhaseEncodingDirection (0018,1312) "
                      f"ROW or COL, which is {shown}")
    axes = _image_axes(ds, frame)
    if axes is None:
        return None, f"{where}; no usable ImageOrientationPatient to map it with"
    plane = ge_plane(axes[2])
    if plane is None:
        normal = ", ".join(f"{v:.3g}" for v in axes[2])
        return None, (f"{where}; the slice normal ({normal}) lies between two planes, so the "
                      "plane of GE's frame (axial, coronal, sagittal) is not known")
    components = [sign * logical[index] for index, sign in GE_IMAGE_AXES[(plane, phase)]]
    direction = components[0] * axes[0] + components[1] * axes[1] + components[2] * axes[2]
    note = (f"GE gradients mapped from GE's logical frame as dcm2niix does ({plane}, "
            f"{phase} phase encoding, HFS)")
    return direction / np.linalg.norm(direction), note


def ge_plane(normal: np.ndarray) -> str | None:
    """'axial', 'coronal' or 'sagittal': the largest LPS component of the slice normal, when
    it leads the next one by GE_PLANE_MARGIN; None in between."""
    magnitudes = np.abs(np.asarray(normal, float))
    order = np.argsort(magnitudes)
    if magnitudes[order[2]] - magnitudes[order[1]] < GE_PLANE_MARGIN:
        return None
    return PLANES[int(order[2])]


def _image_axes(ds: Any, frame: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Row, column and normal (LPS) of the image: the frame's PlaneOrientation, else the file's."""
    orientation = None
    planes = getattr(frame, "PlaneOrientationSequence", None) if frame is not None else None
    if planes:
        orientation = getattr(planes[0], "ImageOrientationPatient", None)
    if orientation is None:
        orientation = getattr(ds, "ImageOrientationPatient", None)
    numbers = [values.finite_or_none(v) for v in values.multi(orientation)]
    if len(numbers) != 6 or any(v is None for v in numbers):
        return None
    try:
        return plane_axes(np.asarray(numbers, dtype=float))
    except DegenerateOrientation:
        return None


def _phase_encoding(ds: Any, frame: Any | None) -> Any:
    """InPlanePhaseEncodingDirection: the file's, or an enhanced frame's MRFOVGeometry."""
    direction = getattr(ds, "InPlanePhaseEncodingDirection", None)
    for owner in (frame, ds):
        geometry = getattr(owner, "MRFOVGeometrySequence", None) if owner is not None else None
        if not direction and geometry:
            direction = getattr(geometry[0], "InPlanePhaseEncodingDirection", None)
    return direction


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        value = value.decode("ascii", errors="replace")
    return str(value or "").strip("\x00 ")


# --- Philips private -----------------------------------------------------------------------

def _philips_private(ds: Any, frame: Any | None = None) -> Diffusion | None:
    values = _private_numbers(ds, 0x2001, 0x03, "Philips Imaging DD 001", "FL")
    if not values:
        return None
    bvalue = float(values[0])
    direction_code = _private_text(ds, 0x2001, 0x04, "Philips Imaging DD 001").upper()
    if bvalue <= B0_THRESHOLD:
        return Diffusion(bvalue, None, "philips-private")
    components = [_private_numbers(ds, 0x2005, offset, "Philips MR Imaging DD 001", "FL")
                  for offset in (0xB0, 0xB1, 0xB2)]
    direction = _unit([c[0] for c in components]) if all(components) else None
    if direction_code == "I" or direction is None:
        return _isotropic(bvalue, "philips-private")  # 'I': a stale vector may remain
    return Diffusion(bvalue, direction, "philips-private")


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
