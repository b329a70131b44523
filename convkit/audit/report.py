"""The audit result: four flat tables (files, series, volumes, findings) and a summary.

The same rows give the rich tables, `--json` (one document, described by
convkit/schemas/audit.schema.json) and `--csv DIR` (one CSV per table: the cells
are the JSON values, with '' for null and true/false for booleans).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convkit import __version__
from convkit.audit.findings import RANK, SEVERITIES, Finding
from convkit.formats.output import check_targets, staged_files

#: Bumped when a column is renamed or removed (adding one keeps it).
SCHEMA_VERSION = 1

FILE_COLUMNS = ("path", "kind", "status", "reason", "series", "bytes")
SERIES_COLUMNS = (
    "label", "series_number", "description", "modality", "manufacturer", "patient_name",
    "patient_id", "study_uid", "series_uid", "folder", "files", "images", "slices", "volumes",
    "columns", "rows", "pixel_spacing_row", "pixel_spacing_col", "slice_spacing",
    "slice_spacing_min", "slice_spacing_median", "slice_spacing_max", "orientation",
    "oblique_degrees", "tilt_degrees", "gantry_tilt", "transfer_syntax", "compressed", "lossy",
    "bits_allocated", "bits_stored", "signed", "samples_per_pixel", "rescale_slope",
    "rescale_intercept", "rescale_varies", "status", "dicom2nii", "output_shape", "reason",
    "identifiers", "findings", "split",
)
VOLUME_COLUMNS = (
    "path", "format", "status", "shape", "dtype", "spacing", "orientation", "oblique_degrees",
    "affine_source", "qform_code", "sform_code", "slope", "intercept", "spatial_unit",
    "time_unit", "size_check", "expected_bytes", "found_bytes", "intent", "descrip", "aux_file",
    "extensions", "nrrd_space", "nrrd_encoding", "nrrd_kinds", "sidecar", "paired_series",
    "pair_method", "pair_result", "identifiers", "findings",
)
FINDING_COLUMNS = ("severity", "code", "path", "series", "message", "hint")
TABLES = {"files": FILE_COLUMNS, "series": SERIES_COLUMNS, "volumes": VOLUME_COLUMNS,
          "findings": FINDING_COLUMNS}
#: File statuses: every file has exactly one.
FILE_STATUSES = ("used", "duplicate", "volume", "sidecar", "dicomdir", "not-image",
                 "unreadable", "skipped")


@dataclass
class AuditReport:
    """What `convkit audit` found under one path (a folder, or a single file)."""

    input: str
    mode: str  # folder | file
    files: list[dict[str, Any]] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    header: dict[str, Any] | None = None  # single-file mode: the file's header summary
    #: series label -> its convkit.dicom.group.SeriesGroup (for pictures: convkit report);
    #: not part of the JSON or CSV
    groups: dict[str, Any] = field(default_factory=dict, repr=False)
    index: dict[str, Any] | None = None  # with an index: its path and files read / reused
    _texts: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def counts(self) -> dict[str, int]:
        """Files per status, in FILE_STATUSES order (statuses with no file left out)."""
        found: dict[str, int] = {}
        for record in self.files:
            found[record["status"]] = found.get(record["status"], 0) + 1
        return {status: found[status] for status in FILE_STATUSES if status in found}

    def severity_counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(reversed(SEVERITIES), 0)
        for item in self.findings:
            counts[item.severity] += 1
        return counts

    def exit_code(self, fail_on: str | None = None) -> int:
        """1 when a finding at or above fail_on exists, else 0 (see DESIGN.md)."""
        if fail_on is None:
            return 0
        return int(any(RANK[f.severity] >= RANK[fail_on] for f in self.findings))

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        return {"files": self.files, "series": self.series, "volumes": self.volumes,
                "findings": [f.to_json() for f in self.findings]}

    def table_texts(self) -> dict[str, str]:
        """Each table as compact JSON text, encoded once (the tables must not change after):
        the index's stored report and the printed document share it (20,000 file rows take
        as long to encode as the rest of a re-audit's checks)."""
        if self._texts is None:
            self._texts = {name: json.dumps(rows, default=str)
                           for name, rows in self.tables().items()}
        return self._texts

    def json_text(self, fail_on: str | None = None) -> str:
        """json.dumps(to_json(fail_on), default=str), the tables' text made once."""
        texts = self.table_texts()
        parts = (f"{json.dumps(key)}: "
                 + (texts[key] if key in texts else json.dumps(value, default=str))
                 for key, value in self.to_json(fail_on).items())
        return "{" + ", ".join(parts) + "}"

    def to_json(self, fail_on: str | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "convkit_version": __version__,
            "input": self.input,
            "mode": self.mode,
            "fail_on": fail_on,
            "exit_code": self.exit_code(fail_on),
            "summary": {
                "files": len(self.files),
                "file_status": self.counts(),
                "series": len(self.series),
                "volumes": len(self.volumes),
                "findings": self.severity_counts(),
            },
            **self.tables(),
        }
        if self.header is not None:
            document["header"] = self.header
        if self.index is not None:
            document["index"] = self.index
        return document

    def write_csv(self, folder: Path | str, force: bool = False) -> list[Path]:
        """One CSV per table in folder (atomically: all four or none); returns their paths."""
        folder = Path(folder)
        names = [f"{table}.csv" for table in TABLES]
        check_targets([folder / name for name in names], force)
        with staged_files(folder, force) as stage:
            for table, rows in self.tables().items():
                (stage / f"{table}.csv").write_text(to_csv(rows, TABLES[table]),
                                                    encoding="utf-8", newline="")
        return [folder / name for name in names]


def csv_cell(value: Any) -> str:
    """A JSON value as a CSV cell: '' for null, true/false, numbers as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([csv_cell(row.get(column)) for column in columns])
    return buffer.getvalue()
