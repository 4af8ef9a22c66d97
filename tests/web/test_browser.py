"""The status page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

Saves a screenshot of the page (to the docs' docs/status-page.png when OBSFLOW_SCREENSHOT=1).  If Chromium cannot start, the
test fails with the reason: a browser test that skips would never catch a broken page.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from obsflow.web.pages import human_bytes
from obsflow.web.server import StatusServer
from tests.web.conftest import Site
from tests.web.site import PROJECT

REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "status-page.png"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")  # fmt: skip


@pytest.fixture
def browser() -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        pytest.fail(f"selenium is not installed ({err}); run: .venv/bin/pip install -e '.[test]'")
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            pytest.fail(f"{path} not found; run: apt-get install -y chromium chromium-driver (scripts/setup.sh)")
    profile = tempfile.mkdtemp(prefix="obsflow-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as err:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"cannot start headless Chromium: {err.msg or err}")
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_status_page_in_chromium(site: Site, server: StatusServer, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    browser.get(server.url)
    assert browser.title == "obsflow: Overview"
    text = browser.find_element(By.TAG_NAME, "body").text
    for visible in ("instruments → suth", "suth → cape", "incomplete", human_bytes(3_000_006),
                    "2 (1 in flight, 1 locked)", "4 files / 4.0 MB", "FAILED: 3 missing", f"{PROJECT} (active)",
                    "2 scans behind", "bank C truncated", "running"):  # fmt: skip
        assert visible in text, visible
    loaded = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth]);"
    )
    assert sorted(src for src, _ in loaded) == ["/plots/bytes_per_day.png", "/plots/fill_latency.png"]
    assert all(width and width > 400 for _, width in loaded), loaded
    page = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": page["width"], "height": page["height"], "scale": 1}
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                              "clip": clip})  # the whole page, not the window
    screenshot = DOCS_SCREENSHOT if os.environ.get("OBSFLOW_SCREENSHOT") == "1" else tmp_path / "status-page.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 50_000


def test_filler_page_shows_the_quick_looks(
    site: Site, server: StatusServer, browser  # type: ignore[no-untyped-def]
) -> None:
    browser.get(server.url + "filler")
    loaded = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth]);"
    )
    looks = [src for src, width in loaded if src.startswith("/quicklook/") and width and width > 400]
    assert looks == [f"/quicklook/{PROJECT}/scan_{n}.png" for n in (3, 2, 1)], loaded
