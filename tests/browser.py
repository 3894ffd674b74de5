"""Headless Chromium for page tests: a driver fixture and helpers any test module can use.

    from browser import browser, open_page, figure_counts, console_errors, screenshot  # noqa: F401

Debian's chromium and chromedriver (/usr/bin); tests are skipped where they are missing.
Screenshots go to test-artifacts/ at the repository root (git-ignored), so a CI run keeps
them as artifacts and a person can look at what the test saw.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# The network is closed: nothing may reach out (updates, sync, QUIC probes), and the GPU is
# not there. A fresh profile per driver keeps runs independent.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def have_chromium() -> bool:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        return False
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return True


def make_driver(profile: Path, width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_argument(f"--window-size={width},{height}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """One headless Chromium for the session (starting one costs a second or two)."""
    if not have_chromium():
        pytest.skip("needs Debian chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")
    profile = Path(tempfile.mkdtemp(prefix="vpsearch-chromium-"))
    driver = make_driver(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def figure_counts(driver) -> tuple[int, int]:
    """(declared, rendered): figure containers on the page, and those holding a drawn plot.

    A plotly figure is drawn when its div became .js-plotly-plot with an <svg> inside."""
    declared = driver.execute_script("return document.querySelectorAll('[data-figure]').length")
    rendered = driver.execute_script(
        "return Array.from(document.querySelectorAll('[data-figure] .js-plotly-plot'))"
        ".filter(d => d.querySelector('svg.main-svg') !== null).length")
    return int(declared), int(rendered)


def wait_rendered(driver, timeout: float = 30.0) -> tuple[int, int]:
    """Wait until the page is loaded and every declared figure is drawn; returns figure_counts."""
    deadline = time.monotonic() + timeout
    counts = (0, 0)
    while time.monotonic() < deadline:
        try:
            if driver.execute_script("return document.readyState") == "complete":
                counts = figure_counts(driver)
                if counts[0] == counts[1]:
                    break
        except Exception:  # a page reloading under the script; look again
            pass
        time.sleep(0.2)
    return counts


def open_page(driver, url: str, timeout: float = 30.0) -> tuple[int, int]:
    """Load url and wait until every declared figure is drawn (or timeout); returns figure_counts."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    return wait_rendered(driver, timeout)


def console_errors(driver) -> list[str]:
    """Console messages of level SEVERE since the last call (errors and uncaught exceptions)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver, name: str, full_page: bool = True) -> Path:
    """Save a PNG under test-artifacts/; full_page grows the window to the page height first."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    size = driver.get_window_size()
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(int(height) + 40, 12000))
        time.sleep(0.3)  # let plotly's responsive relayout settle
    driver.save_screenshot(str(path))
    if full_page:
        driver.set_window_size(size["width"], size["height"])
    return path
