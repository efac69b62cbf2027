"""The web page at /, in a real headless Chromium: upload a photo, wait for the bars, compare.

Needs Debian's `chromium` (/usr/bin/chromium) and the `playwright` Python package (driven against
the system browser, never a downloaded one); `.ci/run` installs both. Skips with the reason when
either is absent. Set EMOREC_SCREENSHOT_DIR to keep the screenshot (docs/img/ holds the README's).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from server_models import REPO, live_server

from emorec.serving.predict import predict

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ASSETS = [REPO / "src" / "emorec" / "serving" / "web" / name for name in ("index.html", "app.js", "style.css")]


def test_the_page_loads_nothing_from_the_internet():
    for asset in ASSETS:
        text = asset.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{asset.name} links outside the server"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_a_dropped_photo_shows_bars_whose_top_label_matches_predict(browser, served_run, emotion6, tmp_path):
    model = served_run / "export" / "model.onnx"
    photo = emotion6 / "images" / "joy" / sorted(os.listdir(emotion6 / "images" / "joy"))[0]
    expected, failures = predict(model, [photo], top_k=3)
    assert not failures
    with live_server(model) as (url, _):
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        offline = []
        page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("blob:") else offline.append(r.url))
        page.goto(url + "/")
        page.wait_for_selector("#model-line:not(:has-text('loading'))")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-state=done]", timeout=20_000)
        rows = page.locator("#bars .bar-row")
        assert rows.count() == 4  # TOP_K 5, capped by the model's 4 labels
        assert rows.first.get_attribute("data-label") == expected[0].top[0][0]
        shown = rows.first.locator(".pct").inner_text()
        assert float(shown.rstrip("%")) == pytest.approx(100 * expected[0].top[0][1], abs=0.051)
        assert page.locator("#photo").evaluate("img => img.naturalWidth") > 0
        shot = tmp_path / "serve_page.png"
        page.screenshot(path=str(shot), full_page=True)
        page.close()
    assert shot.stat().st_size > 10_000 and offline == []
    if os.environ.get("EMOREC_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["EMOREC_SCREENSHOT_DIR"]) / shot.name)
