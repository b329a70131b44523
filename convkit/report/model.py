"""The report's data: one card per DICOM series and per volume file, from the audit's rows.

Every fact on a card comes from the audit (convkit.audit.audit_path): the same series
rows and findings as `convkit audit --json`, so the page cannot disagree with it. When
the archive index lands, cards can be built from its rows the same way (cards_from_audit
takes the audit's tables, not a scan).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convkit.audit import AuditReport, Finding
from convkit.audit.findings import RANK

#: A card's status when it has no finding at all.
NO_FINDING = "ok"
#: Card statuses, most severe first (the page's default order).
STATUS_ORDER = ("error", "warning", "info", NO_FINDING)


@dataclass
class Card:
    """One row of the page: a series or a volume file, its facts and findings."""

    key: str  # unique on the page: 's:LABEL' or 'v:relative/path'
    kind: str  # series | volume
    name: str  # series label or volume path relative to the input
    modality: str
    description: str
    shape: str
    voxel_mm: str
    orientation: str
    slices: int | None
    dicom2nii: str  # what dicom2nii would write (a series); the format (a volume)
    folder: str
    findings: list[Finding] = field(default_factory=list)
    patient: str = ""  # only with show_identifiers
    source: Any = None  # SeriesGroup (series) or Path (volume): what the pictures read
    picture_note: str = ""  # why the picture is a placeholder, or what it shows

    @property
    def status(self) -> str:
        """The most severe finding's severity, or 'ok'."""
        if not self.findings:
            return NO_FINDING
        return str(max((f.severity for f in self.findings), key=lambda s: RANK[s]))

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "name": self.name,
                "modality": self.modality, "description": self.description,
                "shape": self.shape, "voxel_mm": self.voxel_mm,
                "orientation": self.orientation, "slices": self.slices,
                "dicom2nii": self.dicom2nii, "folder": self.folder, "patient": self.patient,
                "status": self.status, "picture_note": self.picture_note,
                "findings": [f.to_json() for f in self.findings]}


def cards_from_audit(report: AuditReport, show_identifiers: bool = False
                     ) -> tuple[list[Card], list[Finding]]:
    """(cards, findings tied to no card), the cards most severe first, then by name."""
    root = Path(report.input)
    cards = [_series_card(row, report.groups.get(row["label"]), root, show_identifiers)
             for row in report.series]
    cards += [_volume_card(row, root) for row in report.volumes]
    by_series = {card.name: card for card in cards if card.kind == "series"}
    by_path = {str(card.source): card for card in cards if card.kind == "volume"}
    for row in report.volumes:  # a volume made from a series has that series' modality
        paired = by_series.get(row["paired_series"] or "")
        if paired is not None:
            by_path[row["path"]].modality = paired.modality
    loose = []
    for item in report.findings:
        owners = [by_series[label] for label in item.series.split(", ") if label in by_series]
        if item.path in by_path:
            owners.append(by_path[item.path])
        for owner in owners:
            owner.findings.append(item)
        if not owners:
            loose.append(item)
    cards.sort(key=lambda card: (STATUS_ORDER.index(card.status), card.name))
    return cards, loose


def _series_card(row: dict[str, Any], group: Any, root: Path, show_identifiers: bool) -> Card:
    voxel = "x".join(f"{v:.4g}" for v in (row["pixel_spacing_col"], row["pixel_spacing_row"],
                                           row["slice_spacing"]) if v is not None)
    shape = f"{row['columns']}x{row['rows']}"
    if row["slices"] is not None:
        shape += f"x{row['slices']}" + (f"x{row['volumes']}" if (row["volumes"] or 1) > 1
                                        else "")
    patient = ""
    if show_identifiers:
        patient = " ".join(str(v) for v in (row["patient_name"], row["patient_id"]) if v)
    return Card(f"s:{row['label']}", "series", row["label"], row["modality"] or "",
                row["description"] or "", shape, voxel, row["orientation"] or "",
                row["slices"], row["dicom2nii"] or "", _relative(row["folder"], root),
                patient=patient, source=group)


def _volume_card(row: dict[str, Any], root: Path) -> Card:
    path = Path(row["path"])
    name = _relative(row["path"], root)
    shape = row["shape"] or ""
    dims = shape.split("x")
    slices = int(dims[2]) if len(dims) > 2 and dims[2].isdigit() else None
    description = row["descrip"] or ""
    if row["paired_series"]:
        description = (f"{description}; " if description else "") + \
            f"paired with series {row['paired_series']} ({row['pair_result']})"
    return Card(f"v:{name}", "volume", name, "", description, shape, row["spacing"] or "",
                row["orientation"] or "", slices, f"{row['format']} file ({row['status']})",
                _relative(str(path.parent), root), source=path)


def _relative(path: str, root: Path) -> str:
    if not path:
        return ""
    base = root if root.is_dir() else root.parent
    try:
        relative = os.path.relpath(path, base)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
