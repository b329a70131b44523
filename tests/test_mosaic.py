"""Siemens mosaics (convkit.dicom.mosaic): untile on synthetic arrays, layout against dcm2niix.

The dcm_qa corpus holds three fMRI runs of two mosaics each: axial ascending,
coronal descending and sagittal interleaved. Each test builds the NIfTI
volume from the layout alone and compares it with dcm2niix's output in world
space; the slice positions are also checked against the scanner protocol
(ASCCONV sSliceArray) stored in the CSA series header.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import AFFINE_ATOL_MM

from convkit.dicom.mosaic import MosaicLayout, is_mosaic, mosaic_layout, untile
from convkit.errors import InputError, RefusedError
from convkit.geometry import LPS_TO_RAS, affine_lps, analyse_stack

#: folder -> (slices, tiles run against row_dir x col_dir)
DCM_QA = {"axasc36": (36, False), "cordesc35": (35, False), "sagint36": (36, True)}
#: Slice times must agree with dcm2niix's SliceTiming to this many seconds.
TIME_ATOL_S = 0.001


# --- untile on synthetic mosaics -------------------------------------------------------------

def synthetic_layout(n_slices: int, tile_rows: int, tile_cols: int) -> MosaicLayout:
    """A layout with only the tiling filled in meaningfully (geometry is irrelevant to untile)."""
    per_row = int(np.ceil(np.sqrt(n_slices)))
    positions = np.zeros((n_slices, 3))
    return MosaicLayout(n_slices, per_row, tile_rows, tile_cols, np.array([1.0, 0, 0]),
                        np.array([0, 1.0, 0]), (1.0, 1.0), np.array([0, 0, 1.0]), 1.0,
                        "SpacingBetweenSlices", positions, None)


def synthetic_mosaic(layout: MosaicLayout) -> np.ndarray:
    """Tile t, row r, column c holds t * 1000 + r * 100 + c; blank tiles hold -1."""
    per_row, rows, cols = layout.tiles_per_row, layout.tile_rows, layout.tile_cols
    mosaic = np.full((per_row * rows, per_row * cols), -1, dtype=np.int32)
    for tile in range(layout.n_slices):
        top, left = (tile // per_row) * rows, (tile % per_row) * cols
        r, c = np.mgrid[:rows, :cols]
        mosaic[top:top + rows, left:left + cols] = tile * 1000 + r * 100 + c
    return mosaic


@pytest.mark.parametrize("n_slices", [1, 4, 5, 9, 10])
def test_untile_tile_order_and_in_plane_orientation(n_slices: int) -> None:
    layout = synthetic_layout(n_slices, tile_rows=3, tile_cols=5)  # non-square: catches .T
    tiles = untile(synthetic_mosaic(layout), layout)
    assert tiles.shape == (n_slices, 3, 5)
    assert tiles.dtype == np.int32
    t, r, c = np.mgrid[:n_slices, :3, :5]
    assert np.array_equal(tiles, t * 1000 + r * 100 + c)


def test_untile_copies_only_the_tiles_and_leaves_the_input_alone() -> None:
    layout = synthetic_layout(5, tile_rows=2, tile_cols=2)
    mosaic = synthetic_mosaic(layout)
    before = mosaic.copy()
    tiles = untile(mosaic, layout)
    assert tiles.flags.c_contiguous and not np.shares_memory(tiles, mosaic)
    tiles[:] = 0
    assert np.array_equal(mosaic, before)


def test_untile_refuses_a_mismatched_array() -> None:
    layout = synthetic_layout(5, tile_rows=2, tile_cols=2)
    with pytest.raises(ValueError, match="shape"):
        untile(np.zeros((6, 5)), layout)


def test_layout_arrays_are_read_only() -> None:
    layout = synthetic_layout(4, 2, 2)
    with pytest.raises(ValueError):
        layout.positions[0, 0] = 1.0


def test_is_mosaic_needs_the_image_type_and_a_csa_header() -> None:
    plain = pydicom.Dataset()
    plain.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    assert not is_mosaic(plain)  # no CSA header
    plain.ImageType = ["ORIGINAL", "PRIMARY"]
    assert not is_mosaic(plain)
    assert not is_mosaic(pydicom.Dataset())


def test_a_damaged_csa_header_is_no_mosaic_and_has_no_layout() -> None:
    ds = pydicom.Dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01" + b"\xff" * 20)
    assert not is_mosaic(ds)
    with pytest.raises(InputError, match="CSA"):
        mosaic_layout(ds)


# --- the dcm_qa corpus against dcm2niix -------------------------------------------------------

@dataclass
class Acquisition:
    """One dcm_qa run: datasets in time order, their layouts and dcm2niix's output."""

    name: str
    datasets: list[pydicom.Dataset]
    layouts: list[MosaicLayout]
    reference: nib.Nifti1Image
    sidecar: dict

    @property
    def layout(self) -> MosaicLayout:
        return self.layouts[0]


@pytest.fixture(scope="module", params=sorted(DCM_QA))
def acquisition(request: pytest.FixtureRequest, corpus: Path) -> Acquisition:
    folder = corpus / "dicom" / "dcm_qa" / request.param
    datasets = [pydicom.dcmread(path) for path in sorted((folder / "series").iterdir())]
    datasets.sort(key=lambda ds: (float(ds.AcquisitionTime), int(ds.InstanceNumber)))
    return Acquisition(request.param, datasets, [mosaic_layout(ds) for ds in datasets],
                       nib.load(folder / "dcm2niix_ref.nii.gz"),
                       json.loads((folder / "dcm2niix_ref.json").read_text()))


def assemble(acquisition: Acquisition, order: np.ndarray, normal: np.ndarray) -> nib.Nifti1Image:
    """A 4D RAS NIfTI from the tiles taken in `order`, stacked along `normal` (LPS)."""
    layout = acquisition.layout
    volumes = [untile(ds.pixel_array, layout)[order].transpose(2, 1, 0)  # (k, j, i) -> (i, j, k)
               for ds in acquisition.datasets]
    orientation = np.concatenate([layout.row_dir, layout.col_dir])
    lps = affine_lps(orientation, layout.pixel_spacing, layout.positions[order[0]],
                     normal * layout.spacing)
    return nib.Nifti1Image(np.stack(volumes, axis=-1), LPS_TO_RAS @ lps)


def same_world(image: nib.Nifti1Image, reference: nib.Nifti1Image) -> bool:
    """Same shape, affine (to AFFINE_ATOL_MM) and voxel values once both are RAS+ canonical."""
    a, b = nib.as_closest_canonical(image), nib.as_closest_canonical(reference)
    return (a.shape == b.shape and np.allclose(a.affine, b.affine, rtol=0, atol=AFFINE_ATOL_MM)
            and np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)))


def test_headers_are_mosaics(acquisition: Acquisition) -> None:
    n_slices, _ = DCM_QA[acquisition.name]
    assert all(is_mosaic(ds) for ds in acquisition.datasets)
    layout = acquisition.layout
    assert (layout.n_slices, layout.tiles_per_row, layout.tile_rows, layout.tile_cols) == (
        n_slices, 6, 64, 64)
    assert layout.spacing_source == "SpacingBetweenSlices"
    for other in acquisition.layouts[1:]:
        np.testing.assert_allclose(other.positions, layout.positions, atol=1e-6)


def test_a_tile_count_that_does_not_fit_the_image_is_refused(acquisition: Acquisition) -> None:
    ds = copy.deepcopy(acquisition.datasets[0])  # Dataset.copy() shares the elements
    ds.Rows = ds.Rows - 1
    with pytest.raises(InputError, match="equal tiles"):
        mosaic_layout(ds)


def test_a_csa_normal_off_the_plane_normal_is_refused(
        acquisition: Acquisition, monkeypatch: pytest.MonkeyPatch) -> None:
    from convkit.dicom import mosaic, vendors

    layout = acquisition.layout
    tilted = layout.normal + 0.2 * layout.row_dir
    csa = vendors.siemens_csa_header(acquisition.datasets[0])  # the real header, one value off
    csa["SliceNormalVector"] = list(tilted / np.linalg.norm(tilted))
    monkeypatch.setattr(mosaic, "siemens_csa_header", lambda ds: csa)
    with pytest.raises(RefusedError, match="not perpendicular"):
        mosaic_layout(acquisition.datasets[0])


def test_stacking_direction_against_row_x_col(acquisition: Acquisition) -> None:
    """Sagittal tiles run against row x col; axial and coronal (here) along it."""
    _, reversed_ = DCM_QA[acquisition.name]
    assert acquisition.layout.reversed is reversed_
    expected = np.arange(acquisition.layout.n_slices)
    assert np.array_equal(acquisition.layout.ascending_order,
                          expected[::-1] if reversed_ else expected)


def test_convkit_order_matches_dcm2niix(acquisition: Acquisition) -> None:
    """k ascending along row x col from the lowest tile: convkit's own slice convention."""
    layout = acquisition.layout
    order = layout.ascending_order
    normal = np.cross(layout.row_dir, layout.col_dir)
    assert same_world(assemble(acquisition, order, normal), acquisition.reference)


def test_tile_order_along_the_csa_normal_matches_dcm2niix(acquisition: Acquisition) -> None:
    layout = acquisition.layout
    order = np.arange(layout.n_slices)
    assert same_world(assemble(acquisition, order, layout.normal), acquisition.reference)


def test_tile_order_along_row_x_col_mirrors_exactly_the_reversed_case(
        acquisition: Acquisition) -> None:
    """The trap (dicom2nifti 2.6 stacks tiles along row x col): wrong iff the layout is reversed."""
    layout = acquisition.layout
    order = np.arange(layout.n_slices)
    naive = assemble(acquisition, order, np.cross(layout.row_dir, layout.col_dir))
    assert same_world(naive, acquisition.reference) is not layout.reversed


def test_positions_form_a_regular_convkit_stack(acquisition: Acquisition) -> None:
    layout = acquisition.layout
    orientation = np.concatenate([layout.row_dir, layout.col_dir])
    stack = analyse_stack(layout.positions[layout.ascending_order], orientation,
                          layout.pixel_spacing)
    assert stack.regular and not stack.sheared
    assert stack.spacing == pytest.approx(3.6, abs=1e-6)


def test_tile_centres_match_the_protocol_slice_positions(acquisition: Acquisition) -> None:
    """Independent of dcm2niix: the protocol's slice centres are SpacingBetweenSlices apart.

    The centre of a tile is half a tile (not half a tile minus one voxel) from
    its first voxel, as Siemens centres the field of view.
    """
    layout = acquisition.layout
    centres = (layout.positions + layout.row_dir * layout.pixel_spacing[1] * layout.tile_cols / 2
               + layout.col_dir * layout.pixel_spacing[0] * layout.tile_rows / 2)
    np.testing.assert_allclose(centres, protocol_slice_centres(acquisition.datasets[0]), atol=1e-3)
    thickness = float(acquisition.datasets[0].SliceThickness)
    assert thickness == 3.0 and layout.spacing == pytest.approx(3.6, abs=1e-6)


def test_slice_times_match_dcm2niix_by_position(acquisition: Acquisition) -> None:
    """dcm2niix lists SliceTiming in its own k order: match its slices to the tiles by position."""
    layout = acquisition.layout
    normal = np.cross(layout.row_dir, layout.col_dir)
    reference_lps = LPS_TO_RAS @ acquisition.reference.affine
    n_ref = acquisition.reference.shape[2]
    origins = (reference_lps @ np.c_[np.zeros((n_ref, 2)), np.arange(n_ref), np.ones(n_ref)].T)
    reference_distance = origins[:3].T @ normal
    tile_distance = layout.positions @ normal
    match = np.abs(tile_distance[:, None] - reference_distance[None, :])
    assert np.all(match.min(axis=1) < AFFINE_ATOL_MM)
    reference_times = np.asarray(acquisition.sidecar["SliceTiming"])[match.argmin(axis=1)]
    np.testing.assert_allclose(layout.slice_times_s, reference_times, atol=TIME_ATOL_S, rtol=0)


def protocol_slice_centres(ds: pydicom.Dataset) -> np.ndarray:
    """LPS slice centres sSliceArray.asSlice[*].sPosition from the CSA series header's ASCCONV.

    Siemens' patient coordinate system (dSag, dCor, dTra) equals DICOM LPS for
    these head-first-supine scans; absent components are 0.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import ascconv, csareader
    protocol = csareader.get_scalar(csareader.get_csa_header(ds, "series"), "MrPhoenixProtocol")
    start = protocol.index("### ASCCONV BEGIN")
    end = protocol.index("### ASCCONV END ###") + len("### ASCCONV END ###")
    parsed, _ = ascconv.parse_ascconv(protocol[start:end], '""')
    return np.array([[tile["sPosition"].get(axis, 0.0) for axis in ("dSag", "dCor", "dTra")]
                     for tile in parsed["sSliceArray"]["asSlice"]])
