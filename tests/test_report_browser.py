"""The report page in a real headless browser: Debian's chromium, driven by Playwright.

Playwright never downloads a browser here: it launches /usr/bin/chromium (installed by
`make test`'s tools target). Locally a missing chromium skips these tests; in CI (CI=true)
it is an error. Expected values come from the page's data document as Python reads it
(tests/test_report.py checks that document against the archive), never from the page's
own script.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from test_report import make_archive, page_data

pytestmark = pytest.mark.slow

#: Chromium's flags for a closed machine (no background connections, no first-run work).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def _chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: `make test` should have installed it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def browser():
    executable = _chromium_path()
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class Visit:
    """A page opened in a fresh browser context, with what it logged and requested."""

    def __init__(self, browser, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900},
                                           accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())

    def visible_keys(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "#cards tr", "rows => rows.filter(r => !r.hidden).map(r => r.dataset.key)")

    def row(self, key: str):
        return self.page.locator(f'#cards tr[data-key="{key}"]')

    def download(self, button: str) -> str:
        with self.page.expect_download() as info:
            self.page.click(button)
        return Path(info.value.path()).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def synthetic_page(tmp_path_factory) -> Path:
    """The synthetic archive's page, pictures in an assets folder (file:// loads)."""
    root = tmp_path_factory.mktemp("browser")
    archive = make_archive(root / "in")
    output = root / "out" / "qc.html"
    run_cli("report", archive, "-o", output, "--assets", root / "out" / "qc_files", "-j", "2",
            check_code=0)
    return output


@pytest.fixture(scope="module")
def corpus_page(corpus, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("browser-corpus") / "corpus.html"
    run_cli("report", corpus, "-o", output, check_code=0)
    return output


def check_loads_cleanly(browser, path: Path) -> None:
    visit = Visit(browser, path)
    data = page_data(path)
    page = visit.page
    assert page.locator("#cards tr").count() == len(data["cards"])
    for index, card in enumerate(data["cards"]):
        image = page.locator("#cards tr td.thumb img").nth(index)
        image.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete", arg=image.element_handle())
        width = image.evaluate("img => img.naturalWidth")
        assert width == card["thumb_size"][0], card["name"]
        assert image.is_visible()
    assert visit.errors == []
    assert visit.requests and all(url.startswith("file://") for url in visit.requests), \
        [url for url in visit.requests if not url.startswith("file://")]
    visit.context.close()


def test_corpus_page_loads_every_thumbnail_without_errors_or_network(browser, corpus_page):
    check_loads_cleanly(browser, corpus_page)


def test_synthetic_page_with_assets_loads_every_thumbnail(browser, synthetic_page):
    check_loads_cleanly(browser, synthetic_page)


def test_filters_hide_the_right_rows(browser, corpus_page):
    data = page_data(corpus_page)
    visit = Visit(browser, corpus_page)
    page = visit.page
    page.select_option("#filter-status", "error")
    expected = [c["key"] for c in data["cards"] if c["status"] == "error"]
    assert expected and sorted(visit.visible_keys()) == sorted(expected)
    page.select_option("#filter-status", "")
    page.select_option("#filter-modality", "CT")
    expected = [c["key"] for c in data["cards"] if c["modality"] == "CT"]
    assert expected and sorted(visit.visible_keys()) == sorted(expected)
    page.select_option("#filter-modality", "")
    page.fill("#filter-text", "series.gap")
    expected = [c["key"] for c in data["cards"]
                if any(f["code"] == "series.gap" for f in c["findings"])]
    assert expected and sorted(visit.visible_keys()) == sorted(expected)
    page.fill("#filter-text", "")
    assert len(visit.visible_keys()) == len(data["cards"])
    visit.context.close()


def test_sorting_by_a_column(browser, synthetic_page):
    data = page_data(synthetic_page)
    visit = Visit(browser, synthetic_page)
    visit.page.click('th[data-column="slices"]')
    slices = {c["key"]: float("inf") if c["slices"] is None else c["slices"]
              for c in data["cards"]}
    ascending = sorted(slices.values())
    assert len(set(ascending)) > 2
    assert [slices[key] for key in visit.visible_keys()] == ascending
    visit.page.click('th[data-column="slices"]')  # again: descending
    assert [slices[key] for key in visit.visible_keys()] == ascending[::-1]
    visit.context.close()


def test_ratings_are_exported_and_survive_a_reload(browser, synthetic_page):
    data = page_data(synthetic_page)
    keys = [c["key"] for c in data["cards"]][:3]
    visit = Visit(browser, synthetic_page)
    page = visit.page
    visit.row(keys[0]).locator('button[data-rating="pass"]').click()
    visit.row(keys[1]).locator('button[data-rating="fail"]').click()
    visit.row(keys[1]).locator("input").fill('motion, "severe"')
    visit.row(keys[2]).locator('button[data-rating="unsure"]').click()
    visit.row(keys[2]).locator('button[data-rating="pass"]').click()  # changed mind
    expected = {keys[0]: ("pass", ""), keys[1]: ("fail", 'motion, "severe"'),
                keys[2]: ("pass", "")}

    rows = list(csv.DictReader(io.StringIO(visit.download("#export-csv"))))
    assert [r["key"] for r in rows] == [c["key"] for c in data["cards"]]
    assert {r["key"]: (r["rating"], r["note"]) for r in rows if r["rating"]} == expected
    exported = json.loads(visit.download("#export-json"))
    assert {r["key"]: (r["rating"], r["note"]) for r in exported["ratings"]
            if r["rating"]} == expected

    page.reload()
    for key, (rating, note) in expected.items():
        assert visit.row(key).locator("button.on").all_inner_texts() == [rating]
        assert visit.row(key).locator("input").input_value() == note
    assert page.inner_text("#rated-count") == "3"
    page.select_option("#filter-rating", "pass")
    assert sorted(visit.visible_keys()) == sorted([keys[0], keys[2]])
    assert visit.errors == []
    visit.context.close()


def test_thumbnail_opens_the_full_size_picture(browser, synthetic_page):
    data = page_data(synthetic_page)
    card = next(c for c in data["cards"] if "no picture" not in c["picture_note"])
    visit = Visit(browser, synthetic_page)
    visit.row(card["key"]).locator("td.thumb img").click()
    full = visit.page.locator("#lightbox img")
    visit.page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                 arg=full.element_handle())
    assert full.evaluate("img => img.naturalWidth") == card["full_size"][0]
    visit.page.keyboard.press("Escape")
    assert visit.page.locator("#lightbox").is_hidden()
    visit.context.close()
