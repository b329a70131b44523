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

from convkit.audit.core import audit_path
from convkit.audit.findings import CODES, SEVERITIES, Code, Finding
from convkit.audit.report import SCHEMA_VERSION, TABLES, AuditReport

__all__ = ["CODES", "SCHEMA_VERSION", "SEVERITIES", "TABLES", "AuditReport", "Code", "Finding",
           "audit_path"]
