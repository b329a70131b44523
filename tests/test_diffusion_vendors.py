"""Diffusion tables convkit used to refuse: unlabelled b=0 volumes, GE logical-frame gradients,
and directions that are unknown (never taken for isotropic). dcm2niix is the oracle.

Every series is a synthetic DWI (convkit.testing.synthetic.write_volumes: 3 slices of 8x10
per volume, one AcquisitionTime per volume). convkit dicom2nii and dcm2niix convert it; the
4D voxels must agree in world space, the .bval files exactly, and the .bvec files as
directions in the patient frame: each file turned back into LPS with its own image's affine
(fsl_bvecs_to_lps), to DIRECTION_ATOL.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import assert_same_world, rotation, run_dcm2niix
from pydicom.dataset import Dataset

from convkit.dicom.diffusion import (
    GE_IMAGE_AXES,
    Diffusion,
    DirectionKind,
    diffusion_of,
    fsl_bvecs_to_lps,
    ge_plane,
)
from convkit.geometry import plane_axes
from convkit.testing.synthetic import ge_diffusion, write_volumes

#: Directions of one series agree with dcm2niix's to this (unit vectors, per component).
DIRECTION_ATOL = 1e-3
_OBLIQUE = rotation(20, -15, 30)
ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "coronal": (1, 0, 0, 0, 0, -1),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "oblique": tuple(_OBLIQUE[:, 0]) + tuple(_OBLIQUE[:, 1]),
}
_S = np.sqrt(0.5)
#: Between the axial and coronal planes: the normal is (0, 0.707, 0.707).
BETWEEN_PLANES = (1, 0, 0, 0, _S, -_S)


def convkit_outputs(out: Path, stem: str = "1_synthetic") -> tuple[Path, np.ndarray, Path]:
    """convkit's DWI: (image path, bvals, bvec path that may not exist)."""
    image = out / f"{stem}.nii.gz"
    return image, np.loadtxt(out / f"{stem}.bval", ndmin=1), out / f"{stem}.bvec"


def dcm2niix_outputs(dcm2niix: str, folder: Path, out: Path) -> tuple[Path, np.ndarray, Path]:
    (image,) = run_dcm2niix(dcm2niix, folder, out)
    return image, np.loadtxt(image.with_suffix(".bval"), ndmin=1), image.with_suffix(".bvec")


def lps_directions(image: Path, bvec: Path) -> np.ndarray:
    """(n, 3) unit LPS gradients of a .bvec read with its own image's affine (b=0: zeros)."""
    return fsl_bvecs_to_lps(np.loadtxt(bvec, ndmin=2), nib.load(image).affine)


# --- unlabelled b=0 volumes (Canon/Toshiba) -----------------------------------------------

#: b=0 volumes (None) carry no diffusion attribute at all; the others the standard ones.
UNLABELLED_TABLE = [None, (1, 0, 0), (0, 1, 0), None, (0, 0, 1), (1, -2, 3)]


def standard_weighting(direction: tuple | None) -> dict:
    if direction is None:
        return {}
    unit = np.asarray(direction, float) / np.linalg.norm(direction)
    return {"DiffusionBValue": 1000.0, "DiffusionDirectionality": "DIRECTIONAL",
            "DiffusionGradientOrientation": [float(v) for v in unit]}


@pytest.mark.parametrize("name", ["axial", "oblique"])
def test_unlabelled_b0_volumes_match_dcm2niix(tmp_path, cli, dcm2niix, name):
    """Volumes none of whose slices carries diffusion attributes are b=0 volumes of the DWI:
    the 4D image, .bval and .bvec equal dcm2niix's (they used to be refused)."""
    write_volumes(tmp_path / "in", [standard_weighting(d) for d in UNLABELLED_TABLE],
                  orientation=ORIENTATIONS[name],
                  extra={"Manufacturer": "TOSHIBA_MEC", "PatientPosition": "HFS"})
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    ours, our_bvals, our_bvec = convkit_outputs(tmp_path / "out")
    theirs, their_bvals, their_bvec = dcm2niix_outputs(dcm2niix, tmp_path / "in",
                                                       tmp_path / "ref")
    assert nib.load(ours).shape == (10, 8, 3, 6)
    assert_same_world(ours, theirs)
    np.testing.assert_array_equal(our_bvals, their_bvals)
    np.testing.assert_array_equal(our_bvals, [0, 1000, 1000, 0, 1000, 1000])
    expected = [np.zeros(3) if d is None else np.asarray(d, float) / np.linalg.norm(d)
                for d in UNLABELLED_TABLE]
    np.testing.assert_allclose(lps_directions(ours, our_bvec), expected, atol=DIRECTION_ATOL)
    np.testing.assert_allclose(lps_directions(theirs, their_bvec), expected, atol=DIRECTION_ATOL)


def test_a_volume_whose_slices_disagree_is_refused(tmp_path, cli):
    """Only a volume none of whose slices is labelled is b=0: one unlabelled slice in a
    weighted volume means the volumes are not what they claim."""
    def drop_one(ds, t, k):
        if (t, k) == (2, 1):
            for keyword in ("DiffusionBValue", "DiffusionDirectionality",
                            "DiffusionGradientOrientation"):
                delattr(ds, keyword)

    write_volumes(tmp_path / "in", [standard_weighting(d) for d in UNLABELLED_TABLE],
                  extra={"Manufacturer": "TOSHIBA_MEC"}, edit=drop_one)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=4)
    (series,) = json.loads(done.stdout)["series"]
    assert series["status"] == "refused"
    assert "1 of the 3 slices of volume 2 carry no diffusion attributes" in series["reason"]


# --- GE: logical-frame gradients ----------------------------------------------------------

#: GE logical gradients (frequency, phase, slice): b=0, six unit directions, two lower
#: shells of a multi-shell tensor (|g| < 1: b * |g|^2), one whose b * |g|^2 is not a
#: multiple of 5 (722.5 -> 725, as dcm2niix rounds).
GE_TABLE = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (0.6, 0.8, 0), (0, -0.6, 0.8),
            (0.48, -0.64, 0.6), (0.5, 0, 0), (0, 0.5, 0.5), (0.85, 0, 0)]
GE_BVALUES = [0, 1000, 1000, 1000, 1000, 1000, 1000, 250, 500, 725]


def write_ge_dwi(folder: Path, orientation: tuple, phase: str | None = "COL",
                 position: str | None = "HFS", descending: bool = False,
                 table: list = GE_TABLE, jitter: float = 0.0,
                 traces: tuple[int, ...] = ()) -> list[Path]:
    """A GE DWI of table (b = 1000 with GE's multi-b bias; zero vectors are b=0, except
    the volumes in traces: b = 1000 with a zero vector, GE's trace images).

    jitter: each slice's ImageOrientationPatient is off by up to this much in its last
    digits, as real series are."""
    extra = {"Manufacturer": "GE MEDICAL SYSTEMS"}
    if phase:
        extra["InPlanePhaseEncodingDirection"] = phase
    if position:
        extra["PatientPosition"] = position
    rng = np.random.default_rng(5)

    def edit(ds, t, k):
        gradient = table[t]
        ge_diffusion(ds, 1000.0 if any(gradient) or t in traces else 0.0, gradient)
        if jitter:
            noisy = np.asarray(orientation, float) + rng.uniform(-jitter, jitter, 6)
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in noisy]

    return write_volumes(folder, [{} for _ in table], orientation=orientation,
                         descending=descending, extra=extra, edit=edit)


def assert_ge_matches_dcm2niix(tmp_path, cli, dcm2niix) -> None:
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    ours, our_bvals, our_bvec = convkit_outputs(tmp_path / "out")
    theirs, their_bvals, their_bvec = dcm2niix_outputs(dcm2niix, tmp_path / "in",
                                                       tmp_path / "ref")
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != ".convkit") == [
        "1_synthetic.bval", "1_synthetic.bvec", "1_synthetic.json", "1_synthetic.nii.gz"]
    assert_same_world(ours, theirs)
    np.testing.assert_array_equal(our_bvals, their_bvals)
    np.testing.assert_array_equal(our_bvals, GE_BVALUES)
    ours_lps, theirs_lps = lps_directions(ours, our_bvec), lps_directions(theirs, their_bvec)
    np.testing.assert_allclose(ours_lps, theirs_lps, atol=DIRECTION_ATOL)
    np.testing.assert_allclose(np.linalg.norm(ours_lps[1:], axis=1), 1.0, atol=1e-4)  # %g


@pytest.mark.parametrize("phase", ["COL", "ROW"])
@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_ge_gradients_match_dcm2niix(tmp_path, cli, dcm2niix, name, phase):
    """Every slice plane and both phase-encoding axes: convkit's bvecs (with its own affine)
    are dcm2niix's directions in the patient frame, and the b-values are dcm2niix's
    (lower shells scaled by |g|^2)."""
    write_ge_dwi(tmp_path / "in", ORIENTATIONS[name], phase)
    assert_ge_matches_dcm2niix(tmp_path, cli, dcm2niix)


@pytest.mark.parametrize("name", ["axial", "sagittal"])
def test_ge_reversed_slices_and_orientation_jitter(tmp_path, cli, dcm2niix, name):
    """Slices stored against the normal, and orientations that differ in their last digits
    from slice to slice (each slice maps its gradient with its own orientation): the same
    volumes and directions as dcm2niix, not a refusal for 'different weightings'."""
    write_ge_dwi(tmp_path / "in", ORIENTATIONS[name], "ROW", descending=True, jitter=2e-5)
    assert_ge_matches_dcm2niix(tmp_path, cli, dcm2niix)


def test_ge_mapping_is_dcm2niix_table_in_image_axes():
    """The rule by hand, independent of dcm2niix: for an axial image with COL phase
    encoding, dcm2niix's bvec is (-f, p, s) in its frame (rows, -columns, normal), i.e.
    (-f, -p, s) along (row, column, normal); a ROW sagittal image swaps f and p."""
    def ge_image(orientation, phase, gradient):
        ds = Dataset()
        ds.Modality, ds.PatientPosition = "MR", "HFS"
        ds.InPlanePhaseEncodingDirection = phase
        ds.ImageOrientationPatient = list(orientation)
        ge_diffusion(ds, 1000.0, gradient)
        return diffusion_of(ds)

    row, col, normal = plane_axes(np.asarray(ORIENTATIONS["axial"], float))
    found = ge_image(ORIENTATIONS["axial"], "COL", (0.6, 0.8, 0.0))
    np.testing.assert_allclose(found.direction_lps, -0.6 * row - 0.8 * col, atol=1e-9)
    row, col, normal = plane_axes(np.asarray(ORIENTATIONS["sagittal"], float))
    found = ge_image(ORIENTATIONS["sagittal"], "ROW", (0.0, 0.6, 0.8))
    np.testing.assert_allclose(found.direction_lps, 0.6 * row - 0.8 * normal, atol=1e-9)
    assert GE_IMAGE_AXES[("sagittal", "ROW")] == ((1, 1), (0, -1), (2, -1))
    assert ge_plane(np.array([0.0, _S, _S])) is None
    assert ge_plane(np.array([0.1, 0.3, 0.95])) == "axial"


# --- GE where the mapping is not established: image and .bval, no .bvec -------------------

@pytest.mark.parametrize("case,phase,position,orientation,reason", [
    ("feet-first", "COL", "FFS", ORIENTATIONS["axial"], "PatientPosition FFS"),
    ("prone", "ROW", "HFP", ORIENTATIONS["coronal"], "PatientPosition HFP"),
    ("no-position", "COL", None, ORIENTATIONS["axial"], "no PatientPosition"),
    ("no-phase", None, "HFS", ORIENTATIONS["axial"], "InPlanePhaseEncodingDirection"),
    ("between-planes", "COL", "HFS", BETWEEN_PLANES, "between two planes"),
])
def test_ge_without_established_mapping_writes_no_bvec(tmp_path, cli, dcm2niix, case, phase,
                                                       position, orientation, reason):
    """The 4D image (as dcm2niix's, in world space) and the .bval (b * |g|^2 for the lower
    shells) are written with exit 0; the .bvec is not, and the sidecar, the table and
    --json say why. The volumes stay one DWI (unknown is not isotropic: no _trace)."""
    write_ge_dwi(tmp_path / "in", orientation, phase, position)
    done = cli("dicom2nii", tmp_path / "in", tmp_path / "out", "--json", check_code=0)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name != ".convkit") == [
        "1_synthetic.bval", "1_synthetic.json", "1_synthetic.nii.gz"]
    ours, our_bvals, _ = convkit_outputs(out)
    np.testing.assert_array_equal(our_bvals, GE_BVALUES)
    theirs, _, _ = dcm2niix_outputs(dcm2niix, tmp_path / "in", tmp_path / "ref")
    assert_same_world(ours, theirs)
    sidecar = json.loads((out / "1_synthetic.json").read_text())
    assert reason in sidecar["BvecNotWritten"] and "GE's logical frame" in sidecar[
        "BvecNotWritten"]
    (series,) = json.loads(done.stdout)["series"]
    assert series["status"] == "written" and series["outputs"][-1].endswith(".bval")
    assert any(note.startswith("no .bvec written") and reason in note
               for note in series["notes"])
    table = cli("dicom2nii", tmp_path / "in", tmp_path / "again", check_code=0)
    assert "no .bvec written" in " ".join(table.stdout.split())


def test_force_removes_an_earlier_bvec_it_does_not_replace(tmp_path, cli):
    """--force replaces a series' outputs: a .bvec left by an earlier conversion of the same
    series (here: as an older convkit that mapped every GE table wrote it) must not sit
    beside an image whose directions are now unknown. A .bvec of unknown origin under the
    series' name is refused, with or without --force (dicom2nii.check_collisions)."""
    write_ge_dwi(tmp_path / "in", ORIENTATIONS["axial"], "COL", "FFS")
    out = tmp_path / "out"
    out.mkdir()
    stray = out / "1_synthetic.bvec"
    stray.write_text("0 1\n0 0\n0 0\n")
    for force in ((), ("--force",)):
        cli("dicom2nii", tmp_path / "in", out, *force, check_code=5)
        assert sorted(p.name for p in out.iterdir() if p.name != ".convkit") == ["1_synthetic.bvec"]
    stray.unlink()
    cli("dicom2nii", tmp_path / "in", out, check_code=0)
    stray.write_text("0 1\n0 0\n0 0\n")  # the earlier run's gradients of this series
    cli("dicom2nii", tmp_path / "in", out, "--force", check_code=0)
    assert sorted(p.name for p in out.iterdir() if p.name != ".convkit") == [
        "1_synthetic.bval", "1_synthetic.json", "1_synthetic.nii.gz"]


# --- an unknown direction is its own state ------------------------------------------------

def test_unknown_direction_is_never_isotropic(tmp_path, cli):
    """A GE series of unknown directions (feet first) that also holds a trace volume (a GE
    zero vector with b > 0): the trace, and only it, becomes `_trace`; the weighted volumes
    of unknown direction stay in the DWI."""
    write_ge_dwi(tmp_path / "in", ORIENTATIONS["axial"], "COL", "FFS",
                 table=GE_TABLE[:4] + [(0, 0, 0)], traces=(4,))
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name != ".convkit") == [
        "1_synthetic.bval", "1_synthetic.json", "1_synthetic.nii.gz",
        "1_synthetic_trace.json", "1_synthetic_trace.nii.gz"]
    assert nib.load(out / "1_synthetic.nii.gz").shape == (10, 8, 3, 4)
    np.testing.assert_array_equal(np.loadtxt(out / "1_synthetic.bval"), [0, 1000, 1000, 1000])


def test_a_b_without_direction_must_say_isotropic_or_unknown():
    with pytest.raises(ValueError, match="ISOTROPIC or UNKNOWN"):
        Diffusion(1000.0, None, "standard")
    unknown = Diffusion(1000.0, None, "standard", DirectionKind.UNKNOWN, "lost")
    trace = Diffusion(1000.0, None, "standard", DirectionKind.ISOTROPIC)
    assert unknown.is_directional and not unknown.is_isotropic
    assert trace.is_isotropic and not trace.is_directional
    assert not unknown.same_weighting(trace) and unknown != trace
    with pytest.raises(ValueError):
        Diffusion(1000.0, None, "standard", DirectionKind.KNOWN)


def test_standard_directional_without_direction_keeps_the_image(tmp_path, cli):
    """DiffusionDirectionality DIRECTIONAL but no DiffusionGradientOrientation (an export
    that dropped it): the DWI and its .bval are written, no .bvec, the reason in the
    sidecar; the series is neither refused nor split into a trace."""
    volumes = [{}] + [{"DiffusionBValue": 1000.0, "DiffusionDirectionality": "DIRECTIONAL"}
                      for _ in range(3)]
    write_volumes(tmp_path / "in", volumes, extra={"Manufacturer": "SIEMENS"})
    cli("dicom2nii", tmp_path / "in", tmp_path / "out", check_code=0)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name != ".convkit") == [
        "1_synthetic.bval", "1_synthetic.json", "1_synthetic.nii.gz"]
    assert nib.load(out / "1_synthetic.nii.gz").shape == (10, 8, 3, 4)
    sidecar = json.loads((out / "1_synthetic.json").read_text())
    assert "DIRECTIONAL" in sidecar["BvecNotWritten"]
