"""The report page: one HTML file with its CSS, script and data inside.

The data (cards, findings, picture addresses) are one JSON document in a
<script type="application/json"> element; the page's own script builds the table from
it with textContent only, so text from the archive is never parsed as HTML. A
Content-Security-Policy forbids every request except the page's own pictures (data:
URIs, or files beside the page with --assets).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from convkit import __version__

#: No connection of any kind; pictures only from data: URIs or the page's own folder.
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data: file: 'self'; "
                           "style-src 'unsafe-inline'; script-src 'unsafe-inline'")
#: Sortable columns: (data-column, heading); the picture and rating columns come first/last.
COLUMNS = (("status", "Status"), ("name", "Series / file"), ("modality", "Modality"),
           ("description", "Description"), ("shape", "Shape"), ("voxel_mm", "Voxel mm"),
           ("orientation", "Orient"), ("slices", "Slices"), ("dicom2nii", "dicom2nii"),
           ("findings", "Findings"))
STATUSES = ("error", "warning", "info", "ok")


def render_page(document: dict[str, Any]) -> str:
    """The HTML page of a report document (see report.core.Report.page_document)."""
    static = resources.files("convkit.report") / "static"
    css = (static / "report.css").read_text(encoding="utf-8")
    script = (static / "report.js").read_text(encoding="utf-8")
    title = f"convkit report: {document['input']}"
    summary = " ".join(f"<span>{count} {html.escape(name)}</span>"
                       for name, count in document["summary"].items())
    headings = "".join(f'<th data-column="{column}" aria-sort="none">{heading}</th>'
                       for column, heading in COLUMNS)
    statuses = "".join(f'<option value="{s}">{s}</option>' for s in STATUSES)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="convkit {__version__}">
<title>{html.escape(title)}</title>
<style>
{css}</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<div class="summary">{summary}<span><span id="rated-count">0</span> rated</span></div>
</header>
<div class="controls">
<label>Status <select id="filter-status"><option value="">all</option>{statuses}</select></label>
<label>Modality <select id="filter-modality"><option value="">all</option></select></label>
<label>Rating <select id="filter-rating"><option value="">all</option>
<option value="unrated">unrated</option><option value="pass">pass</option>
<option value="fail">fail</option><option value="unsure">unsure</option></select></label>
<input type="search" id="filter-text" placeholder="filter: name, description, finding"
 aria-label="text filter">
<button type="button" id="export-csv">Export ratings CSV</button>
<button type="button" id="export-json">Export ratings JSON</button>
<span class="count" id="shown-count"></span>
</div>
<div id="storage-warning" class="note-text" hidden></div>
<table>
<thead><tr><th>Picture</th>{headings}
<th data-column="rating" aria-sort="none">Rating</th></tr></thead>
<tbody id="cards"></tbody>
</table>
{_loose_section(document["loose"])}
<div id="lightbox" hidden><span class="caption"></span><img alt="full-size picture"></div>
<script type="application/json" id="report-data">{_json_in_script(document)}</script>
<script>
{script}</script>
</body>
</html>
"""


def _loose_section(findings: list[dict[str, Any]]) -> str:
    """Findings that belong to no series or volume (files, folders), as a plain list."""
    if not findings:
        return ""
    items = "".join(
        f'<li class="{html.escape(f["severity"])}"><b>{html.escape(f["code"])}</b> '
        f'{html.escape(f["path"])}: {html.escape(f["message"])}'
        + (f' <span class="hint">{html.escape(f["hint"])}</span>' if f["hint"] else "")
        + "</li>" for f in findings)
    return (f'<section class="loose"><h2>{len(findings)} finding(s) on files and folders'
            f'</h2><ul class="findings">{items}</ul></section>')


def _json_in_script(document: dict[str, Any]) -> str:
    """JSON that cannot end its <script> element early ('</' and '<!--' escaped)."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029",
                                                                            "\\u2029")
