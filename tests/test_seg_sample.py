"""The sample chest CT ships its ground-glass patches as a DICOM SEG: dicom2nii turns it back
into the phantom's mask, in world space."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from convkit.testing.phantoms import chest_ct_masks

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "dicom"


def test_sample_ggo_seg_is_the_phantom_mask(cli, tmp_path):
    cli("dicom2nii", SAMPLE, tmp_path / "out", check_code=0)
    ct = nib.load(tmp_path / "out" / "2_Chest_CT_synthetic.nii.gz")
    seg = nib.load(tmp_path / "out" / "2_Chest_CT_synthetic_seg.nii.gz")
    ggo = chest_ct_masks((70, 128, 128), (2.734375, 2.734375), 5.0, seed=0)["ggo"]
    expected = ggo.transpose(2, 1, 0)  # (i, j, k) of the CT as converted
    # the label of every CT voxel centre, looked up in the label map through both affines
    index = np.indices(ct.shape).reshape(3, -1)
    world = ct.affine @ np.vstack([index, np.ones(index.shape[1])])
    seg_index = np.rint(np.linalg.inv(seg.affine) @ world)[:3].astype(int)
    found = np.asarray(seg.dataobj)[tuple(seg_index)].reshape(ct.shape)
    assert expected.sum() > 500
    np.testing.assert_array_equal(found, expected.astype(np.uint8))
    sidecar = json.loads((tmp_path / "out" / "2_Chest_CT_synthetic_seg.json").read_text())
    assert [s["SegmentLabel"] for s in sidecar["Segments"]] == ["ground-glass opacity"]
    assert sidecar["Segments"][0]["Category"]["value"] == "49755003"


def test_rerun_leaves_the_same_label_map_alone_and_refuses_another(cli, tmp_path):
    """A SEG's label map is not in the batch manifest: a rerun into the same folder finds
    the bytes it would write already there (up to date, file untouched, exit 0); a label
    map that differs is not overwritten without --force (the series stay up to date)."""
    out = tmp_path / "out"
    cli("dicom2nii", SAMPLE, out, check_code=0)
    label_map = out / "2_Chest_CT_synthetic_seg.nii.gz"
    before = label_map.stat()
    rows = json.loads(cli("dicom2nii", SAMPLE, out, "--json", check_code=0).stdout)["series"]
    by_label = {row["label"]: row["status"] for row in rows}
    assert by_label["2_Chest_CT_synthetic_seg"] == "up to date"
    assert by_label["2_Chest_CT_synthetic"] == "up to date"
    after = label_map.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p for p in out.iterdir() if p.name.startswith(".convkit-check")]
    original = label_map.read_bytes()
    altered = bytearray(original)
    altered[-9] ^= 0xFF
    label_map.write_bytes(bytes(altered))
    done = cli("dicom2nii", SAMPLE, out, "--json", check_code=6)
    rows = {row["label"]: row for row in json.loads(done.stdout)["series"]}
    assert rows["2_Chest_CT_synthetic_seg"]["status"] == "failed"
    assert "exists" in rows["2_Chest_CT_synthetic_seg"]["reason"]
    assert label_map.read_bytes() == bytes(altered)
    cli("dicom2nii", SAMPLE, out, "--force", check_code=0)
    assert label_map.read_bytes() == original
