"""The NIfTI-1 header convkit encodes itself (formats.nifti.header_block) is, byte for byte,
the one nibabel's Nifti1Header builds from the same calls: random affines (oblique,
flipped, sheared, tiny and huge voxels), every voxel type, 3D and 4D grids, scaling."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convkit.errors import RefusedError
from convkit.formats.nifti import describe, header_block, nifti_header, write_nifti
from convkit.volume import RGB_DTYPE, Volume

DTYPES = ["u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8", "c8", "c16",
          ">i2", ">f4", RGB_DTYPE]


def nibabel_block(volume: Volume) -> bytes:
    """The oracle: nibabel's header for the same fields (what convkit wrote before)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(volume.array.dtype)
    header.set_data_shape(volume.shape)
    header.set_qform(volume.affine, code=1)
    header.set_sform(volume.affine, code=1)
    zooms = list(volume.spacing) + [volume.repetition_time_s or 1.0] * (len(volume.shape) - 3)
    header.set_zooms(zooms)
    header.set_xyzt_units("mm", "sec")
    if not volume.is_rgb:
        header.set_slope_inter(volume.slope, volume.intercept)
    header["descrip"] = describe(volume).encode()[:79]
    header["vox_offset"] = 352
    return header.binaryblock


def random_affine(rng: np.random.Generator, shear: float = 0.0) -> np.ndarray:
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if rng.random() < 0.5:
        rotation[:, rng.integers(3)] *= -1  # left-handed frames too
    zooms = np.exp(rng.uniform(np.log(0.05), np.log(8.0), size=3))
    columns = rotation * zooms
    columns[:, 2] += shear * columns[:, 0]
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = columns, rng.uniform(-400, 400, size=3)
    return affine


def volume_of(affine: np.ndarray, dtype, shape=(3, 4, 5), **fields) -> Volume:
    volume = Volume(np.zeros(shape, dtype=dtype, order="F"), affine, **fields)
    volume.metadata = {"Modality": "MR", "EchoTime": 0.03, "RepetitionTime": 2.0}
    return volume


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_voxel_type_matches_nibabel(dtype):
    rng = np.random.default_rng(7)
    volume = volume_of(random_affine(rng), dtype)
    assert header_block(volume) == nibabel_block(volume)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shear=st.sampled_from([0.0, 0.0, 1e-7, 0.05, 0.4]),
       shape=st.sampled_from([(7, 1, 1), (4, 3, 2), (2, 3, 4, 5), (1, 1, 1, 9)]),
       slope=st.sampled_from([1.0, 0.5, -2.25, 1e-3]),
       intercept=st.sampled_from([0.0, -1024.0, 3.5]))
def test_random_geometry_matches_nibabel(seed, shear, shape, slope, intercept):
    rng = np.random.default_rng(seed)
    volume = volume_of(random_affine(rng, shear), "i2", shape, slope=slope, intercept=intercept)
    volume.repetition_time_s = 0.8 if len(shape) > 3 else None
    assert header_block(volume) == nibabel_block(volume)


def test_axis_aligned_and_flipped_frames_match_nibabel():
    """The frames converters write most: LPS flips of the identity, and 90-degree turns
    (the eigenvalue ties of the quaternion's matrix are where methods differ)."""
    for signs in np.ndindex(2, 2, 2):
        for permutation in ([0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1]):
            affine = np.eye(4)
            affine[:3, :3] = np.eye(3)[:, permutation] * np.where(np.array(signs), -1, 1) * 0.7
            volume = volume_of(affine, "i2")
            assert header_block(volume) == nibabel_block(volume), (signs, permutation)


def test_to_nibabel_reads_the_same_header():
    volume = volume_of(random_affine(np.random.default_rng(3)), "i2", slope=2.0, intercept=-5)
    header = nifti_header(volume)
    assert header.binaryblock == header_block(volume)
    assert np.allclose(header.get_sform(), volume.affine, atol=1e-4)
    assert header.get_slope_inter() == (2.0, -5.0)


def test_written_file_reads_back_in_nibabel(tmp_path):
    rng = np.random.default_rng(11)
    data = rng.integers(-1000, 3000, size=(5, 6, 7), dtype=np.int16)
    volume = Volume(np.asfortranarray(data), random_affine(rng), slope=0.5, intercept=-1.0)
    for name in ("v.nii", "v.nii.gz"):
        write_nifti(volume, tmp_path / name)
        image = nib.load(tmp_path / name)
        assert np.array_equal(np.asanyarray(image.dataobj.get_unscaled()), data)
        assert (image.dataobj.slope, image.dataobj.inter) == (0.5, -1.0)
        assert np.allclose(image.get_qform(), volume.affine, atol=1e-4)
        assert image.header["qform_code"] == image.header["sform_code"] == 1


@pytest.mark.parametrize("case, code", [
    ({"dtype": np.bool_}, "volume.bad-dtype"),
    ({"dtype": np.float16}, "volume.bad-dtype"),
    ({"shape": (40000, 1, 1)}, "volume.too-large"),
    ({"slope": 0.0}, "volume.bad-scaling"),
])
def test_what_nifti1_cannot_hold_is_refused(case, code):
    """nibabel raised HeaderDataError for each of these, which convkit did not expect."""
    dtype, shape = case.get("dtype", np.int16), case.get("shape", (2, 2, 2))
    volume = Volume(np.zeros(shape, dtype=dtype, order="F"), np.eye(4),
                    slope=case.get("slope", 1.0))
    with pytest.raises(RefusedError) as raised:
        header_block(volume)
    assert raised.value.code == code
