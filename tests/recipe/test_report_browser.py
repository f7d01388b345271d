"""report.html renders in a real headless Chromium: images load, no console error, non-blank page."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

# the worker that runs test_compress.py runs this module too (pytest-xdist, --dist loadgroup):
# the recipe's `compressed` fixture then runs once
pytestmark = pytest.mark.xdist_group("recipe-compress")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture()
def report_html(compressed):
    return compressed[1] / "report.html"


def test_report_html_renders_in_headless_chromium(report_html, tmp_path):
    from PIL import Image
    from playwright import sync_api  # dev extra; make test installs Debian's chromium

    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "report.html"  # self-contained: no file beside it is needed
    shutil.copy(report_html, moved)
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed request {r.url}"))
            page.goto(moved.as_uri(), wait_until="load")
            title = page.title()
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])"
            )
            headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
            screenshot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert title == "tfcompress compress report"
    assert len(images) == 3 and all(done and w > 100 and h > 100 for done, w, h in images)
    assert headings[:2] == ["Steps", "Plots"]
    pixels = np.asarray(Image.open(io.BytesIO(screenshot)).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 800  # the full page, plots included, is taller than the viewport
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # dark text and plots on white
