"""Segment descriptions: name, colour, coded category and type of each label.

Defaults (SNOMED CT): category 'Tissue' and type 'Tissue', a distinct colour per label,
algorithm type MANUAL. A labels file (JSON) overrides any of them per label number:

    {"1": {"name": "lung", "color": [128, 174, 128],
           "category": {"scheme": "SCT", "value": "123037004", "meaning": "Anatomical Structure"},
           "type": {"scheme": "SCT", "value": "39607008", "meaning": "Lung"}},
     "2": {"name": "ground-glass opacity"}}

A list of such objects, each with a "label" number, is accepted too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from convkit.errors import InputError, UsageError

DEFAULT_CATEGORY = ("SCT", "85756007", "Tissue")
DEFAULT_TYPE = ("SCT", "85756007", "Tissue")
#: Colours of labels 1, 2, ... (RGB) when the labels file gives none (3D Slicer's first ones).
PALETTE = ((128, 174, 128), (241, 214, 145), (177, 122, 101), (111, 184, 210), (216, 101, 79),
           (221, 130, 101), (144, 238, 144), (192, 104, 88), (220, 245, 20), (78, 63, 0))
#: The largest label a SEG can hold (segment numbers are US; LABELMAP pixels 16 bits).
MAX_LABEL = 65535


@dataclass
class Code:
    scheme: str
    value: str
    meaning: str


@dataclass
class LabelInfo:
    """One segment: its number (the label value) and how it is described."""

    number: int
    name: str
    color: tuple[int, int, int]
    category: Code
    type: Code
    algorithm: str = "MANUAL"
    segment: int = 0  # SegmentNumber in the SEG (the label itself, unless renumbered)
    voxels: int = 0  # labelled voxels on the reference grid (filled by the writer)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_label(number: int) -> LabelInfo:
    return LabelInfo(number, f"label {number}", PALETTE[(number - 1) % len(PALETTE)],
                     Code(*DEFAULT_CATEGORY), Code(*DEFAULT_TYPE))


def read_labels_file(path: Path | str) -> dict[int, dict[str, Any]]:
    """{label: overrides} from a labels JSON file (see the module docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"labels file {path} does not exist", "check the path") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"labels file {path} is not readable JSON ({exc})",
                         "see README: 'Segmentations' for the format") from None
    items = data.items() if isinstance(data, dict) else (
        (entry.get("label"), entry) for entry in data if isinstance(entry, dict)) \
        if isinstance(data, list) else None
    if items is None:
        raise InputError(f"labels file {path}: expected an object or a list",
                         "see README: 'Segmentations' for the format")
    found: dict[int, dict[str, Any]] = {}
    for key, entry in items:
        try:
            number = int(str(key))
        except ValueError:
            raise UsageError(f"labels file {path}: {key!r} is not a label number",
                             "use the label values of the mask (1, 2, ...)") from None
        if not isinstance(entry, dict) or not 1 <= number <= MAX_LABEL:
            raise UsageError(f"labels file {path}: label {key!r} must be 1..{MAX_LABEL} "
                             "with an object", "see README: 'Segmentations'")
        found[number] = entry
    return found


def describe_labels(numbers: list[int], overrides: dict[int, dict[str, Any]]) -> list[LabelInfo]:
    """A LabelInfo per label number: defaults, then the labels file's values."""
    return [_apply(default_label(n), overrides.get(n, {})) for n in numbers]


def _apply(info: LabelInfo, entry: dict[str, Any]) -> LabelInfo:
    if "name" in entry:
        info.name = str(entry["name"])
    if "color" in entry:
        color = entry["color"]
        if not (isinstance(color, list) and len(color) == 3
                and all(isinstance(c, int) and 0 <= c <= 255 for c in color)):
            raise UsageError(f"label {info.number}: color must be [R, G, B] (0-255)",
                             "e.g. \"color\": [128, 174, 128]")
        info.color = (color[0], color[1], color[2])
    for key in ("category", "type"):
        if key in entry:
            setattr(info, key, _code(entry[key], info.number, key))
    return info


def _code(value: Any, number: int, key: str) -> Code:
    if isinstance(value, dict) and all(isinstance(value.get(k), str) and value.get(k)
                                       for k in ("scheme", "value", "meaning")):
        return Code(value["scheme"], value["value"], value["meaning"])
    raise UsageError(f"label {number}: {key} must have scheme, value and meaning",
                     '"category": {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"}')
