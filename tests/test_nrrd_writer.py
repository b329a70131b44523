"""convkit's NRRD writer against pynrrd: the files it writes read back in pynrrd (the
independent reader) with pynrrd's own writer's header fields and the same voxels, for every
kind of volume; real values computed a slab at a time are those of the whole volume at once."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest

from convkit.formats import nrrd as nrrd_writer
from convkit.formats.nrrd import compact_real_values, nrrd_data, nrrd_header, write_nrrd
from convkit.volume import RGB_DTYPE, Volume


def whole_volume_reference(volume: Volume) -> np.ndarray:
    """compact_real_values as it was, on the whole float64 volume at once."""
    if volume.is_rgb or not volume.scaled:
        return volume.array
    real = volume.real_array(np.float64)
    if real.size and np.array_equal(real, np.rint(real)):
        for dtype in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64"):
            info = np.iinfo(dtype)
            if info.min <= real.min() and real.max() <= info.max:
                return real.astype(dtype, order="F")
    single = real.astype(np.float32, order="F")
    return single if np.array_equal(single, real) else real


def volume(kind: str) -> Volume:
    rng = np.random.default_rng(3)
    affine = np.diag([-0.7, -0.7, 1.25, 1.0])
    affine[:3, 3] = [120.5, 98.25, -40.0]
    shape = (9, 8, 7)
    if kind == "rgb":
        array = np.zeros(shape, dtype=RGB_DTYPE, order="F")
        for channel in "RGB":
            array[channel] = rng.integers(0, 256, shape)
        return Volume(array, affine)
    stored = rng.integers(-1024, 3000, shape + ((4,) if kind == "4d" else ()), dtype=np.int16)
    scaling = {"ct": (1.0, -1024.0), "plain": (1.0, 0.0), "4d": (2.0, 0.0),
               "fraction": (0.37, 1.5), "single": (0.5, 0.25),
               "wide": (3.0e5, 0.0)}[kind]
    result = Volume(np.asfortranarray(stored), affine, *scaling)
    result.metadata = {"Modality": "CT"}
    return result


KINDS = ["ct", "plain", "4d", "fraction", "single", "wide", "rgb"]


@pytest.mark.parametrize("kind", KINDS)
def test_slabs_give_the_whole_volumes_values(kind, monkeypatch):
    monkeypatch.setattr(nrrd_writer, "SLAB_VOXELS", 100)  # many slabs on a small volume
    image = volume(kind)
    ours, reference = compact_real_values(image), whole_volume_reference(image)
    assert ours.dtype == reference.dtype and np.array_equal(ours, reference)
    assert ours.flags.f_contiguous


@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr"])
@pytest.mark.parametrize("kind", KINDS)
def test_files_read_in_pynrrd_as_pynrrd_writes_them(tmp_path, kind, suffix):
    image = volume(kind)
    data = nrrd_data(image)
    write_nrrd(image, tmp_path / f"ours{suffix}")
    nrrd.write(str(tmp_path / f"theirs{suffix}"), data, nrrd_header(image, data),
               index_order="F")
    ours, ours_header = nrrd.read(str(tmp_path / f"ours{suffix}"), index_order="F")
    theirs, theirs_header = nrrd.read(str(tmp_path / f"theirs{suffix}"), index_order="F")
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    for header in (ours_header, theirs_header):
        header.pop("data file", None)  # the names differ: ours.raw.gz, theirs.raw.gz
    assert ours_header.keys() == theirs_header.keys()
    for name, value in theirs_header.items():
        assert np.array_equal(np.asarray(ours_header[name]), np.asarray(value),
                              equal_nan=np.asarray(value).dtype.kind == "f"), name
    if suffix == ".nhdr":
        assert (tmp_path / "ours.raw.gz").is_file()


def test_the_same_volume_gives_the_same_file(tmp_path):
    """No timestamp in the header (pynrrd writes one): a rerun can tell an unchanged
    output by its bytes."""
    image = volume("ct")
    write_nrrd(image, tmp_path / "a.nrrd")
    write_nrrd(image, tmp_path / "b.nrrd")
    assert (tmp_path / "a.nrrd").read_bytes() == (tmp_path / "b.nrrd").read_bytes()
