"""NIfTI headers read without nibabel (nifti_read.plain_nifti1) give what nibabel gives: a
header is taken only when nibabel's checks would neither fix nor report anything, and then
every field and method read_nifti uses (voxel type, sform, qform in long double, codes,
units, intent) is nibabel's, on random headers, near-unit quaternions included."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nibabel.nifti1 import unit_codes

from convkit.formats.nifti_read import (
    UNIT_NAMES,
    _nibabel_header,
    choose_affine,
    nifti_fields,
    plain_nifti1,
    read_nifti,
)

DATATYPES = [2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1792, 2304]


def nibabel_view(block: bytes, tmp_path):
    """(header, notes) as read_nifti read every header before (nibabel, check_fix)."""
    path = tmp_path / "h.nii"
    path.write_bytes(block)
    header, _, notes = _nibabel_header(path, False, block)
    return header, notes


def outcome(function):
    try:
        return function()
    except Exception as exc:  # the same failure is part of the same answer
        return f"{type(exc).__name__}: {exc}"


def same(a, b) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b, equal_nan=True)
    return a == b


FIELDS = ["dim", "pixdim", "scl_slope", "scl_inter", "qform_code", "sform_code",
          "xyzt_units", "intent_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
          "srow_x", "srow_z"]


def check_equal(block: bytes, tmp_path) -> bool:
    """Whether plain_nifti1 took the header; when it did, that it is nibabel's."""
    plain = plain_nifti1(block)
    if plain is None:
        return False
    reference, notes = nibabel_view(block, tmp_path)
    assert notes == []  # nibabel would have reported or fixed nothing
    assert plain.get_data_dtype() == reference.get_data_dtype()
    for name in FIELDS:
        assert np.array_equal(plain[name], reference[name], equal_nan=True), name
    for method in ("get_qform", "get_sform"):
        for coded in (False, True):
            ours = outcome(lambda m=method, c=coded: getattr(plain, m)(coded=c))
            theirs = outcome(lambda m=method, c=coded: getattr(reference, m)(coded=c))
            assert same(ours, theirs), (method, coded, ours, theirs)
    assert same(outcome(lambda: choose_affine(plain)), outcome(lambda: choose_affine(reference)))
    assert nifti_fields(plain) == nifti_fields(reference)
    assert plain.get_intent() == reference.get_intent()
    return True


def header_block(rng: np.random.Generator, **fields) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_dtype(int(rng.choice(DATATYPES)))
    header["dim"] = [3, *rng.integers(1, 9, size=3), 1, 1, 1, 1]
    header["pixdim"] = [1, *rng.uniform(0.2, 3.0, size=3), 2.5, 1, 1, 1]
    header["vox_offset"] = 352
    quaternion = rng.normal(size=4)
    quaternion /= np.linalg.norm(quaternion)
    header["quatern_b"], header["quatern_c"], header["quatern_d"] = quaternion[1:]
    header["qoffset_x"], header["qoffset_y"], header["qoffset_z"] = rng.uniform(-200, 200, 3)
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row] = rng.uniform(-3, 3, size=4)
    header["qform_code"], header["sform_code"] = 1, 1
    header["xyzt_units"] = 10
    header["scl_slope"], header["scl_inter"] = rng.choice([np.nan, 0.0, 1.0, 2.5]), -1024
    for name, value in fields.items():
        header[name] = value
    return header.binaryblock + b"\x00" * 4


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       qfac=st.sampled_from([1.0, -1.0, 0.0, 2.0]),
       codes=st.sampled_from([(1, 1), (1, 0), (0, 1), (0, 0), (2, 4), (6, 1), (1, 9)]),
       quaternion=st.sampled_from(["unit", "near-unit", "long", "zero", "float32-rounded"]),
       odd=st.sampled_from(["", "negative pixdim", "zero pixdim", "bitpix", "offset",
                            "intent", "magic", "extension", "datatype", "units"]))
def test_random_headers_read_as_nibabel_reads_them(tmp_path_factory, seed, qfac, codes,
                                                   quaternion, odd):
    rng = np.random.default_rng(seed)
    fields: dict = {"qform_code": codes[0], "sform_code": codes[1]}
    if quaternion == "near-unit":  # b^2 + c^2 + d^2 a float32 rounding away from 1
        fields.update(quatern_b=0.6, quatern_c=0.8, quatern_d=np.float32(1e-4))
    elif quaternion == "long":
        fields.update(quatern_b=0.9, quatern_c=0.9, quatern_d=0.1)
    elif quaternion == "zero":
        fields.update(quatern_b=0.0, quatern_c=0.0, quatern_d=0.0)
    elif quaternion == "float32-rounded":
        fields.update(quatern_b=1.0, quatern_c=np.float32(1e-4), quatern_d=0.0)
    block = bytearray(header_block(rng, **fields))
    reference = nib.Nifti1Header(bytes(block[:348]), check=False)
    reference["pixdim"][0] = qfac
    changes = {"negative pixdim": ("pixdim", [1, -1, 1, 1, 1, 1, 1, 1]),
               "zero pixdim": ("pixdim", [1, 1, 0, 1, 1, 1, 1, 1]),
               "bitpix": ("bitpix", 7), "offset": ("vox_offset", 368),
               "intent": ("intent_code", 2), "magic": ("magic", b"ni1"),
               "datatype": ("datatype", 1536), "units": ("xyzt_units", 255)}
    if odd in changes:
        name, value = changes[odd]
        reference[name] = value
    block[:348] = reference.binaryblock
    if odd == "extension":
        block[348] = 1
    folder = tmp_path_factory.mktemp("h")
    taken = check_equal(bytes(block), folder)
    if odd in ("negative pixdim", "zero pixdim", "bitpix", "offset", "intent", "magic",
               "extension", "datatype") or qfac not in (1, -1) or max(codes) == 0 \
            or max(codes) > 5:
        assert not taken  # nibabel reports or fixes these (or reads extensions): its reading
    else:
        assert taken  # and the usual headers are read without it


def test_convkits_own_files_are_read_without_nibabel(tmp_path):
    """What dicom2nii writes takes the plain path, and reads back as nibabel reads it."""
    from convkit.formats.nifti import write_nifti
    from convkit.volume import Volume

    rng = np.random.default_rng(4)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = rotation * [0.7, 0.7, 1.5], [10, -20, 30]
    data = rng.integers(-1024, 3000, size=(6, 7, 8), dtype=np.int16)
    for name in ("ct.nii", "ct.nii.gz"):
        write_nifti(Volume(np.asfortranarray(data), affine, 1.0, -1024.0), tmp_path / name)
        block = (tmp_path / "ct.nii").read_bytes()[:540]
        assert check_equal(block, tmp_path)
        volume = read_nifti(tmp_path / name)
        image = nib.load(tmp_path / name)
        assert np.array_equal(volume.array, np.asanyarray(image.dataobj.get_unscaled()))
        assert np.array_equal(volume.affine, image.header.get_best_affine())
        assert (volume.slope, volume.intercept) == (1.0, -1024.0)


def test_unit_names_are_nibabels():
    assert UNIT_NAMES == {code: unit_codes.label[code] for code in unit_codes.value_set("code")}


@pytest.mark.parametrize("code", DATATYPES)
def test_every_voxel_type_is_nibabels(tmp_path, code):
    header = nib.Nifti1Header()
    header.set_data_dtype(code)
    header["vox_offset"], header["sform_code"] = 352, 1
    assert check_equal(header.binaryblock + b"\x00" * 4, tmp_path)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from([(3, 4, 5), (6, 2, 7, 2)]))
def test_orientation_is_nibabels(seed, shape):
    """geometry's io_orientation, reoriented and reorientation_affine (the preview's
    canonical view, without nibabel) give nibabel's answers on orthogonal grids."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff
    from nibabel.orientations import io_orientation as nibabel_orientation

    from convkit.geometry import io_orientation, reorientation_affine, reoriented

    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if rng.random() < 0.5:  # axis-aligned frames, flipped and permuted: the usual ones
        rotation = np.eye(3)[:, rng.permutation(3)] * rng.choice([-1, 1], size=3)
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = rotation * rng.uniform(0.3, 4, 3), rng.uniform(-90, 90, 3)
    array = rng.normal(size=shape)
    ours = io_orientation(affine)
    assert np.array_equal(ours, nibabel_orientation(affine))
    assert np.array_equal(reoriented(array, ours), apply_orientation(array, ours))
    assert np.array_equal(affine @ reorientation_affine(ours, shape),
                          affine @ inv_ornt_aff(ours, shape))
