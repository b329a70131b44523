"""Issue 17: never stack different images into one 4D volume, and explain every split.

Each class of series is synthetic with known voxels: one-echo-per-file enhanced exports
(Siemens XA), GE B0 maps (field map + magnitude), GE reverse-polarity EPI, enhanced frames
of several components, Philips enhanced field maps, and repeats that only InstanceNumber
tells apart. dcm2niix is the oracle where it handles the case (same outputs, same voxels in
world space, same echo times / units / phase-encoding directions); the expectations are
hand-computed where it does not (it does not split synthetic enhanced frames without
DimensionIndexValues, and reads GE pepolar volume parity from elsewhere).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers import assert_same_world, canonical, run_dcm2niix

from convkit.audit import audit_path
from convkit.testing.synthetic import regular_positions, write_enhanced, write_series

AXIAL = np.array([1.0, 0, 0, 0, 1, 0])
N = 4  # slices


def outputs(out: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """name (without .nii.gz) -> (voxels as stored, i j k [t], sidecar)."""
    found = {}
    for path in sorted(out.glob("*.nii.gz")):
        stem = path.name.removesuffix(".nii.gz")
        found[stem] = (np.asarray(nib.load(path).dataobj),
                       json.loads(path.with_name(stem + ".json").read_text()))
    return found


def run(cli, source: Path, out: Path, *extra: str, code: int = 0):
    done = cli("dicom2nii", source, out, *extra)
    assert done.returncode == code, done.stdout + done.stderr
    return done


def add_private(paths: list[Path], elements: dict[tuple[int, str], dict[int, tuple[str, object]]]
                ) -> None:
    """Put vendor private elements (group, creator) -> {offset: (VR, value)} in every file."""
    for path in paths:
        ds = pydicom.dcmread(path)
        for (group, creator), items in elements.items():
            block = ds.private_block(group, creator, create=True)
            for offset, (vr, value) in items.items():
                block.add_new(offset, vr, value)
        ds.save_as(path)


# --------------------------------------------------------------------------- Siemens XA echoes


def write_xa_echoes(folder: Path, echo_times=(4.92, 7.38), seed=3) -> list[np.ndarray]:
    """One enhanced file per echo, EffectiveEchoTime set, no EchoNumbers (Siemens XA)."""
    rng = np.random.default_rng(seed)
    positions = regular_positions(N, AXIAL, (-10.0, 5.0, 20.0), 3.0)
    stored = []
    for index, echo_time in enumerate(echo_times):
        data = rng.integers(0, 900, (N, 6, 5)).astype(np.uint16)
        write_enhanced(folder / f"echo{index}.dcm", data, positions, np.tile(AXIAL, (N, 1)),
                       echo_times=[echo_time] * N, instance=index + 1, manufacturer="SIEMENS")
        stored.append(data)
    return stored


def test_one_echo_per_enhanced_file_is_numbered_across_the_series(cli, tmp_path, dcm2niix):
    """Both files were 'echo 1' and became one 4D with the first EchoTime; now each echo is an
    output with its own EchoTime, numbered by echo time whatever the file order."""
    stored = write_xa_echoes(tmp_path / "in", echo_times=(7.38, 4.92))  # later echo first
    run(cli, tmp_path / "in", tmp_path / "out")
    found = outputs(tmp_path / "out")
    assert sorted(found) == ["1_enhanced", "1_enhanced_e2"]
    first, second = found["1_enhanced"], found["1_enhanced_e2"]
    assert first[1]["EchoTime"] == pytest.approx(0.00492)
    assert second[1]["EchoTime"] == pytest.approx(0.00738)
    np.testing.assert_array_equal(first[0], stored[1].transpose(2, 1, 0))  # 4.92 ms file
    np.testing.assert_array_equal(second[0], stored[0].transpose(2, 1, 0))
    assert first[1]["ConvkitSplit"]["attributes"] == [
        {"attribute": "EchoTime", "value": "4.92 ms", "values": ["4.92 ms", "7.38 ms"]}]
    references = run_dcm2niix(dcm2niix, tmp_path / "in", tmp_path / "ref")
    assert len(references) == 2
    for reference in references:
        echo = json.loads(reference.with_suffix(".json").read_text())["EchoTime"]
        mine = "1_enhanced" if echo == pytest.approx(0.00492) else "1_enhanced_e2"
        assert found[mine][1]["EchoTime"] == pytest.approx(echo)
        assert_same_world(tmp_path / "out" / f"{mine}.nii.gz", reference)


# --------------------------------------------------------------------------- GE B0 map


def write_ge_b0map(folder: Path, locations: int | None = N, seed=5) -> np.ndarray:
    """A GE B0 map: InstanceNumber 1..N the signed field map (Hz), N+1..2N the magnitude, one
    ImageType, EchoTime and GE image type for all; pulse sequence 'b0map'."""
    positions = regular_positions(N, AXIAL, (0.0, 0.0, 0.0), 3.0)
    stored = np.random.default_rng(seed).integers(-200, 200, (2 * N, 6, 5)).astype(np.int16)
    stored[N:] = np.abs(stored[N:])
    order = [5, 1, 7, 3, 0, 6, 2, 4]  # files written in no particular order
    paths = write_series(folder, stored[order], np.vstack([positions, positions])[order],
                         modality="MR", extra={"Manufacturer": "GE MEDICAL SYSTEMS",
                                               "EchoTime": "2.1", "EchoNumbers": "1",
                                               "ImagesInAcquisition": 2 * N},
                         per_slice=[{"InstanceNumber": i + 1} for i in order])
    private = {(0x0019, "GEMS_ACQU_01"): {0x9C: ("LO", "b0map"), 0x9E: ("LO", "B0map")},
               (0x0043, "GEMS_PARM_01"): {0x2F: ("SS", 0)}}
    if locations is not None:
        private[(0x0021, "GEMS_RELA_01")] = {0x4F: ("SS", locations)}
    add_private(paths, private)
    return stored


def test_ge_b0_map_is_a_field_map_in_hz_and_a_magnitude(cli, tmp_path, dcm2niix):
    stored = write_ge_b0map(tmp_path / "in")
    done = run(cli, tmp_path / "in", tmp_path / "out")
    found = outputs(tmp_path / "out")
    assert sorted(found) == ["1_synthetic", "1_synthetic_fieldmaphz"]
    field, magnitude = found["1_synthetic_fieldmaphz"], found["1_synthetic"]
    np.testing.assert_array_equal(field[0], stored[:N].transpose(2, 1, 0))
    np.testing.assert_array_equal(magnitude[0], stored[N:].transpose(2, 1, 0))
    assert field[1]["Units"] == "Hz" and "Units" not in magnitude[1]
    assert "field map (Hz): InstanceNumber 1-4" in field[1]["ConvkitSplit"]["reason"]
    assert "split: GE B0 map half" in done.stdout
    references = run_dcm2niix(dcm2niix, tmp_path / "in", tmp_path / "ref")
    assert sorted(p.name for p in references) == ["1_synthetic.nii", "1_synthetic_fieldmaphz.nii"]
    for reference in references:
        stem = reference.name.removesuffix(".nii")
        assert_same_world(tmp_path / "out" / f"{stem}.nii.gz", reference)
        expected = json.loads(reference.with_suffix(".json").read_text())
        assert found[stem][1].get("Units") == expected.get("Units")
        assert found[stem][1]["EchoTime"] == pytest.approx(expected["EchoTime"])


def test_ge_b0_map_without_locations_in_acquisition_is_refused(cli, tmp_path):
    """Without (0021,104F) the halves cannot be told apart: never one 4D of both."""
    write_ge_b0map(tmp_path / "in", locations=None)
    done = run(cli, tmp_path / "in", tmp_path / "out", code=4)
    assert "told apart only by InstanceNumber" in done.stderr and "b0map" in done.stderr
    assert not list((tmp_path / "out").glob("*.nii.gz"))


# --------------------------------------------------------------------------- GE pepolar


def write_ge_pepolar(folder: Path, user_data12: str, volumes=4, times=True, seed=9):
    """GE epi_pepolar, RectilinearPhaseEncodeReordering REVERSE_LINEAR (forward = 'j'),
    volume v at AcquisitionTime 10 v s (+ 0.5 s per slice) when times."""
    positions = regular_positions(N, AXIAL, (0.0, 0.0, 0.0), 3.0)
    stored = np.random.default_rng(seed).integers(0, 300, (volumes * N, 6, 5)).astype(np.int16)
    seconds = [36000.0 + 10.0 * (i // N) + 0.5 * (i % N) for i in range(volumes * N)]
    paths = write_series(folder, stored, np.vstack([positions] * volumes), modality="MR",
                         times=seconds if times else None,
                         extra={"Manufacturer": "GE MEDICAL SYSTEMS", "EchoTime": "30",
                                "EchoNumbers": "1", "InPlanePhaseEncodingDirection": "COL",
                                "RectilinearPhaseEncodeReordering": "REVERSE_LINEAR"},
                         per_slice=[{"InstanceNumber": i + 1} for i in range(volumes * N)])
    add_private(paths, {(0x0019, "GEMS_ACQU_01"): {0x9C: ("LO", "epi_pepolar"),
                                                   0xB3: ("DS", user_data12)}})
    return stored.reshape(volumes, N, 6, 5)


@pytest.mark.parametrize(("user_data12", "reversed_volumes"), [("2", [0, 2]), ("3", [1, 3])])
def test_ge_pepolar_volumes_are_split_by_polarity(cli, tmp_path, user_data12, reversed_volumes):
    """User data 12 = 2: the 1st, 3rd ... volumes are reversed; 3: the 2nd, 4th ... (dcm2niix's
    rule, counted from 1 in acquisition order). Each polarity is an output of its own with its
    PhaseEncodingDirection; REVERSE_LINEAR is GE's unflipped polarity: 'j' in convkit's voxel
    axes (the world direction dcm2niix gives, see the next test), its opposite reversed."""
    volumes = write_ge_pepolar(tmp_path / "in", user_data12)
    run(cli, tmp_path / "in", tmp_path / "out")
    found = outputs(tmp_path / "out")
    assert sorted(found) == ["1_synthetic", "1_synthetic_revpe"]
    forward_volumes = [v for v in range(4) if v not in reversed_volumes]
    for name, expected, direction, rows in (("1_synthetic", forward_volumes, "j", 1),
                                            ("1_synthetic_revpe", reversed_volumes, "j-", -1)):
        data, sidecar = found[name]
        assert data.shape == (5, 6, N, 2)
        for t, volume in enumerate(expected):  # reversed volumes are stored mirrored
            np.testing.assert_array_equal(data[..., t],
                                          volumes[volume].transpose(2, 1, 0)[:, ::rows])
        assert sidecar["PhaseEncodingDirection"] == direction
        assert sidecar["ConvkitSplit"]["attributes"][0]["attribute"] == "PhaseEncodingPolarity"


def test_ge_pepolar_with_row_phase_encoding_is_refused(cli, tmp_path):
    """dcm2niix mirrors reversed volumes along the columns whatever the phase-encoding
    direction: established for COL only, so ROW is refused, not written mirrored."""
    write_ge_pepolar(tmp_path / "in", "1")
    for path in (tmp_path / "in").iterdir():
        ds = pydicom.dcmread(path)
        ds.InPlanePhaseEncodingDirection = "ROW"
        ds.save_as(path)
    done = run(cli, tmp_path / "in", tmp_path / "out", code=4)
    assert "established for column phase encoding" in done.stderr and "not ROW" in done.stderr
    assert not list((tmp_path / "out").glob("*"))
    report = audit_path(tmp_path / "in")  # the audit says what dicom2nii does
    assert "established for column phase encoding" in report.to_json()["series"][0]["reason"]


def test_ge_pepolar_without_volume_order_or_rule_is_refused(cli, tmp_path):
    write_ge_pepolar(tmp_path / "untimed", "2", times=False)
    done = run(cli, tmp_path / "untimed", tmp_path / "out", code=4)
    assert "no time attribute orders the volumes" in done.stderr
    write_ge_pepolar(tmp_path / "unknown", "7")
    done = run(cli, tmp_path / "unknown", tmp_path / "out2", code=4)
    assert "not established" in done.stderr
    assert not list(tmp_path.glob("out*/*.nii.gz"))


def test_ge_pepolar_reversed_throughout_is_one_output_with_the_flipped_direction(
        cli, tmp_path, dcm2niix):
    """User data 12 = 1: every volume reversed: one output (as dcm2niix), its direction the
    opposite of the unflipped polarity's, the same world direction as dcm2niix's."""
    volumes = write_ge_pepolar(tmp_path / "in", "1")
    run(cli, tmp_path / "in", tmp_path / "out")
    ((data, sidecar),) = outputs(tmp_path / "out").values()
    np.testing.assert_array_equal(data, volumes.transpose(3, 2, 1, 0)[:, ::-1])  # un-mirrored
    assert sidecar["PhaseEncodingDirection"] == "j-"
    assert sidecar["PhaseEncodingPolarityReversed"] is True and "ConvkitSplit" not in sidecar
    (reference,) = run_dcm2niix(dcm2niix, tmp_path / "in", tmp_path / "ref")
    assert_same_world(next((tmp_path / "out").glob("*.nii.gz")), reference)
    expected = json.loads(reference.with_suffix(".json").read_text())
    ours = nib.load(next((tmp_path / "out").glob("*.nii.gz"))).affine
    np.testing.assert_allclose(
        phase_direction_world(sidecar["PhaseEncodingDirection"], ours),
        phase_direction_world(expected["PhaseEncodingDirection"], nib.load(reference).affine),
        atol=1e-6)


def test_ge_phase_encoding_direction_follows_dcm2niix(cli, tmp_path, dcm2niix):
    """Forward GE EPI: PhaseEncodingDirection from RectilinearPhaseEncodeReordering agrees
    with dcm2niix's (the same rule decides the reversed outputs' sign above)."""
    write_ge_pepolar(tmp_path / "in", "0")  # not a pepolar rule: user data 12 unused ...
    for path in (tmp_path / "in").iterdir():  # ... so make it a plain EPI
        ds = pydicom.dcmread(path)
        ds.private_block(0x0019, "GEMS_ACQU_01")[0x9C].value = "epi"
        ds.save_as(path)
    run(cli, tmp_path / "in", tmp_path / "out")
    ((_, sidecar),) = outputs(tmp_path / "out").values()
    assert sidecar["PhaseEncodingDirection"] == "j"
    (reference,) = run_dcm2niix(dcm2niix, tmp_path / "in", tmp_path / "ref")
    expected = json.loads(reference.with_suffix(".json").read_text())
    ours = nib.load(next((tmp_path / "out").glob("*.nii.gz"))).affine
    np.testing.assert_allclose(  # each converter names its own voxel axes: compare in world
        phase_direction_world(sidecar["PhaseEncodingDirection"], ours),
        phase_direction_world(expected["PhaseEncodingDirection"], nib.load(reference).affine),
        atol=1e-6)


def phase_direction_world(code: str, affine: np.ndarray) -> np.ndarray:
    """Unit RAS vector of a BIDS PhaseEncodingDirection ('i', 'j-', ...) for a NIfTI affine."""
    column = affine[:3, "ijk".index(code[0])]
    return (-1 if code.endswith("-") else 1) * column / np.linalg.norm(column)


# --------------------------------------------------------------------------- enhanced frames


def test_enhanced_frames_split_by_complex_component_before_echo_time(cli, tmp_path):
    """Magnitude and phase frames of one file, same echo time: two outputs named by the
    component (ComplexImageComponent / FrameType value 4), not one 4D."""
    positions = regular_positions(N, AXIAL, (0.0, 0.0, 0.0), 2.0)
    data = np.random.default_rng(4).integers(0, 900, (2 * N, 6, 5)).astype(np.uint16)
    write_enhanced(tmp_path / "in" / "mf.dcm", data, np.vstack([positions, positions]),
                   np.tile(AXIAL, (2 * N, 1)), echo_times=[5.0] * (2 * N),
                   complex_components=["PHASE"] * N + ["MAGNITUDE"] * N,
                   frame_types=[["ORIGINAL", "PRIMARY", "P_FFE", "PHASE"]] * N
                   + [["ORIGINAL", "PRIMARY", "M_FFE", "MAGNITUDE"]] * N)
    run(cli, tmp_path / "in", tmp_path / "out")
    found = outputs(tmp_path / "out")
    assert sorted(found) == ["1_enhanced", "1_enhanced_ph"]
    np.testing.assert_array_equal(found["1_enhanced"][0], data[N:].transpose(2, 1, 0))
    np.testing.assert_array_equal(found["1_enhanced_ph"][0], data[:N].transpose(2, 1, 0))
    assert found["1_enhanced_ph"][1]["ConvkitSplit"]["attributes"][0]["value"] == "phase"


def test_philips_enhanced_field_map_is_told_apart_by_frame_type(cli, tmp_path):
    """A FIELD_MAP frame type (echo time 0) and the magnitude frames of one file: the field map
    is '_fieldmaphz' with Units Hz, the one-echo magnitude has no echo suffix (it was the
    unsuffixed field map and '_e2' magnitude: echo times were ranked)."""
    positions = regular_positions(N, AXIAL, (0.0, 0.0, 0.0), 2.0)
    data = np.random.default_rng(6).integers(0, 900, (2 * N, 6, 5)).astype(np.uint16)
    write_enhanced(tmp_path / "in" / "mf.dcm", data, np.vstack([positions, positions]),
                   np.tile(AXIAL, (2 * N, 1)), echo_times=[0.0] * N + [3.5] * N,
                   complex_components=["REAL"] * N + ["MAGNITUDE"] * N,
                   frame_types=[["DERIVED", "PRIMARY", "B0_MAP", "FIELD_MAP"]] * N
                   + [["ORIGINAL", "PRIMARY", "M_FFE", "MAGNITUDE"]] * N,
                   manufacturer="Philips Medical Systems")
    run(cli, tmp_path / "in", tmp_path / "out")
    found = outputs(tmp_path / "out")
    assert sorted(found) == ["1_enhanced", "1_enhanced_fieldmaphz"]
    field, magnitude = found["1_enhanced_fieldmaphz"], found["1_enhanced"]
    np.testing.assert_array_equal(field[0], data[:N].transpose(2, 1, 0))
    np.testing.assert_array_equal(magnitude[0], data[N:].transpose(2, 1, 0))
    assert field[1]["Units"] == "Hz" and field[1]["EchoTime"] == 0
    assert magnitude[1]["EchoTime"] == pytest.approx(0.0035) and "Units" not in magnitude[1]


# --------------------------------------------------------------------------- safety net


def write_repeats(folder: Path, per_slice_extra, seed=8) -> np.ndarray:
    """Every position twice, no time attribute; per_slice_extra(index) adds attributes."""
    positions = regular_positions(N, AXIAL, (0.0, 0.0, 0.0), 2.0)
    stored = np.random.default_rng(seed).integers(0, 500, (2 * N, 4, 4)).astype(np.uint16)
    write_series(folder, stored, np.vstack([positions, positions]), modality="MR",
                 extra={"EchoNumbers": "1"},
                 per_slice=[{"InstanceNumber": i + 1, **per_slice_extra(i)}
                            for i in range(2 * N)])
    return stored


def test_repeats_that_differ_in_echo_time_are_split_not_stacked(cli, tmp_path, dcm2niix):
    """Same EchoNumbers, different EchoTime, nothing else: two outputs (as dcm2niix), each with
    its EchoTime, instead of a 4D ordered by InstanceNumber."""
    stored = write_repeats(tmp_path / "in",
                           lambda i: {"EchoTime": "10" if i < N else "20"})
    done = run(cli, tmp_path / "in", tmp_path / "out")
    found = outputs(tmp_path / "out")
    assert len(found) == 2 and "ordered by InstanceNumber" not in done.stdout
    by_echo = {round(sidecar["EchoTime"], 6): data for data, sidecar in found.values()}
    np.testing.assert_array_equal(by_echo[0.01], stored[:N].transpose(2, 1, 0))
    np.testing.assert_array_equal(by_echo[0.02], stored[N:].transpose(2, 1, 0))
    references = run_dcm2niix(dcm2niix, tmp_path / "in", tmp_path / "ref")
    assert len(references) == 2
    for reference in references:
        echo = json.loads(reference.with_suffix(".json").read_text())["EchoTime"]
        (mine,) = [p for p in (tmp_path / "out").glob("*.nii.gz")
                   if json.loads(p.with_name(p.name.replace(".nii.gz", ".json")).read_text())
                   ["EchoTime"] == pytest.approx(echo)]
        assert_same_world(mine, reference)


def test_repeats_that_differ_without_a_clean_split_are_refused(cli, tmp_path):
    """ImageType differs, but not one value per position: no split makes volumes, and the
    repeats are not time points either: refused, naming the attribute and its values."""
    write_repeats(tmp_path / "in", lambda i: {
        "ImageType": ["ORIGINAL", "PRIMARY", "M" if i % 3 else "OTHER"]})
    done = run(cli, tmp_path / "in", tmp_path / "out", code=4)
    assert "told apart only by InstanceNumber" in done.stderr
    assert "ImageType (ORIGINAL\\PRIMARY\\M, ORIGINAL\\PRIMARY\\OTHER)" in done.stderr
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_identical_repeats_stay_a_time_series_as_dcm2niix(cli, tmp_path, dcm2niix):
    """Nothing but InstanceNumber and nothing that says the repeats differ (GE fMRI exports
    without times look like this): a 4D in InstanceNumber order, as dcm2niix writes."""
    write_repeats(tmp_path / "in", lambda i: {})
    done = run(cli, tmp_path / "in", tmp_path / "out")
    assert "ordered by InstanceNumber" in done.stdout
    (reference,) = run_dcm2niix(dcm2niix, tmp_path / "in", tmp_path / "ref")
    assert_same_world(next((tmp_path / "out").glob("*.nii.gz")), reference)


# --------------------------------------------------------------------------- explanations


def test_every_split_is_explained_in_list_json_sidecar_and_audit(cli, tmp_path):
    write_xa_echoes(tmp_path / "in")
    listed = run(cli, tmp_path / "in", "--list")
    assert "1_enhanced_e2: split: EchoTime 7.38 ms (series has 4.92 ms, 7.38 ms)" in listed.stdout
    done = run(cli, tmp_path / "in", tmp_path / "out", "--json")
    series = {s["label"]: s for s in json.loads(done.stdout)["series"]}
    assert series["1_enhanced"]["split"] == "EchoTime 4.92 ms (series has 4.92 ms, 7.38 ms)"
    sidecar = json.loads((tmp_path / "out" / "1_enhanced_e2.json").read_text())
    assert sidecar["ConvkitSplit"]["reason"] == series["1_enhanced_e2"]["split"]
    report = audit_path(tmp_path / "in")
    rows = {row["label"]: row for row in report.to_json()["series"]}
    assert rows["1_enhanced_e2"]["split"] == series["1_enhanced_e2"]["split"]
    (split,) = [f for f in report.findings if f.code == "series.split"]
    assert "they differ in EchoTime (4.92 ms, 7.38 ms)" in split.message


def test_a_series_that_is_not_split_has_no_split_record(cli, tmp_path):
    positions = regular_positions(N, AXIAL, (0.0, 0.0, 0.0), 2.0)
    write_series(tmp_path / "in", np.zeros((N, 4, 4), np.uint16), positions, modality="MR")
    done = run(cli, tmp_path / "in", tmp_path / "out", "--json")
    assert json.loads(done.stdout)["series"][0]["split"] == ""
    sidecar = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert "ConvkitSplit" not in sidecar and "Units" not in sidecar
    data, _ = canonical(next((tmp_path / "out").glob("*.nii.gz")))
    assert data.shape == (4, 4, N)
