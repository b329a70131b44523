"""Identifying data that cannot be checked is a finding (identifiers.unchecked), never silence."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from convkit.audit import audit_path
from convkit.audit.identifiers import IdentifiersUnchecked, dicom_identifiers
from convkit.audit.series import audit_series
from convkit.dicom.scan import scan_folder
from convkit.testing.synthetic import regular_positions, write_series


def findings_of(report_json: dict, code: str) -> list[dict]:
    return [f for f in report_json["findings"] if f["code"] == code]


def test_nifti_with_unreadable_extension_is_reported_unchecked(tmp_path):
    """A DICOM extension (code 2) that nibabel cannot parse used to be dropped silently (the
    header was reported without it): it may hold the patient's name."""
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    damaged = nib.nifti1.Nifti1Extension(2, b"\x08\x00\x10\x00" + b"\xff" * 60)
    image.header.extensions.append(damaged)
    path = tmp_path / "with_extension.nii"
    image.to_filename(str(path))

    report = audit_path(path).to_json()
    unchecked = findings_of(report, "identifiers.unchecked")
    assert len(unchecked) == 1 and unchecked[0]["severity"] == "warning"
    assert "extensions unreadable" in unchecked[0]["message"]
    assert unchecked[0]["path"] == str(path)


def test_nifti_with_readable_extension_is_not_unchecked(tmp_path):
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment"))
    path = tmp_path / "with_comment.nii"
    image.to_filename(str(path))
    assert findings_of(audit_path(path).to_json(), "identifiers.unchecked") == []


def test_dicom_that_cannot_be_read_again_is_unchecked(tmp_path):
    """A file scanned, then gone (archives change during an audit): its series is reported as
    unchecked for identifying data, not as free of it."""
    stored = np.zeros((3, 8, 8), np.int16)
    write_series(tmp_path / "in", stored, regular_positions(3), modality="CT")
    group = scan_folder(tmp_path / "in").series[0]
    assert dicom_identifiers(group.first.path)["PatientName"] == "Synthetic^Patient"
    group.first.path.unlink()
    try:
        dicom_identifiers(group.first.path)
    except IdentifiersUnchecked as unchecked:
        reason = unchecked
    else:
        raise AssertionError("a missing file was reported as checked")
    audit = audit_series(group, [], reason)
    found = [f for f in audit.findings if f.code == "identifiers.unchecked"]
    assert len(found) == 1 and group.first.path.name in found[0].message
    assert found[0].severity == "warning"
    assert json.loads(json.dumps(found[0].to_json()))["code"] == "identifiers.unchecked"
