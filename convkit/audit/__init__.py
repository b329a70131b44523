"""audit: every file under a path accounted for, every series and volume checked.

Checks as data (after nibabel's batteryrunners): a check is a function that
returns Findings (severity, code, path, series, message, hint); CODES gives every
code its one severity. Headers only: no pixel data is decoded.

    from convkit.audit import audit_path
    report = audit_path("incoming/", jobs=0)
    report.findings          # [Finding(severity='error', code='series.gap', ...), ...]
    report.files             # one row per file: path, kind, status, reason, series, bytes
    report.series, report.volumes
    report.to_json(fail_on="warning"), report.write_csv("audit_csv/"), report.exit_code("error")
"""

from __future__ import annotations

from convkit.lazy import lazy_api

#: The package's API, imported on first use: the archive index and dicom2nii's file facts
#: use the report's columns (audit.report) and need not import the whole audit.
_API = {"audit_path": "convkit.audit.core", "CODES": "convkit.audit.findings",
        "SEVERITIES": "convkit.audit.findings", "Code": "convkit.audit.findings",
        "Finding": "convkit.audit.findings", "SCHEMA_VERSION": "convkit.audit.report",
        "TABLES": "convkit.audit.report", "AuditReport": "convkit.audit.report"}
__all__, __getattr__, __dir__ = lazy_api(__name__, _API)
