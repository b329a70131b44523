"""Series labels: file-name-safe, unique, deterministic names from a template.

A label is one path component (no separators, no '..' runs, never hidden) and short
enough that the label with the longest suffix convkit writes after it fits in one
file name (NAME_MAX_BYTES, 255 bytes on common file systems).
"""

from __future__ import annotations

import re
from string import Formatter

from convkit.dicom.group import SeriesGroup
from convkit.dicom.header import SliceHeader
from convkit.errors import UsageError
from convkit.formats.output import NAME_MAX_BYTES, fit_name

#: The fields a --name template may use, as plain {Field} placeholders.
NAME_FIELDS = ("SeriesNumber", "SeriesDescription", "Modality", "SeriesInstanceUID",
               "StudyInstanceUID")

#: The suffixes convkit writes after a label (dicom2nii's formats and sidecars, preview's PNG);
#: tests check that this covers convkit.formats.FORMATS.
OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".raw.gz", ".mha", ".mhd", ".raw",
                   ".zraw", ".json", ".bval", ".bvec", ".png")
#: A label's most bytes: with any of OUTPUT_SUFFIXES it fits in one file name.
LABEL_MAX_BYTES = NAME_MAX_BYTES - max(len(suffix) for suffix in OUTPUT_SUFFIXES)


def name_series(
    groups: list[SeriesGroup], template: str = "{SeriesNumber}_{SeriesDescription}",
) -> None:
    """Give every group a file-name-safe label, unique across the scan (deterministic)."""
    check_template(template)
    labels = unique_labels([(safe_name(format_name(template, group.first)), group.split_suffix)
                            for group in groups])
    for group, label in zip(groups, labels, strict=True):
        group.label = label


def unique_labels(names: list[tuple[str, str]]) -> list[str]:
    """(name, suffix) pairs -> labels name+suffix, each at most LABEL_MAX_BYTES (the name is
    shortened, the suffix kept) and unique ignoring case: repeats get _2, _3 ... in order."""
    used: set[str] = set()
    labels = []
    for name, suffix in names:
        base = fit_label(name, suffix)
        label, count = base, 1
        while label.lower() in used:
            count += 1
            label = fit_label(name, f"{suffix}_{count}")
        used.add(label.lower())
        labels.append(label)
    return labels


def fit_label(name: str, suffix: str = "", max_bytes: int = LABEL_MAX_BYTES) -> str:
    """name + suffix in at most max_bytes: the name is cut (at a character) when too long."""
    room = max_bytes - len(suffix.encode("utf-8", "surrogateescape"))
    short = fit_name(name, max(room, 1))
    if short != name:
        short = short.rstrip("_.-") or short
    return short + suffix


def check_template(template: str) -> None:
    """Only plain {Field} placeholders over NAME_FIELDS (no attribute or index access, no
    format spec or conversion); anything else is a UsageError listing the fields."""
    hint = f"use plain {{Field}} placeholders, Field one of {', '.join(sorted(NAME_FIELDS))}"
    try:
        parts = list(Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"bad --name template {template!r}: {exc}", hint) from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in NAME_FIELDS:
            plain = re.fullmatch(r"\w+", field) is not None
            what = f"unknown field {field!r}" if plain else \
                f"{{{field}}} is not a plain field placeholder"
            raise UsageError(f"bad --name template {template!r}: {what}", hint)
        if spec or conversion:
            shown = field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise UsageError(f"bad --name template {template!r}: {{{shown}}} is not a plain "
                             "field placeholder", hint)


def format_name(template: str, header: SliceHeader) -> str:
    """Fill a name template such as '{SeriesNumber}_{SeriesDescription}' from header fields."""
    check_template(template)
    fields = {
        "SeriesNumber": "" if header.series_number is None else header.series_number,
        "SeriesDescription": header.series_description,
        "Modality": header.modality,
        "SeriesInstanceUID": header.series_instance_uid,
        "StudyInstanceUID": header.study_instance_uid,
    }
    return template.format(**fields)


def safe_name(text: str) -> str:
    """Letters, digits, '-', '_' and single '.' only: one path component, never empty, never
    hidden, no '..' (a run of dots is a separator, like any other character left out)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text.strip())
    cleaned = re.sub(r"\.{2,}", "_", cleaned)
    parts = (part.strip(".") for part in cleaned.split("_"))  # no dot next to a separator
    return "_".join(part for part in parts if part) or "series"
