"""Series labels: file-name-safe, unique, deterministic names from a template."""

from __future__ import annotations

from convkit.dicom.group import SeriesGroup
from convkit.dicom.header import SliceHeader
from convkit.errors import UsageError


def name_series(
    groups: list[SeriesGroup], template: str = "{SeriesNumber}_{SeriesDescription}",
) -> None:
    """Give every group a file-name-safe label, unique across the scan (deterministic)."""
    used: dict[str, int] = {}
    for group in groups:
        base = safe_name(format_name(template, group.first)) + group.split_suffix
        count = used.get(base.lower(), 0)
        used[base.lower()] = count + 1
        group.label = base if count == 0 else f"{base}_{count + 1}"


def format_name(template: str, header: SliceHeader) -> str:
    """Fill a name template such as '{SeriesNumber}_{SeriesDescription}' from header fields."""
    fields = {
        "SeriesNumber": "" if header.series_number is None else header.series_number,
        "SeriesDescription": header.series_description,
        "Modality": header.modality,
        "SeriesInstanceUID": header.series_instance_uid,
        "StudyInstanceUID": header.study_instance_uid,
    }
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"bad --name template {template!r}: unknown field {exc}",
                         f"use fields among {', '.join(sorted(fields))}") from None


def safe_name(text: str) -> str:
    """Letters, digits, '-', '_' and '.' only; never empty, never hidden."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text.strip())
    cleaned = "_".join(part for part in cleaned.split("_") if part).strip(".")
    return cleaned or "series"
