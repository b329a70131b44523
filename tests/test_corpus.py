"""The real corpus (../shared/data/dicom/d2n) through the real CLI, with dcm2niix as the oracle.

Every case folder is converted by `convkit dicom2nii` (the CLI's main()) and by
dcm2niix (run here, into temporary folders; nothing is stored) and the two are
compared in world space: both reoriented to the closest canonical axes, same
shape, same affine to 0.01 mm, same scaled voxel values. Cases convkit refuses
by design are asserted as refusals (exit 4, message naming the cause).
Conversions are cached per session so each case is converted once.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import CORPUS, run_cli
from helpers import AFFINE_ATOL_MM, assert_same_world, canonical, run_dcm2niix

D2N = Path("dicom") / "d2n"

# What each d2n case must give. Every case folder found on disk must be listed here, so a new
# case cannot slip through untested (see test_every_case_has_an_expectation).
SAME = "same as dcm2niix"  # one volume, equal to dcm2niix's in world space
SAME_FLOAT = "same as dcm2niix, float values"  # per-slice rescale -> float32 real-world values
SAME_RGB = "same as dcm2niix, RGB"
PHILIPS_PRECISE = "same as dcm2niix with --philips-precise (dcm2niix's default)"
UNEVEN = "refused: uneven spacing"
ORIENTATIONS = "two orientations"
TILT = "gantry tilt corrected"
NOT_A_VOLUME = "4D by AcquisitionNumber"

EXPECTED = {
    "anatomical_001": SAME,
    "anatomical_001_implicit": SAME,
    "failing_gantrytilting_001": TILT,
    "failing_notavolume_001": NOT_A_VOLUME,
    "failing_slicecount_001": SAME,
    "failing_sliceincrement_001": UNEVEN,
    "failing_sliceincrement_002": UNEVEN,
    "failing_sliceorientation_001": ORIENTATIONS,
    "ge_anatomical_001": SAME,
    "ge_anatomical_001_single_slice": SAME,
    "ge_fmri_001": SAME,
    "generic_anatomical_001": SAME,
    "generic_anatomical_002_non_isotropic": SAME_FLOAT,
    "generic_compressed_001": SAME,
    "generic_compressed_j2k_001": SAME,
    "generic_compressed_jpeg_001": SAME,
    "generic_compressed_jpegls_001": SAME,
    "generic_compressed_rle_001": SAME,
    "generic_rgb_001": SAME_RGB,
    "hitachi_anatomical_001": SAME,
    "hyperfine_anatomical_001": SAME,
    "philips_enhanced_anatomical_001": PHILIPS_PRECISE,
    "philips_fmri_001": SAME,
    "siemens_anatomical_001": SAME,
    "siemens_multiframe_anatomical_001": SAME,
}


def _cases_on_disk() -> list[str]:
    root = CORPUS / D2N
    if not root.is_dir():  # the corpus fixture skips these tests; keep the ids stable
        return sorted(EXPECTED)
    return sorted(p.name for p in root.iterdir() if (p / "series").is_dir())


CASES = _cases_on_disk()


# ------------------------------------------------------------------------------------------
# Session caches: each case converted once by convkit (per option set) and once by dcm2niix.


@dataclass
class Converted:
    done: object  # subprocess.CompletedProcess of the CLI run
    out: Path

    @property
    def code(self) -> int:
        return self.done.returncode

    @property
    def text(self) -> str:
        return self.done.stdout + self.done.stderr

    def outputs(self, suffix: str = ".nii.gz") -> list[Path]:
        return sorted(p for p in self.out.glob(f"*{suffix}") if not p.name.startswith("."))


def series_dir(corpus: Path, case: str) -> Path:
    return corpus / D2N / case / "series"


def dicom_files(corpus: Path, case: str) -> list[Path]:
    return sorted(p for p in series_dir(corpus, case).iterdir() if p.is_file())


@pytest.fixture(scope="session")
def convkit_run(corpus, tmp_path_factory):
    """convkit_run(case, *options, fmt='nii.gz') -> Converted (the real CLI, cached)."""
    cache: dict[tuple, Converted] = {}

    def run(case: str, *options: str, fmt: str = "nii.gz") -> Converted:
        key = (case, options, fmt)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"convkit_{case}")
            done = run_cli("dicom2nii", series_dir(corpus, case), out, "--format", fmt,
                           *options)
            cache[key] = Converted(done, out)
        return cache[key]

    return run


@pytest.fixture(scope="session")
def dcm2niix_run(corpus, dcm2niix, tmp_path_factory):
    """dcm2niix_run(case) -> the .nii files dcm2niix writes for the case (cached)."""
    cache: dict[str, list[Path]] = {}

    def run(case: str) -> list[Path]:
        if case not in cache:
            cache[case] = run_dcm2niix(dcm2niix, series_dir(corpus, case),
                                       tmp_path_factory.mktemp(f"dcm2niix_{case}"))
        return cache[case]

    return run


# ------------------------------------------------------------------------------------------
# Independent geometry: where a DICOM slice's pixels are in an output volume.


def dicom_ras_affine(ds) -> np.ndarray:
    """(column index i, row index j, 0) of one DICOM image -> RAS mm (third column: normal)."""
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    spacing = np.asarray(ds.PixelSpacing, dtype=float)  # [between rows, between columns]
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing[1]
    affine[:3, 1] = col_dir * spacing[0]
    affine[:3, 2] = np.cross(row_dir, col_dir)
    affine[:3, 3] = np.asarray(ds.ImagePositionPatient, dtype=float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def dicom_indices(image_affine: np.ndarray, ds) -> np.ndarray:
    """Fractional (3, rows, cols) voxel indices in the image of every pixel of the DICOM slice."""
    mapping = np.linalg.inv(image_affine) @ dicom_ras_affine(ds)
    jj, ii = np.mgrid[0:int(ds.Rows), 0:int(ds.Columns)]
    return (mapping[:3, 0, None, None] * ii + mapping[:3, 1, None, None] * jj
            + mapping[:3, 3, None, None])


def values_at_dicom(image_affine: np.ndarray, data: np.ndarray, ds, t: int | None = None,
                    ) -> np.ndarray:
    """The volume's values at the DICOM slice's pixel centres, as a (rows, cols) array.

    Fails unless every pixel centre falls on a voxel centre (0.01 voxel) inside the volume:
    the slice must be one of the volume's own slices.
    """
    index = dicom_indices(image_affine, ds)
    rounded = np.rint(index)
    assert np.abs(index - rounded).max() < 0.01, "the DICOM slice is not on the volume's grid"
    rounded = rounded.astype(int)
    for axis in range(3):
        assert rounded[axis].min() >= 0 and rounded[axis].max() < data.shape[axis]
    picked = data[rounded[0], rounded[1], rounded[2]] if t is None else \
        data[rounded[0], rounded[1], rounded[2], t]
    return picked


def real_pixels(ds) -> np.ndarray:
    """Pixel values of one DICOM file * RescaleSlope + RescaleIntercept, (rows, cols)."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return ds.pixel_array.astype(np.float64) * slope + intercept


def covered_mask(image_affine: np.ndarray, shape: tuple[int, ...], datasets: list) -> np.ndarray:
    """Voxels inside the field of view of the source slice at their k, 1-voxel rim excluded.

    For slices that no source slice lands on (interpolated between two), the intersection of
    the neighbouring slices' masks.
    """
    mask = np.zeros(shape[:3], dtype=bool)
    found = {}
    for ds in datasets:
        index = dicom_indices(image_affine, ds)
        k = int(np.rint(index[2].mean()))
        assert np.abs(index[2] - k).max() < 0.01, "source slice not on a k plane"
        low = np.ceil(index[:2].reshape(2, -1).min(axis=1)).astype(int) + 1
        high = np.floor(index[:2].reshape(2, -1).max(axis=1)).astype(int) - 1
        low = np.maximum(low, 0)
        high = np.minimum(high, np.array(shape[:2]) - 1)
        mask[low[0]:high[0] + 1, low[1]:high[1] + 1, k] = True
        found[k] = True
    for k in range(shape[2]):
        if k not in found and 0 < k < shape[2] - 1:
            below = max(j for j in found if j < k)
            above = min(j for j in found if j > k)
            mask[:, :, k] = mask[:, :, below] & mask[:, :, above]
    return mask


def nifti_real(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(scaled values, affine) of a NIfTI as stored (not reoriented)."""
    image = nib.load(str(path))
    data = np.asarray(image.dataobj)
    if data.dtype.names is None:
        data = image.get_fdata(dtype=np.float64)
    return data, image.affine


def read_sidecar(output: Path) -> dict:
    name = output.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else output.stem
    sidecar = output.with_name(stem + ".json")
    assert sidecar.is_file(), f"no JSON sidecar beside {output.name}"
    return json.loads(sidecar.read_text())


def header(path: Path):
    return pydicom.dcmread(path, stop_before_pixels=True)


# ------------------------------------------------------------------------------------------
# Every case, by expectation.


def test_every_case_has_an_expectation(corpus):
    on_disk = sorted(p.name for p in (corpus / D2N).iterdir() if (p / "series").is_dir())
    assert on_disk == sorted(EXPECTED)


@pytest.mark.parametrize("case", CASES)
def test_d2n_case(case, corpus, convkit_run, dcm2niix_run):
    """Each d2n case: equal to dcm2niix in world space, or the refusal convkit promises."""
    assert case in EXPECTED, f"new corpus case {case}: add its expectation"
    kind = EXPECTED[case]
    result = convkit_run(case)
    if kind == UNEVEN:
        check_refusal(case, kind, result, corpus, dcm2niix_run)
    elif kind == PHILIPS_PRECISE:
        check_same(case, SAME, convkit_run(case, "--philips-precise"), corpus, dcm2niix_run)
    elif kind in (SAME, SAME_FLOAT, SAME_RGB):
        check_same(case, kind, result, corpus, dcm2niix_run)
    elif kind == ORIENTATIONS:
        check_orientations(case, result, corpus, dcm2niix_run)
    elif kind == TILT:
        check_tilt(case, result, corpus, dcm2niix_run)
    elif kind == NOT_A_VOLUME:
        check_not_a_volume(case, result, corpus, dcm2niix_run)
    else:  # pragma: no cover - a typo in EXPECTED
        pytest.fail(f"unknown expectation {kind!r}")


def check_same(case, kind, result, corpus, dcm2niix_run):
    assert result.code == 0, result.text
    outputs = result.outputs()
    references = dcm2niix_run(case)
    assert len(outputs) == 1, [p.name for p in outputs]
    assert len(references) == 1, [p.name for p in references]
    ours, theirs = outputs[0], references[0]
    data, _ = canonical(ours)
    assert np.unique(data).size > 1, "constant output: comparison would prove nothing"
    if kind == SAME_RGB:
        # The helpers keep structured RGB as is and compare it with array_equal: make sure
        # both really are RGB triplets (not a single channel or grey) so that path is taken.
        assert data.dtype.names == ("R", "G", "B")
        assert canonical(theirs)[0].dtype.names == ("R", "G", "B")
        assert not np.array_equal(data["R"], data["G"]) or not np.array_equal(data["G"],
                                                                                data["B"])
        assert_same_world(ours, theirs)
    elif kind == SAME_FLOAT:
        check_per_slice_scaling(case, ours, theirs, corpus)
    else:
        assert_same_world(ours, theirs, atol_values=0.0)
    sidecar = read_sidecar(ours)
    first = header(dicom_files(corpus, case)[0])
    assert sidecar["SeriesInstanceUID"] == str(first.SeriesInstanceUID)
    assert sidecar["Modality"] == str(first.Modality)


def check_per_slice_scaling(case, ours, theirs, corpus):
    """Per-slice RescaleSlope: convkit writes float32 real-world values.

    Tolerance: both converters compute stored * slope_k + intercept_k and store float32;
    float32 keeps ~7 significant digits, so any two correct implementations (different
    operation order, double vs single intermediates) agree to a few ulps of the largest
    value, i.e. ~1e-6 of the data range. 1e-5 of the range leaves margin for that, while a
    wrong scale (e.g. the first slice's slope for every slice) is off by percents of the
    range: checked below, so the tolerance can tell right from wrong.
    """
    files = dicom_files(corpus, case)
    datasets = [pydicom.dcmread(p) for p in files]
    slopes = {float(ds.RescaleSlope) for ds in datasets}
    assert len(slopes) > 1, "case no longer has per-slice slopes"
    assert nib.load(str(ours)).get_data_dtype() == np.float32
    reference, _ = canonical(theirs)
    tolerance = 1e-5 * float(reference.max() - reference.min())
    assert_same_world(ours, theirs, atol_values=tolerance)
    # Each original slice holds exactly its own pixels * its own slope + intercept.
    data, affine = nifti_real(ours)
    first_slope = float(datasets[0].RescaleSlope)
    worst_single_slope = 0.0
    for ds in datasets:
        got = values_at_dicom(affine, data, ds)
        np.testing.assert_allclose(got, real_pixels(ds), rtol=0, atol=tolerance)
        wrong = ds.pixel_array * first_slope + float(ds.RescaleIntercept)
        worst_single_slope = max(worst_single_slope, float(np.abs(wrong - real_pixels(ds)).max()))
    assert worst_single_slope > 100 * tolerance


def check_refusal(case, kind, result, corpus, dcm2niix_run):
    assert result.code == 4, f"exit {result.code}, expected a refusal (4)\n{result.text}"
    assert result.outputs() == [] and not list(result.out.glob("*.json")), "refusal wrote files"
    assert "Traceback" not in result.text
    # Uneven spacing: the message names the cause and where the gap is (the slice before it).
    assert "uneven slice spacing" in result.text
    assert "--resample" in result.text  # the option that would allow it
    before, step, typical = find_gap(dicom_files(corpus, case))
    assert before.name in result.text, f"gap after {before.name} not named:\n{result.text}"
    position = header(before).ImagePositionPatient
    assert "\\".join(f"{float(v):g}" for v in position) in result.text
    assert f"{step:.3g} mm step" in result.text and f"steps {typical:.3g} mm" in result.text


def find_gap(files: list[Path]) -> tuple[Path, float, float]:
    """(file before the largest step, that step, the median step), along the slice normal."""
    headers = [header(p) for p in files]
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    distance = {p: float(np.dot(np.asarray(h.ImagePositionPatient, float), normal))
                for p, h in zip(files, headers, strict=True)}
    ordered = sorted(files, key=distance.get)
    steps = np.diff([distance[p] for p in ordered])
    where = int(np.argmax(steps))
    assert steps[where] > 1.5 * np.median(steps), "no gap in this series"
    return ordered[where], float(steps[where]), float(np.median(steps))


def check_orientations(case, result, corpus, dcm2niix_run):
    """One SeriesInstanceUID, two orientations: two volumes each, matched by geometry."""
    assert result.code == 0, result.text
    ours, theirs = result.outputs(), dcm2niix_run(case)
    assert len(ours) == 2 and len(theirs) == 2, ([p.name for p in ours], [p.name for p in theirs])
    files = dicom_files(corpus, case)
    assert len({str(header(p).SeriesInstanceUID) for p in files}) == 1
    matched = set()
    for output in ours:
        _, affine = canonical(output)
        partners = [ref for ref in theirs
                    if np.allclose(canonical(ref)[1], affine, atol=AFFINE_ATOL_MM, rtol=0)]
        assert len(partners) == 1, f"{output.name}: no dcm2niix volume with its geometry"
        assert_same_world(output, partners[0], atol_values=0.0)
        matched.add(partners[0])
        # The sidecar describes the files of this orientation (EchoTime differs between them).
        data, raw_affine = nifti_real(output)
        mine = [p for p in files if _same_plane(raw_affine, header(p))]
        assert len(mine) == 2
        sidecar = read_sidecar(output)
        assert sidecar["EchoTime"] == pytest.approx(float(header(mine[0]).EchoTime) / 1000)
        for p in mine:
            ds = pydicom.dcmread(p)
            np.testing.assert_array_equal(values_at_dicom(raw_affine, data, ds), real_pixels(ds))
    assert matched == set(theirs)


def _same_plane(affine: np.ndarray, ds) -> bool:
    """True when the DICOM slice's row/column directions are the volume's i/j axes."""
    mapping = np.linalg.inv(affine) @ dicom_ras_affine(ds)
    return bool(np.allclose(np.abs(mapping[:3, :2]), np.eye(3)[:, :2], atol=1e-3))


def check_tilt(case, result, corpus, dcm2niix_run):
    """Gantry tilt corrected by default; compared with dcm2niix's *_Tilt_1.nii.

    Inside the region every source slice covers (its in-plane field of view shifted onto the
    straight grid, minus a 1-voxel rim), both converters interpolate the same two source
    pixels linearly with the same fractional shift, so they may differ only by rounding the
    interpolated value to an integer: at most 1 HU. At the rim one interpolates with its fill
    value and the other does not, so values there may differ by tens of HU; those voxels
    (<1% of the volume) are excluded from the strict check but counted in the overall one.
    """
    assert result.code == 0, result.text
    outputs = result.outputs()
    assert len(outputs) == 1
    tilted = [p for p in dcm2niix_run(case) if p.name.endswith("_Tilt_1.nii")]
    assert len(tilted) == 1, [p.name for p in dcm2niix_run(case)]
    ours, theirs = outputs[0], tilted[0]
    assert nib.load(str(ours)).shape == (512, 521, 4)
    data, affine = canonical(ours)
    reference, reference_affine = canonical(theirs)
    assert data.shape == reference.shape
    np.testing.assert_allclose(affine, reference_affine, atol=AFFINE_ATOL_MM, rtol=0)
    assert "gantry tilt 14.00 degrees corrected" in result.text
    sidecar = read_sidecar(ours)
    assert sidecar["TiltCorrected"] is True
    assert sidecar["GantryTiltFromPositions"] == pytest.approx(tilt_degrees(corpus, case), abs=0.01)
    compare_inside_fov(data, affine, reference, corpus, case)


def compare_inside_fov(data, affine, reference, corpus, case):
    datasets = [pydicom.dcmread(p) for p in dicom_files(corpus, case)]
    mask = covered_mask(affine, data.shape, datasets)
    difference = np.abs(data - reference)
    # Each slice covers its own 512 columns of the wider straight grid, less the rim: ~97%.
    assert mask.mean() > 0.95, f"only {mask.mean():.3f} of the voxels compared"
    assert difference[mask].max() <= 1.0, (
        f"inside the field of view: max |diff| {difference[mask].max()} HU, "
        f"{np.count_nonzero(difference[mask] > 1)} voxels > 1 HU")
    assert (difference <= 1.0).mean() >= 0.99, f"{(difference <= 1).mean():.4f} within 1 HU"
    assert difference.mean() < 0.5, f"mean |diff| {difference.mean():.3f} HU"
    # Slices that land on whole voxels keep their DICOM values exactly (no interpolation).
    exact = 0
    for ds in datasets:
        index = dicom_indices(affine, ds)
        if np.abs(index - np.rint(index)).max() < 0.01:
            np.testing.assert_array_equal(values_at_dicom(affine, data, ds), real_pixels(ds))
            exact += 1
    assert exact >= 1, "no slice on whole voxels: the exact check never ran"


def tilt_degrees(corpus: Path, case: str) -> float:
    """Angle between the slice stacking direction and the slice normal, from the headers."""
    headers = [header(p) for p in dicom_files(corpus, case)]
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([np.asarray(h.ImagePositionPatient, float) for h in headers])
    positions = positions[np.argsort(positions @ normal)]
    step = positions[-1] - positions[0]
    along = float(step @ normal)
    return math.degrees(math.atan2(float(np.linalg.norm(step - along * normal)), along))


def check_not_a_volume(case, result, corpus, dcm2niix_run):
    """4 CT files at one position, distinct AcquisitionNumber: a 512x512x1x4 series.

    dcm2niix also writes 512x512x1x4 but orders the volumes by InstanceNumber, which in this
    series runs opposite to AcquisitionNumber (InstanceNumber 23..26 <-> AcquisitionNumber
    15..12). convkit orders by AcquisitionNumber, so each convkit volume must equal the
    dcm2niix volume of the same file, and convkit's order is checked against AcquisitionNumber
    read with pydicom.
    """
    assert result.code == 0, result.text
    outputs, references = result.outputs(), dcm2niix_run(case)
    assert len(outputs) == 1 and len(references) == 1
    data, affine = canonical(outputs[0])
    reference, reference_affine = canonical(references[0])
    assert data.shape == reference.shape == (512, 512, 1, 4)
    np.testing.assert_allclose(affine, reference_affine, atol=AFFINE_ATOL_MM, rtol=0)
    datasets = [pydicom.dcmread(p) for p in dicom_files(corpus, case)]
    assert len({int(ds.AcquisitionNumber) for ds in datasets}) == 4
    by_acquisition = sorted(datasets, key=lambda ds: int(ds.AcquisitionNumber))
    by_instance = sorted(datasets, key=lambda ds: int(ds.InstanceNumber))
    for first in range(4):  # the four files hold different pixels: order is observable
        for second in range(first + 1, 4):
            assert not np.array_equal(datasets[first].pixel_array, datasets[second].pixel_array)
    raw, raw_affine = nifti_real(outputs[0])
    for t, ds in enumerate(by_acquisition):
        np.testing.assert_array_equal(values_at_dicom(raw_affine, raw, ds, t), real_pixels(ds))
        u = [d.SOPInstanceUID for d in by_instance].index(ds.SOPInstanceUID)
        np.testing.assert_array_equal(data[..., t], reference[..., u])
    assert "ordered by AcquisitionNumber" in result.text
    assert read_sidecar(outputs[0])["VolumeOrderedBy"] == "AcquisitionNumber"


# ------------------------------------------------------------------------------------------
# Options on the failing cases.


def test_tilt_refuse_names_the_angle(cli, corpus, tmp_path):
    case = "failing_gantrytilting_001"
    done = cli("dicom2nii", series_dir(corpus, case), tmp_path / "out", "--tilt", "refuse")
    assert done.returncode == 4, done.stdout + done.stderr
    text = done.stdout + done.stderr
    found = re.search(r"gantry tilt of (\d+\.\d+) degrees", text)
    assert found, text
    assert float(found.group(1)) == pytest.approx(14.0, abs=0.01)
    assert float(found.group(1)) == pytest.approx(tilt_degrees(corpus, case), abs=0.01)
    assert "--tilt resample" in text
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_sliceincrement_resample_matches_dcm2niix_and_dicom(convkit_run, dcm2niix_run, corpus):
    """--resample: 4 slices at 0, 5, 10, 20 mm -> a regular 5 mm grid of 5 slices.

    dcm2niix's *_Eq_1.nii equalises onto its own grid (4 mm here), so the two share only the
    first and last slices: there both hold original pixels and must be equal. Every original
    slice keeps its DICOM values exactly in convkit's output, and the one interpolated slice
    lies midway between its neighbours (linear, rounded to the stored integer type).
    """
    case = "failing_sliceincrement_001"
    result = convkit_run(case, "--resample")
    assert result.code == 0, result.text
    outputs = result.outputs()
    assert len(outputs) == 1
    assert nib.load(str(outputs[0])).shape == (512, 512, 5)
    equalised = [p for p in dcm2niix_run(case) if p.name.endswith("_Eq_1.nii")]
    assert len(equalised) == 1, [p.name for p in dcm2niix_run(case)]
    data, affine = canonical(outputs[0])
    reference, reference_affine = canonical(equalised[0])
    assert np.linalg.norm(affine[:3, 2]) == pytest.approx(5.0, abs=AFFINE_ATOL_MM)
    np.testing.assert_allclose(affine[:3, :2], reference_affine[:3, :2], atol=AFFINE_ATOL_MM)
    assert data.shape[:2] == reference.shape[:2]
    shared = []
    for k in range(data.shape[2]):
        origin = affine @ [0, 0, k, 1]
        for m in range(reference.shape[2]):
            if np.allclose(reference_affine @ [0, 0, m, 1], origin, atol=AFFINE_ATOL_MM):
                shared.append((k, m))
    assert [k for k, _ in shared] == [0, data.shape[2] - 1], shared
    for k, m in shared:
        np.testing.assert_array_equal(data[:, :, k], reference[:, :, m])
    # Original slices: exactly their DICOM values; the missing one: the midway mean.
    datasets = [pydicom.dcmread(p) for p in dicom_files(corpus, case)]
    on_grid = set()
    for ds in datasets:
        np.testing.assert_array_equal(values_at_dicom(affine, data, ds), real_pixels(ds))
        on_grid.add(int(np.rint(dicom_indices(affine, ds)[2].mean())))
    missing = sorted(set(range(data.shape[2])) - on_grid)
    assert len(missing) == 1 and 0 < missing[0] < data.shape[2] - 1, (on_grid, missing)
    k = missing[0]
    midway = (data[:, :, k - 1] + data[:, :, k + 1]) / 2
    assert np.abs(data[:, :, k] - midway).max() <= 0.5
    assert not np.array_equal(data[:, :, k - 1], data[:, :, k + 1])
    assert "uneven spacing resampled" in result.text


def test_sliceincrement_tilted_resample_matches_dcm2niix(convkit_run, dcm2niix_run, corpus):
    """failing_sliceincrement_002 with --resample: tilt corrected and gap filled.

    Compared with dcm2niix's *_Tilt_Eq_1.nii (both: 512x514x5 on the same grid) with the
    same field-of-view tolerance as the tilt case; the interpolated slice is compared where
    both neighbouring slices cover.
    """
    case = "failing_sliceincrement_002"
    result = convkit_run(case, "--resample")
    assert result.code == 0, result.text
    outputs = result.outputs()
    assert len(outputs) == 1
    references = [p for p in dcm2niix_run(case) if p.name.endswith("_Tilt_Eq_1.nii")]
    assert len(references) == 1, [p.name for p in dcm2niix_run(case)]
    data, affine = canonical(outputs[0])
    reference, reference_affine = canonical(references[0])
    assert data.shape == reference.shape
    np.testing.assert_allclose(affine, reference_affine, atol=AFFINE_ATOL_MM, rtol=0)
    compare_inside_fov(data, affine, reference, corpus, case)


# ------------------------------------------------------------------------------------------
# 4D: time step.


@pytest.mark.parametrize("case", ["ge_fmri_001", "philips_fmri_001"])
def test_fmri_time_step_is_repetition_time(case, convkit_run, dcm2niix_run, corpus):
    """pixdim[4] of a 4D NIfTI is the repetition time in seconds, as dcm2niix writes it."""
    result = convkit_run(case)
    assert result.code == 0, result.text
    ours = nib.load(str(result.outputs()[0])).header
    theirs = nib.load(str(dcm2niix_run(case)[0])).header
    repetition_s = float(header(dicom_files(corpus, case)[0]).RepetitionTime) / 1000
    assert ours.get_xyzt_units() == ("mm", "sec")
    assert float(theirs.get_zooms()[3]) == pytest.approx(repetition_s, abs=1e-3)
    assert float(ours.get_zooms()[3]) == pytest.approx(repetition_s, abs=1e-3), (
        f"pixdim[4] {ours.get_zooms()[3]} != TR {repetition_s} s (dcm2niix: "
        f"{theirs.get_zooms()[3]})")


# ------------------------------------------------------------------------------------------
# NRRD output, read back by SimpleITK and pynrrd.

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
NRRD_CASES = {
    "failing_gantrytilting_001": "CT, RescaleIntercept -1024, tilt-corrected oblique grid",
    "hitachi_anatomical_001": "oblique MR",
    "generic_anatomical_002_non_isotropic": "float real-world values (per-slice slope)",
}


def nrrd_affine_ras(header_: dict, spatial_axes: list[int]) -> np.ndarray:
    """Voxel -> RAS affine from NRRD 'space directions'/'space origin' in its stated space."""
    space = header_["space"]
    directions = np.asarray(header_["space directions"], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = directions[spatial_axes].T
    affine[:3, 3] = np.asarray(header_["space origin"], dtype=float)
    if space in ("left-posterior-superior", "LPS"):
        return RAS_FROM_LPS @ affine
    assert space in ("right-anterior-superior", "RAS"), space
    return affine


def sitk_affine_ras(image) -> np.ndarray:
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return RAS_FROM_LPS @ affine


@pytest.mark.parametrize("case", sorted(NRRD_CASES))
def test_nrrd_matches_nifti(case, convkit_run):
    import nrrd
    import SimpleITK as sitk

    nifti_run, nrrd_run = convkit_run(case), convkit_run(case, fmt="nrrd")
    assert nifti_run.code == 0 and nrrd_run.code == 0, nrrd_run.text
    (nifti_path,), (nrrd_path,) = nifti_run.outputs(), nrrd_run.outputs(".nrrd")
    values, affine = nifti_real(nifti_path)
    if case == "failing_gantrytilting_001":  # the case really exercises an intercept
        image = nib.load(str(nifti_path))
        assert image.dataobj.inter == -1024 and values.min() < 0
    # pynrrd: converts nothing; we build the world affine from the header ourselves.
    data, head = nrrd.read(str(nrrd_path), index_order="F")
    assert data.shape == values.shape
    np.testing.assert_allclose(nrrd_affine_ras(head, [0, 1, 2]), affine, atol=AFFINE_ATOL_MM,
                               rtol=0)
    np.testing.assert_array_equal(data.astype(np.float64), values)
    if np.issubdtype(data.dtype, np.floating):
        # Float data: exactly the NIfTI's float32 values (no loss in the NRRD writer).
        assert np.array_equal(data.astype(np.float32), values.astype(np.float32))
    # SimpleITK (LPS internally).
    image = sitk.ReadImage(str(nrrd_path))
    sitk_values = sitk.GetArrayFromImage(image).T
    assert sitk_values.shape == values.shape
    np.testing.assert_allclose(sitk_affine_ras(image), affine, atol=AFFINE_ATOL_MM, rtol=0)
    np.testing.assert_array_equal(sitk_values.astype(np.float64), values)
    assert read_sidecar(nrrd_path)["SeriesInstanceUID"] == read_sidecar(nifti_path)[
        "SeriesInstanceUID"]


def test_nrrd_rgb_matches_nifti(convkit_run):
    import nrrd

    case = "generic_rgb_001"
    nifti_run, nrrd_run = convkit_run(case), convkit_run(case, fmt="nrrd")
    assert nifti_run.code == 0 and nrrd_run.code == 0, nrrd_run.text
    (nifti_path,), (nrrd_path,) = nifti_run.outputs(), nrrd_run.outputs(".nrrd")
    values, affine = nifti_real(nifti_path)
    assert values.dtype.names == ("R", "G", "B")
    data, head = nrrd.read(str(nrrd_path), index_order="F")
    assert head["kinds"][0] == "RGB-color" and data.shape == (3, *values.shape)
    assert np.isnan(np.asarray(head["space directions"], float)[0]).all()
    np.testing.assert_allclose(nrrd_affine_ras(head, [1, 2, 3]), affine, atol=AFFINE_ATOL_MM,
                               rtol=0)
    for channel, name in enumerate("RGB"):
        np.testing.assert_array_equal(data[channel], values[name])


def test_nrrd_4d_matches_nifti_and_reads_in_simpleitk(convkit_run):
    """A 4D series as NRRD: geometry and values as the NIfTI, and readable by SimpleITK."""
    import nrrd
    import SimpleITK as sitk

    case = "ge_fmri_001"
    nifti_run, nrrd_run = convkit_run(case), convkit_run(case, fmt="nrrd")
    assert nifti_run.code == 0 and nrrd_run.code == 0, nrrd_run.text
    (nifti_path,), (nrrd_path,) = nifti_run.outputs(), nrrd_run.outputs(".nrrd")
    values, affine = nifti_real(nifti_path)
    data, head = nrrd.read(str(nrrd_path), index_order="F")
    # Time points are a non-spatial 'list' axis first, so that ITK reads a 3D vector image.
    assert values.shape == (64, 64, 4, 2) and data.shape == (2, 64, 64, 4)
    assert head["kinds"] == ["list", "domain", "domain", "domain"]
    np.testing.assert_allclose(nrrd_affine_ras(head, [1, 2, 3]), affine, atol=AFFINE_ATOL_MM,
                               rtol=0)
    np.testing.assert_array_equal(np.moveaxis(data, 0, 3).astype(np.float64), values)
    try:
        image = sitk.ReadImage(str(nrrd_path))
    except RuntimeError as error:
        pytest.fail(f"SimpleITK cannot read convkit's 4D NRRD: {str(error).splitlines()[-1]}")
    assert image.GetSize() == (64, 64, 4) and image.GetNumberOfComponentsPerPixel() == 2
    np.testing.assert_allclose(sitk_affine_ras(image), affine, atol=AFFINE_ATOL_MM, rtol=0)
    array = sitk.GetArrayFromImage(image)  # (k, j, i, t)
    np.testing.assert_array_equal(array.transpose(2, 1, 0, 3).astype(np.float64), values)


# ------------------------------------------------------------------------------------------
# JSON sidecar.


def test_sidecar_values_and_identifiers(cli, corpus, tmp_path):
    case = "hitachi_anatomical_001"
    ds = header(dicom_files(corpus, case)[0])
    assert str(ds.PatientName) and ds.PatientID and ds.PatientBirthDate  # something to leak
    done = cli("dicom2nii", series_dir(corpus, case), tmp_path / "plain", check_code=0)
    (output,) = sorted((tmp_path / "plain").glob("*.nii.gz"))
    sidecar = read_sidecar(output)
    assert sidecar["Modality"] == ds.Modality == "MR"
    assert sidecar["SeriesInstanceUID"] == str(ds.SeriesInstanceUID)
    assert sidecar["EchoTime"] == pytest.approx(float(ds.EchoTime) / 1000, abs=1e-9)
    assert sidecar["RepetitionTime"] == pytest.approx(float(ds.RepetitionTime) / 1000, abs=1e-9)
    assert sidecar["SeriesNumber"] == int(ds.SeriesNumber)
    assert sidecar["SourceFiles"] == len(dicom_files(corpus, case))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
        assert keyword not in sidecar
    assert "Traceback" not in done.stderr

    cli("dicom2nii", series_dir(corpus, case), tmp_path / "kept", "--keep-identifiers",
        check_code=0)
    (kept_output,) = sorted((tmp_path / "kept").glob("*.nii.gz"))
    kept = read_sidecar(kept_output)
    assert kept["PatientName"] == str(ds.PatientName)
    assert kept["PatientID"] == str(ds.PatientID)
    assert kept["PatientBirthDate"] == str(ds.PatientBirthDate)


def test_sidecar_ct_has_no_mr_times(convkit_run, corpus):
    case = "failing_gantrytilting_001"
    result = convkit_run(case)
    sidecar = read_sidecar(result.outputs()[0])
    ds = header(dicom_files(corpus, case)[0])
    assert sidecar["Modality"] == "CT"
    assert sidecar["SeriesInstanceUID"] == str(ds.SeriesInstanceUID)
    assert sidecar["RescaleIntercept"] == float(ds.RescaleIntercept) == -1024
    assert "EchoTime" not in sidecar and "PatientName" not in sidecar


# ------------------------------------------------------------------------------------------
# The whole tree in one run.


def test_whole_tree_accounts_for_every_file(cli, corpus, tmp_path):
    root = corpus / D2N
    done = cli("dicom2nii", root, tmp_path / "out", "--json")
    assert done.returncode == 6, done.stderr
    report = json.loads(done.stdout)
    assert report["exit_code"] == 6
    on_disk = sorted(Path(folder, name).resolve() for folder, _, names in os.walk(root)
                     for name in names)
    listed = [Path(record["path"]).resolve() for record in report["files"]]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert set(listed) == set(on_disk)
    statuses = {Path(r["path"]).resolve(): r["status"] for r in report["files"]}
    assert set(statuses.values()) <= {"used", "duplicate", "not-dicom", "refused"}
    counts = {s: list(statuses.values()).count(s) for s in set(statuses.values())}
    assert report["file_counts"] == counts

    # Independently: what pydicom can read, and SOPInstanceUIDs.
    sop = {}
    for path in on_disk:
        try:
            sop[path] = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        except pydicom.errors.InvalidDicomError:
            pass
    assert {p for p, s in statuses.items() if s == "not-dicom"} == set(on_disk) - set(sop)
    kept = [sop[p] for p, s in statuses.items() if s in ("used", "refused")]
    assert len(kept) == len(set(kept)), "two used files with the same SOPInstanceUID"
    assert set(kept) == set(sop.values()), "a SOPInstanceUID was lost"
    for path, status in statuses.items():
        if status == "duplicate":
            assert sop[path] in kept

    # Refused files are exactly the files of the cases convkit refuses, with the reason.
    refusing = [case for case, kind in EXPECTED.items() if kind == UNEVEN]
    expected_refused = {p.resolve() for case in refusing for p in dicom_files(corpus, case)}
    assert {p for p, s in statuses.items() if s == "refused"} == expected_refused
    for record in report["files"]:
        if record["status"] == "refused":
            assert "uneven slice spacing" in record["reason"], record
    series = {s["label"]: s for s in report["series"]}
    assert {s["status"] for s in series.values()} == {"written", "refused"}
    for record in report["files"]:
        if record["status"] == "used":
            assert series[record["series"]]["status"] == "written"
    for result in series.values():
        for output in result["outputs"]:
            assert Path(output).is_file()
    assert sum(s["files"] for s in series.values()) == len(kept)
