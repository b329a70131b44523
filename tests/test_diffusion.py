"""Diffusion gradient tables: DICOM -> (b, LPS direction) -> FSL bval/bvec, dcm2niix as oracle.

Synthetic DWI series (3 slices of 8x10; one b=0, six directions, one isotropic
b=1000 trace volume; each repeat of the positions with its own AcquisitionTime)
carry their table in the standard attributes or in one vendor's private tags.
dcm2niix converts them; the bvals/bvecs computed here from the DICOM headers and
dcm2niix's own affine must equal its .bval/.bvec to 1e-4.
"""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import rotation, run_dcm2niix
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from convkit import geometry
from convkit.dicom.diffusion import (
    Diffusion,
    DirectionKind,
    diffusion_of,
    fsl_bvecs,
    fsl_bvecs_to_lps,
    write_bval_bvec,
)
from convkit.testing.synthetic import regular_positions, write_series

ATOL = 1e-4
N_SLICES = 3
SPACING_MM = 2.0
ORIGIN = (10.0, 20.0, 30.0)
_OBLIQUE = rotation(20, -15, 30)
ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "coronal": (1, 0, 0, 0, 0, -1),
    "oblique": tuple(_OBLIQUE[:, 0]) + tuple(_OBLIQUE[:, 1]),
}
#: Acquisition order: b=0, six directions (LPS), then an isotropic (trace) b=1000 volume.
DIRECTIONS = [np.array(v, float) / np.linalg.norm(v)
              for v in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, -1), (1, -2, 3)]]
TABLE: list[tuple[float, np.ndarray | None]] = (
    [(0.0, None)] + [(1000.0, d) for d in DIRECTIONS] + [(1000.0, None)])
MANUFACTURER = {"standard": "convkit synthetic", "siemens": "SIEMENS",
                "philips": "Philips Medical Systems", "ge": "GE MEDICAL SYSTEMS"}


# --- synthetic series --------------------------------------------------------------------

def csa2_header(tags: list[tuple[str, str, list]]) -> bytes:
    """A Siemens CSA2 ('SV10') header holding these (name, VR, values): test data only."""
    data = b"SV10" + b"\x04\x03\x02\x01" + struct.pack("<2I", len(tags), 77)
    for name, vr, values in tags:
        data += struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0,
                            len(values), 77)
        for value in values:
            text = (f"{value:.8f}" if isinstance(value, float) else str(value)).encode() + b"\0"
            data += struct.pack("<4i", len(text), len(text), 77, len(text))
            data += text + b"\0" * (-len(text) % 4)
    return data


def add_vendor_tags(ds: Dataset, vendor: str, bvalue: float, direction: np.ndarray | None,
                    isotropic: bool) -> None:
    """Store (b, direction) the way the vendor's own private tags do."""
    vector = np.zeros(3) if direction is None else direction
    if vendor == "siemens":
        tags = [("B_value", "IS", [int(bvalue)])]
        if direction is not None:
            tags.append(("DiffusionGradientDirection", "FD", [float(v) for v in direction]))
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(
            0x10, "OB", csa2_header(tags))
    elif vendor == "philips":
        block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        block.add_new(0x03, "FL", bvalue)
        block.add_new(0x04, "CS", "I" if isotropic else ("O" if direction is not None else "N"))
        block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        for offset, value in zip((0xB0, 0xB1, 0xB2), vector, strict=True):
            block.add_new(offset, "FL", float(value))
    elif vendor == "ge":
        ds.InPlanePhaseEncodingDirection = "COL"
        block = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        block.add_new(0x39, "IS", [int(bvalue) + 1_000_000_000, 8, 0, 0])
        block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        for offset, value in zip((0xBB, 0xBC, 0xBD), vector, strict=True):
            block.add_new(offset, "DS", f"{value:.6f}")


def write_dwi(folder: Path, orientation: tuple, vendor: str = "standard",
              descending: bool = False) -> list[Path]:
    """The DWI series of TABLE; returns the first file of each volume, in acquisition order.

    descending: within each volume, files (and InstanceNumbers) run against the
    slice normal, the "left-handed" stacking order.
    """
    positions = regular_positions(N_SLICES, orientation, ORIGIN, SPACING_MM)
    order = list(range(N_SLICES))[::-1] if descending else list(range(N_SLICES))
    stored, slice_positions, per_slice, times = [], [], [], []
    rng = np.random.default_rng(7)
    for t, (bvalue, direction) in enumerate(TABLE):
        isotropic = bvalue > 0 and direction is None
        for rank, k in enumerate(order):
            stored.append(rng.integers(0, 1000, (8, 10), dtype=np.int16))
            slice_positions.append(positions[k])
            times.append(43200.0 + 10.0 * t)
            tags = {"InstanceNumber": t * N_SLICES + rank + 1}
            if vendor == "standard":
                tags["DiffusionBValue"] = bvalue
                tags["DiffusionDirectionality"] = ("NONE" if bvalue == 0 else
                                                   "ISOTROPIC" if isotropic else "DIRECTIONAL")
                if direction is not None:
                    tags["DiffusionGradientOrientation"] = [float(v) for v in direction]
            per_slice.append(tags)
    paths = write_series(
        folder, np.array(stored), np.array(slice_positions), orientation=orientation,
        modality="MR", times=times, per_slice=per_slice,
        extra={"Manufacturer": MANUFACTURER[vendor], "PatientPosition": "HFS",
               "ImageType": ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]})
    if vendor != "standard":
        for index, path in enumerate(paths):
            bvalue, direction = TABLE[index // N_SLICES]
            ds = pydicom.dcmread(path)
            add_vendor_tags(ds, vendor, bvalue, direction, bvalue > 0 and direction is None)
            ds.save_as(path)
    return paths[::N_SLICES]


def table_of(first_files: list[Path]) -> list[Diffusion]:
    return [diffusion_of(pydicom.dcmread(path)) for path in first_files]


def directions_array(table: list[Diffusion]) -> np.ndarray:
    return np.array([d.direction_lps if d.direction_lps is not None else [np.nan] * 3
                     for d in table])


def convert(dcm2niix: str, folder: Path, out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dcm2niix's DWI output: (affine, bvals, bvecs (3, n)); the trace goes to *_ADC.nii."""
    written = [p for p in run_dcm2niix(dcm2niix, folder, out) if not p.stem.endswith("_ADC")]
    assert len(written) == 1, written
    nii = written[0]
    bvals = np.loadtxt(nii.with_suffix(".bval"), ndmin=1)
    bvecs = np.loadtxt(nii.with_suffix(".bvec"), ndmin=2)
    return nib.load(nii).affine, bvals, bvecs


def kept_by_dcm2niix(table: list[Diffusion], n_volumes: int) -> list[Diffusion]:
    """dcm2niix moves an isotropic volume to *_ADC.nii (standard, Philips) or keeps it
    with a zero vector (Siemens CSA): compare the volumes it kept."""
    if n_volumes == len(table):
        return table
    return [d for d in table if not d.is_isotropic]


def convkit_affine(orientation: tuple) -> np.ndarray:
    """convkit's RAS affine for the synthetic stack, from first principles: i along
    IOP[:3], j along IOP[3:], k ascending along the normal row x col, origin at the
    lowest slice along the normal."""
    normal = geometry.plane_axes(np.asarray(orientation, float))[2]
    positions = regular_positions(N_SLICES, orientation, ORIGIN, SPACING_MM)
    origin = positions[np.argmin(positions @ normal)]
    lps = geometry.affine_lps(np.asarray(orientation, float), (1.0, 1.0), origin,
                              normal * SPACING_MM)
    return geometry.lps_to_ras(lps)


# --- dcm2niix as oracle --------------------------------------------------------------------

@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize("name", list(ORIENTATIONS))
@pytest.mark.parametrize("vendor", ["standard", "philips", "siemens"])
def test_bvals_bvecs_equal_dcm2niix(tmp_path, dcm2niix, vendor, name, descending):
    firsts = write_dwi(tmp_path / "in", ORIENTATIONS[name], vendor, descending)
    table = table_of(firsts)
    assert [d.source for d in table] == [
        {"standard": "standard", "siemens": "siemens-csa", "philips": "philips-private"}[vendor]
    ] * len(TABLE)
    affine, bvals, bvecs = convert(dcm2niix, tmp_path / "in", tmp_path / "out")
    kept = kept_by_dcm2niix(table, len(bvals))
    assert len(kept) == len(bvals) >= 7
    np.testing.assert_allclose([d.bvalue for d in kept], bvals, atol=ATOL)
    np.testing.assert_allclose(fsl_bvecs(directions_array(kept), affine), bvecs, atol=ATOL)


def test_dcm2niix_reads_standard_tags_of_unknown_manufacturer(tmp_path, dcm2niix):
    """dcm2niix honours (0018,9087)/(0018,9089) for Manufacturer 'convkit synthetic'
    (it warns 'manufacturer unknown: assuming Philips'), so the standard-tag series above
    need no vendor tags; the isotropic volume goes to a separate *_ADC.nii, as it should."""
    write_dwi(tmp_path / "in", ORIENTATIONS["axial"])
    written = run_dcm2niix(dcm2niix, tmp_path / "in", tmp_path / "out")
    assert sorted(p.stem.endswith("_ADC") for p in written) == [False, True]
    _, bvals, bvecs = convert(dcm2niix, tmp_path / "in", tmp_path / "again")
    assert bvals.tolist() == [0] + [1000] * 6
    # axial, LPS (1, 0, 0) and (0, 1, 0): dcm2niix flips rows, so y changes sign
    np.testing.assert_allclose(bvecs[:, 1], [1, 0, 0], atol=ATOL)
    np.testing.assert_allclose(bvecs[:, 2], [0, -1, 0], atol=ATOL)


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_positive_determinant_flips_x_as_fsl_expects(tmp_path, dcm2niix, name):
    """FSL reads bvecs in radiological voxel axes and flips the x axis of images whose
    affine has det > 0. So flipping the stored i axis of dcm2niix's (det < 0) image
    must leave the bvecs unchanged: the x flip in fsl_bvecs undoes the storage flip."""
    firsts = write_dwi(tmp_path / "in", ORIENTATIONS[name])
    written = [p for p in run_dcm2niix(dcm2niix, tmp_path / "in", tmp_path / "out")
               if not p.stem.endswith("_ADC")]
    image = nib.load(written[0])
    bvecs = np.loadtxt(written[0].with_suffix(".bvec"))
    flipped = image.as_reoriented(np.array([[0, -1], [1, 1], [2, 1]]))
    assert np.linalg.det(image.affine[:3, :3]) < 0 < np.linalg.det(flipped.affine[:3, :3])
    np.testing.assert_array_equal(np.asarray(flipped.dataobj)[::-1], np.asarray(image.dataobj))
    directions = directions_array(kept_by_dcm2niix(table_of(firsts), bvecs.shape[1]))
    np.testing.assert_allclose(fsl_bvecs(directions, flipped.affine), bvecs, atol=ATOL)
    # without FSL's flip the x row would be the opposite of dcm2niix's
    naive = (np.nan_to_num(directions) * [-1, -1, 1]) @ (
        flipped.affine[:3, :3] / np.linalg.norm(flipped.affine[:3, :3], axis=0))
    assert not np.allclose(naive.T[0], bvecs[0], atol=ATOL)


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_convkit_affine_gives_the_same_physical_directions(tmp_path, dcm2niix, name,
                                                          descending):
    """convkit's affine (k ascending along the normal, det > 0) and dcm2niix's (rows
    flipped, det < 0) store different bvecs for the same gradients; rotated back to
    the patient frame both are exactly the DICOM directions (sign included)."""
    orientation = ORIENTATIONS[name]
    firsts = write_dwi(tmp_path / "in", orientation, descending=descending)
    ours = convkit_affine(orientation)
    theirs, _, dcm2niix_bvecs = convert(dcm2niix, tmp_path / "in", tmp_path / "out")
    assert np.linalg.det(ours[:3, :3]) > 0 > np.linalg.det(theirs[:3, :3])
    directions = directions_array(kept_by_dcm2niix(table_of(firsts), dcm2niix_bvecs.shape[1]))
    expected = np.nan_to_num(directions)
    convkit_bvecs = fsl_bvecs(directions, ours)
    np.testing.assert_allclose(fsl_bvecs_to_lps(convkit_bvecs, ours), expected, atol=ATOL)
    np.testing.assert_allclose(fsl_bvecs_to_lps(dcm2niix_bvecs, theirs), expected, atol=ATOL)
    # the same voxel axes up to dcm2niix's row flip: only the i and j rows change sign
    np.testing.assert_allclose(convkit_bvecs, dcm2niix_bvecs * [[-1], [-1], [1]], atol=ATOL)


def test_written_files_match_dcm2niix_byte_for_byte(tmp_path, dcm2niix):
    firsts = write_dwi(tmp_path / "in", ORIENTATIONS["oblique"])
    written = [p for p in run_dcm2niix(dcm2niix, tmp_path / "in", tmp_path / "out")
               if not p.stem.endswith("_ADC")][0]
    affine = nib.load(written).affine
    kept = kept_by_dcm2niix(table_of(firsts), 7)
    bval, bvec = write_bval_bvec(tmp_path / "ours", [d.bvalue for d in kept],
                                 fsl_bvecs(directions_array(kept), affine))
    assert (bval.name, bvec.name) == ("ours.bval", "ours.bvec")
    assert bval.read_text() == written.with_suffix(".bval").read_text() == "0" + " 1000" * 6 + "\n"
    assert bvec.read_text() == written.with_suffix(".bvec").read_text()


# --- GE: a logical gradient frame, mapped as dcm2niix maps it ----------------------------------

def test_ge_private_gradients_are_not_in_the_patient_frame(tmp_path, dcm2niix):
    """dcm2niix reads GE's (0019,10BB-BD) as (logical) image-frame vectors: its bvecs for
    them differ from the bvecs of the same numbers taken as LPS. convkit maps them as it
    does (axial, COL, HFS here; every plane in test_diffusion_vendors.py)."""
    firsts = write_dwi(tmp_path / "in", ORIENTATIONS["axial"], vendor="ge")
    affine, bvals, bvecs = convert(dcm2niix, tmp_path / "in", tmp_path / "out")
    assert bvals[:7].tolist() == [0] + [1000] * 6  # dcm2niix strips the 1e9 bias too
    as_if_lps = fsl_bvecs(np.array([[np.nan] * 3] + DIRECTIONS), affine)
    assert not np.allclose(as_if_lps, bvecs[:, :7], atol=ATOL)
    mapped = [diffusion_of(pydicom.dcmread(path)) for path in firsts[1:7]]
    assert {d.source for d in mapped} == {"ge-private"} and all(d.is_directional for d in mapped)
    np.testing.assert_allclose(fsl_bvecs(directions_array(mapped), affine), bvecs[:, 1:7],
                               atol=ATOL)
    assert diffusion_of(pydicom.dcmread(firsts[0])) == Diffusion(0.0, None, "ge-private")
    trace = diffusion_of(pydicom.dcmread(firsts[-1]))
    assert trace.bvalue == 1000.0 and trace.is_isotropic


def ge_dataset(bvalue_field: list[int], gradient: tuple[float, float, float]) -> Dataset:
    ds = Dataset()
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", bvalue_field)
    block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    for offset, value in zip((0xBB, 0xBC, 0xBD), gradient, strict=True):
        block.add_new(offset, "DS", str(value))
    return ds


@pytest.mark.parametrize("field,expected", [
    ([1000001000, 8, 0, 0], 1000.0),  # multi-b / synthetic-b series: bias 1e9
    ([1000, 1073741832, 0, 0], 1000.0),  # DTI: no bias
    ([1000030000, 8, 0, 0], 30000.0),  # b >= 10000 survives (modulo 1e9, not 1e4)
    ([1000000000, 8, 0, 0], 0.0),
])
def test_ge_bvalue_bias_is_stripped(field, expected):
    kind = DirectionKind.ISOTROPIC if expected else DirectionKind.NONE  # a zero vector
    assert diffusion_of(ge_dataset(field, (0, 0, 0))) == Diffusion(expected, None, "ge-private",
                                                                   kind)


def test_private_tags_without_their_creator_are_read_at_the_usual_address():
    """Anonymisers may drop private creators: raw bytes at (2001,1003) etc. still count,
    but only while no other creator owns the block."""
    ds = Dataset()
    ds.add_new((0x2001, 0x1003), "UN", struct.pack("<f", 1000.0))
    for element, value in zip((0x10B0, 0x10B1, 0x10B2), (0.0, 0.6, 0.8), strict=True):
        ds.add_new((0x2005, element), "UN", struct.pack("<f", value))
    found = diffusion_of(ds)
    assert found.source == "philips-private" and found.bvalue == 1000.0
    np.testing.assert_allclose(found.direction_lps, [0, 0.6, 0.8], atol=1e-6)
    ds.add_new((0x2001, 0x0010), "LO", "Some Other Creator")
    assert diffusion_of(ds) is None


def test_ge_with_standard_orientation_uses_it():
    ds = ge_dataset([1000001000, 8, 0, 0], (0.6, 0.8, 0))
    ds.DiffusionBValue = 1000.0
    ds.DiffusionGradientOrientation = [0.0, 0.6, 0.8]
    found = diffusion_of(ds)
    assert found.source == "standard" and found.bvalue == 1000.0
    np.testing.assert_allclose(found.direction_lps, [0, 0.6, 0.8])


def test_ge_public_bvalue_without_orientation_is_not_taken_for_a_trace():
    """GE RX27 writes DiffusionBValue (0018,9087) but no DiffusionGradientOrientation: the
    private gradient is found; with no PatientPosition its mapping is not established, so
    its direction is UNKNOWN, never isotropic (which would split it off as a trace)."""
    ds = ge_dataset([1000, 8, 0, 0], (0.6, 0.8, 0))
    ds.DiffusionBValue = 1000.0
    found = diffusion_of(ds)
    assert found.kind == DirectionKind.UNKNOWN and not found.is_isotropic
    assert found.is_directional and found.direction_lps is None
    assert "PatientPosition" in found.unknown_reason


# --- standard attributes in detail -----------------------------------------------------------

def test_enhanced_frame_item_comes_first():
    gradient = Dataset()
    gradient.DiffusionGradientOrientation = [0.0, 0.0, 2.0]  # normalised on reading
    item = Dataset()
    item.DiffusionBValue = 700.0
    item.DiffusionDirectionality = "DIRECTIONAL"
    item.DiffusionGradientDirectionSequence = Sequence([gradient])
    frame = Dataset()
    frame.MRDiffusionSequence = Sequence([item])
    ds = Dataset()
    ds.DiffusionBValue = 0.0  # top level: ignored when the frame has its own
    found = diffusion_of(ds, frame)
    assert found.bvalue == 700.0 and found.source == "standard"
    np.testing.assert_allclose(found.direction_lps, [0, 0, 1])
    assert diffusion_of(ds).is_b0


def test_bmatrix_directionality_gives_the_principal_axis():
    g = np.array([-1.0, -2.0, 2.0]) / 3
    bmatrix = 1000.0 * np.outer(g, g)
    matrix_item = Dataset()
    for keyword, (row, col) in zip(
            ("DiffusionBValueXX", "DiffusionBValueXY", "DiffusionBValueXZ",
             "DiffusionBValueYY", "DiffusionBValueYZ", "DiffusionBValueZZ"),
            ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)), strict=True):
        setattr(matrix_item, keyword, float(bmatrix[row, col]))
    ds = Dataset()
    ds.DiffusionBValue = 1000.0
    ds.DiffusionDirectionality = "BMATRIX"
    ds.DiffusionBMatrixSequence = Sequence([matrix_item])
    found = diffusion_of(ds)
    # a b-matrix has no sign: the convention keeps the first non-zero component positive
    np.testing.assert_allclose(found.direction_lps, -g, atol=1e-9)


def test_directional_without_any_direction_is_unknown_not_isotropic():
    ds = Dataset()
    ds.DiffusionBValue = 1000.0
    ds.DiffusionDirectionality = "DIRECTIONAL"
    found = diffusion_of(ds)
    assert found.kind == DirectionKind.UNKNOWN and not found.is_isotropic
    assert "no gradient direction" in found.unknown_reason


def test_b_without_direction_or_directionality_is_isotropic():
    ds = Dataset()
    ds.DiffusionBValue = 1000.0
    found = diffusion_of(ds)
    assert found == Diffusion(1000.0, None, "standard", DirectionKind.ISOTROPIC)
    assert found.is_isotropic


def test_diffusion_equality_compares_directions():
    a = Diffusion(1000.0, np.array([0.0, 0.0, 1.0]), "standard")
    assert a == Diffusion(1000.0, np.array([0.0, 0.0, 1.0]), "standard")
    assert a != Diffusion(1000.0, np.array([0.0, 0.0, -1.0]), "standard")
    assert a != Diffusion(1000.0, None, "standard", DirectionKind.ISOTROPIC)
    assert a != Diffusion(1000.0, np.array([0.0, 0.0, 1.0]), "philips-private")


def test_not_diffusion_gives_none():
    ds = Dataset()
    ds.Modality = "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
    assert diffusion_of(ds) is None


# --- vendor private tags in detail -----------------------------------------------------------

def test_siemens_csa_values_and_impossible_b0_vectors():
    def siemens(tags):
        ds = Dataset()
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(
            0x10, "OB", csa2_header(tags))
        return ds

    found = diffusion_of(siemens([("B_value", "IS", [1000]),
                                  ("DiffusionGradientDirection", "FD", [0.0, -0.6, 0.8])]))
    assert found.source == "siemens-csa" and found.bvalue == 1000.0
    np.testing.assert_allclose(found.direction_lps, [0, -0.6, 0.8])
    assert diffusion_of(siemens([("B_value", "IS", [1000])])).is_isotropic
    # Syngo 2004A marks b=0 images with impossible vectors
    old_b0 = siemens([("B_value", "IS", [1000]),
                      ("DiffusionGradientDirection", "FD", [-2.0, -2.0, -2.0])])
    assert diffusion_of(old_b0) == Diffusion(0.0, None, "siemens-csa")
    assert diffusion_of(siemens([("EchoLinePosition", "IS", [64])])) is None


def test_philips_isotropic_code_overrides_a_stale_direction():
    ds = Dataset()
    block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
    block.add_new(0x03, "FL", 1000.0)
    block.add_new(0x04, "CS", "I")
    block = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
    for offset in (0xB0, 0xB1, 0xB2):
        block.add_new(offset, "FL", 0.57735)
    assert diffusion_of(ds) == Diffusion(1000.0, None, "philips-private",
                                         DirectionKind.ISOTROPIC)
    ds[0x2001, 0x1004].value = "O"
    np.testing.assert_allclose(diffusion_of(ds).direction_lps, [3 ** -0.5] * 3, atol=1e-6)


# --- fsl_bvecs and the files ------------------------------------------------------------------

def test_fsl_bvecs_zero_rows_and_shear():
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])  # LAS, det < 0: voxel axes = -x, +y, +z (RAS)
    bvecs = fsl_bvecs(np.array([[np.nan] * 3, [0, 0, 0], [2, 0, 0], [0, 0, -1]]), affine)
    np.testing.assert_array_equal(bvecs, [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, -1]])
    assert not np.signbit(bvecs[bvecs == 0]).any()  # no "-0" in the file
    sheared = np.eye(4)
    sheared[0, 2] = 0.5
    with pytest.raises(ValueError, match="sheared"):
        fsl_bvecs(np.array([[1.0, 0, 0]]), sheared)


def test_fsl_bvecs_round_trip_for_random_affines():
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(20, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for _ in range(10):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        affine = np.eye(4)
        affine[:3, :3] = q * rng.uniform(0.5, 3.0, 3)
        bvecs = fsl_bvecs(directions, affine)
        np.testing.assert_allclose(np.linalg.norm(bvecs, axis=0), 1.0)
        np.testing.assert_allclose(fsl_bvecs_to_lps(bvecs, affine), directions, atol=1e-12)


def test_write_bval_bvec_format_and_checks(tmp_path):
    bval, bvec = write_bval_bvec(tmp_path / "dwi", [0, 1000, 2500.5],
                                 np.array([[0, 1, -0.0], [0, 0, 0.7071067], [0, 0, -0.7071067]]))
    assert bval.read_text() == "0 1000 2500.5\n"
    assert bvec.read_text() == "0 1 0\n0 0 0.707107\n0 0 -0.707107\n"
    with pytest.raises(ValueError, match="expected"):
        write_bval_bvec(tmp_path / "bad", [0, 1000], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite"):
        write_bval_bvec(tmp_path / "bad", [0], np.full((3, 1), np.nan))


# --- convkit end to end ---------------------------------------------------------------------


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
@pytest.mark.parametrize("name", list(ORIENTATIONS))
@pytest.mark.parametrize("vendor", ["standard", "siemens"])
def test_cli_writes_bval_bvec_equal_to_dcm2niix(tmp_path, cli, dcm2niix, vendor, name,
                                                descending):
    """convkit dicom2nii writes .bval/.bvec beside the DWI and the trace as its own output;
    its gradients, and dcm2niix's, are the acquired LPS directions (to 1e-4)."""
    write_dwi(tmp_path / "in", ORIENTATIONS[name], vendor, descending)
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name != ".convkit") == [
        "1_synthetic.bval", "1_synthetic.bvec", "1_synthetic.json", "1_synthetic.nii.gz",
        "1_synthetic_trace.json", "1_synthetic_trace.nii.gz"]
    dwi = nib.load(out / "1_synthetic.nii.gz")
    bvals = np.loadtxt(out / "1_synthetic.bval", ndmin=1)
    bvecs = np.loadtxt(out / "1_synthetic.bvec", ndmin=2)
    assert dwi.shape[3] == 7 and nib.load(out / "1_synthetic_trace.nii.gz").ndim == 3
    np.testing.assert_allclose(bvals, [0.0] + [1000.0] * 6)
    np.testing.assert_allclose(bvecs[:, 0], 0)
    truth = np.array(DIRECTIONS)
    np.testing.assert_allclose(fsl_bvecs_to_lps(bvecs, dwi.affine)[1:], truth, atol=1e-4)
    affine, their_bvals, their_bvecs = convert(dcm2niix, tmp_path / "in", tmp_path / "ref")
    directional = their_bvals > 0
    theirs = fsl_bvecs_to_lps(their_bvecs, affine)[directional]
    theirs = theirs[np.linalg.norm(theirs, axis=1) > 0.5]  # Siemens: trace kept as a zero vector
    np.testing.assert_allclose(theirs, truth, atol=1e-4)
