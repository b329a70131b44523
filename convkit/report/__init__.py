"""report: one self-contained HTML page to look at every series and volume of an archive.

Library first (no typer, no rich here)::

    from convkit.report import build_report
    result = build_report("incoming/", "qc.html", jobs=0)          # pictures inside the page
    build_report("incoming/", "qc.html", assets="qc_files", force=True)  # pictures beside it
    result.cards             # one Card per series and volume: facts, findings, status

Modules: model (cards from the audit's rows and findings), pictures (thumbnails and
full-size pictures through convkit.preview, WebP by Pillow, in worker processes), page
(the HTML, with static/report.css and static/report.js inside), core (build_report).
"""

from __future__ import annotations

from convkit.report.core import ReportResult, build_report
from convkit.report.model import Card, cards_from_audit

__all__ = ["Card", "ReportResult", "build_report", "cards_from_audit"]
