"""The HTML reports in headless Chromium: every figure drawn, no console errors, nothing fetched
from the network; screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from browser import browser, console_errors, open_page, screenshot  # noqa: F401 (fixture)
from test_report_study import journal, make_study  # noqa: F401 (fixture)
from vpsearch.reporting.export import export_best
from vpsearch.reporting.report import REPORT_FIGURES, build_report
from vpsearch.reporting.study import open_study_data

pytestmark = pytest.mark.browser


def assert_offline(page: Path) -> list[str]:
    """Needs no network: plotly.js inline once (a page served alone) or from the one file beside the
    page (a report folder), and nothing else pointing anywhere. A report page stays under 1 MB.
    Returns the local files the page may load."""
    from vpsearch.reporting.html import plotly_file

    html = page.read_text()
    beside = f'<script type="text/javascript" src="{plotly_file()}"></script>'
    if beside in html:
        lib = page.parent / plotly_file()
        assert lib.stat().st_size > 1_000_000 and "plotly" in lib.read_text()[:2000].lower()
        assert len(html.encode()) < 1_000_000, f"{page.name} is {len(html.encode())} bytes"
        outside, allowed = html.replace(beside, ""), [lib.as_uri()]
    else:
        head, _, rest = html.partition('<script type="text/javascript">')
        bundle, _, tail = rest.partition("</script>")
        assert len(bundle) > 1_000_000 and "plotly" in bundle.lower()[:2000]  # the whole library, inline
        outside, allowed = head + tail, []
    assert not re.search(r"<script[^>]+src=", outside)
    assert not re.search(r"""(src|href)=["']https?://""", outside)
    assert outside.count("Plotly.newPlot") >= 1
    return allowed


def fetched(driver) -> list[str]:
    """URLs the page loaded besides itself (a self-contained page loads none)."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))")


def open_offline(driver, page: Path) -> int:
    """Open a written page; checks it needs no network, every figure drew, and the console stayed
    clean. Returns how many figures drew."""
    allowed = assert_offline(page)
    declared, rendered = open_page(driver, page.as_uri())
    assert declared == rendered
    assert console_errors(driver) == [] and [u for u in fetched(driver) if u not in allowed] == []
    return rendered


def test_study_report_renders_every_figure(browser, journal, tmp_path):  # noqa: F811
    make_study(journal, "grid")
    build_report(open_study_data("grid", journal), tmp_path)
    assert open_offline(browser, tmp_path / "report.html") == len(REPORT_FIGURES) - 1  # no replay was run
    text = browser.find_element("css selector", "body").text
    assert text.split("\n")[1].startswith("The best strategy beats copying the last context frame: 24.20 dB vs 20.00")
    # the best cell lost a trial to divergence: flagged, ranked after the complete ones
    assert "24.20 ± 0.25 (n=1 x 3) (best)" in text and "25.17 ± 0.94 (n=1 x 3) ⚑" in text
    assert screenshot(browser, "report_study.png").stat().st_size > 10_000


def test_one_trial_report_says_what_it_cannot_show(browser, journal, tmp_path):  # noqa: F811
    make_study(journal, "one", values={("cyclical", "A"): [24.2]}, others=False)
    build_report(open_study_data("one", journal), tmp_path)
    assert open_offline(browser, tmp_path / "report.html") == len(REPORT_FIGURES) - 2  # importances need variation
    missing = browser.find_elements("css selector", "[data-figure-missing]")
    assert [m.get_attribute("data-figure-missing") for m in missing] == ["importances", "replay"]
    screenshot(browser, "report_one_trial.png")


def test_export_report_renders(browser, journal, tmp_path):  # noqa: F811
    make_study(journal, "grid")
    export_best(open_study_data("grid", journal), tmp_path)
    # per-frame PSNR, learning curves, schedules (no run dir here, so no training curves)
    assert open_offline(browser, tmp_path / "report.html") == 3
    assert "vpsearch train --config" in browser.find_element("css selector", "pre").text
    screenshot(browser, "export_best.png")
