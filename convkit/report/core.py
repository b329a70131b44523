"""build_report: audit a path, draw every card's pictures, write one self-contained page."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from convkit.audit import AuditReport, Finding, audit_path
from convkit.errors import UsageError
from convkit.formats.output import check_folder_target, check_targets, staged_files, staged_folder
from convkit.index import audit_indexed, open_index
from convkit.report.model import STATUS_ORDER, Card, cards_from_audit
from convkit.report.page import render_page
from convkit.report.pictures import Pictures, draw_all, placeholder

#: progress(stage, done, total): 'scan' and 'volumes' (the audit), then 'pictures'.
Progress = Callable[[str, int, int], None]
WEBP = "image/webp"


@dataclass
class ReportResult:
    """What was written: the page, the pictures' folder (if any) and what the page shows."""

    input: str
    output: str
    assets: str | None
    cards: list[Card] = field(default_factory=list)
    loose: list[Finding] = field(default_factory=list)
    pictures: dict[str, Pictures] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, int]:
        counts = {"series": sum(c.kind == "series" for c in self.cards),
                  "volumes": sum(c.kind == "volume" for c in self.cards)}
        for status in STATUS_ORDER:
            counts[status] = sum(c.status == status for c in self.cards)
        counts["without picture"] = sum(p.placeholder for p in self.pictures.values())
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output, "assets": self.assets,
                "summary": self.summary(), "loose_findings": len(self.loose),
                "cards": [card.to_json() for card in self.cards]}


def build_report(path: Path | str, output: Path | str, *, assets: Path | str | None = None,
                 show_identifiers: bool = False, jobs: int = 0, force: bool = False,
                 progress: Progress | None = None,
                 index: Path | str | None = None) -> ReportResult:
    """Write the QC page of every series and volume under path to output (HTML).

    assets: write the pictures into this folder (beside the page, referred to by relative
    address) instead of inside the page. Refuses existing outputs without force before
    any work. The page and its folder are written atomically.
    index: an archive index file (convkit.index): only new and changed files are read, and
    the index is brought up to date.
    """
    output = Path(output)
    assets_dir = Path(assets) if assets is not None else None
    _check_outputs(Path(path), output, assets_dir, force)
    audit = _audit(Path(path), index, jobs, progress, show_identifiers)
    cards, loose = cards_from_audit(audit, show_identifiers)
    drawn = draw_all([(c.key, c.source) for c in cards if c.source is not None], jobs, progress)
    for card in cards:
        pictures = drawn.get(card.key) or placeholder("no picture: no image data")
        drawn[card.key] = pictures
        card.picture_note = pictures.note
    result = ReportResult(audit.input, str(output), str(assets_dir) if assets_dir else None,
                          cards, loose, drawn)
    _write(result, output, assets_dir, force)
    return result


def _audit(path: Path, index: Path | str | None, jobs: int, progress: Progress | None,
           show_identifiers: bool) -> AuditReport:
    """The audit the cards come from: through the archive index when one is given."""
    if index is None:
        return audit_path(path, jobs=jobs, progress=progress, show_identifiers=show_identifiers)
    with open_index(index) as db:
        return audit_indexed(path, db, jobs=jobs, progress=progress,
                             show_identifiers=show_identifiers, with_groups=True)


def _check_outputs(source: Path, output: Path, assets: Path | None, force: bool) -> None:
    if output.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"-o {output}: the report is an HTML page",
                         "name it NAME.html")
    check_targets([output], force)
    if assets is not None:
        if assets.resolve() == output.parent.resolve():
            raise UsageError("--assets must be a folder of its own, not the page's folder",
                             "for example --assets report_files")
        check_folder_target(assets, force)
    for target in [output] + ([assets] if assets is not None else []):
        if source.is_dir() and target.resolve().is_relative_to(source.resolve()):
            raise UsageError(f"{target} is inside the input folder {source}",
                             "write the report outside the archive (the next run would "
                             "read it)")


def _write(result: ReportResult, output: Path, assets: Path | None, force: bool) -> None:
    if assets is None:
        addresses = {key: (_data_uri(p.thumb), _data_uri(p.full))
                     for key, p in result.pictures.items()}
        _write_page(result, output, addresses, force)
        return
    relative = Path(os.path.relpath(assets.resolve(), output.parent.resolve())).as_posix()
    addresses = {}
    with staged_folder(assets, force) as stage:
        for index, card in enumerate(result.cards):
            pictures = result.pictures[card.key]
            names = (f"{index:05d}-thumb.webp", f"{index:05d}.webp")
            (stage / names[0]).write_bytes(pictures.thumb)
            (stage / names[1]).write_bytes(pictures.full)
            addresses[card.key] = (quote(f"{relative}/{names[0]}"), quote(f"{relative}/{names[1]}"))
        _write_page(result, output, addresses, force)


def _write_page(result: ReportResult, output: Path, addresses: dict[str, tuple[str, str]],
                force: bool) -> None:
    cards = []
    for card in result.cards:
        pictures = result.pictures[card.key]
        thumb, full = addresses[card.key]
        cards.append({**card.to_json(), "thumb": thumb, "full": full,
                      "thumb_size": list(pictures.thumb_size),
                      "full_size": list(pictures.full_size)})
    document = {"input": result.input, "storage_key": _storage_key(result.input),
                "summary": result.summary(), "cards": cards,
                "loose": [f.to_json() for f in result.loose]}
    with staged_files(output.parent, force) as stage:
        (stage / output.name).write_text(render_page(document), encoding="utf-8")


def _data_uri(data: bytes) -> str:
    return f"data:{WEBP};base64,{base64.b64encode(data).decode('ascii')}"


def _storage_key(input_path: str) -> str:
    """Where the browser keeps the ratings: the same for every report of one archive path,
    so that a report made again keeps them."""
    return hashlib.sha256(str(Path(input_path).resolve()).encode()).hexdigest()[:16]
