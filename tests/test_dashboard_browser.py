"""The study dashboard in headless Chromium, as a user reads it: summary cards with every count,
per-trial curves a colour per trial with a legend of trial numbers, parallel coordinates whose
labels are whole and apart, and plotly's toolbar clear of every panel title. Screenshot in
test-artifacts/dashboard.png."""

from __future__ import annotations

import pytest

from browser import browser, console_errors, open_page, screenshot  # noqa: F401 (fixture)
from test_report_study import journal, make_study  # noqa: F401 (fixture)
from vpsearch.reporting.dashboard import build_dashboard, load_definition
from vpsearch.reporting.study import load_study

pytestmark = pytest.mark.browser

RECTS = """
const rect = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
return Array.from(document.querySelectorAll(arguments[0])).map(rect);"""


def rects(driver, css: str) -> list[list[float]]:
    return driver.execute_script(RECTS, css)


def overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_dashboard_reads_as_a_user_needs(browser, journal, tmp_path):  # noqa: F811
    make_study(journal, "views")  # 18 complete trials, 1 failed, 1 pruned, 1 running
    out = tmp_path / "dash"
    build_dashboard(load_study("views", journal), journal, load_definition("study"), out)
    declared, rendered = open_page(browser, (out / "index.html").as_uri())
    assert declared == rendered and console_errors(browser) == []

    kpis = browser.find_element("css selector", ".kpis").text.split("\n")
    cards = dict(zip(kpis[1::2], kpis[0::2]))
    assert {k: cards[k] for k in ("complete", "pruned", "failed", "running")} == \
        {"complete": "18", "pruned": "1", "failed": "1", "running": "1"}

    # per-trial curves: one colour per trial, the legend names the trial numbers (and a state other than complete)
    # (textContent: a legend of 21 trials scrolls, and entries scrolled out of it have no visible text)
    legend = [e.get_attribute("textContent") for e in browser.find_elements("css selector",
                                                                             "#fig-trial_curves .legendtext")]
    assert legend[:3] == ["trial 0", "trial 1", "trial 2"] and "trial 18 (fail)" in legend
    assert "trial 19 (pruned)" in legend and "trial 20 (running)" in legend and len(legend) == 21
    colours = browser.execute_script("return Array.from(document.querySelectorAll("
                                     "'#fig-trial_curves .scatterlayer .trace .js-line')).map(p => p.style.stroke)")
    assert len(colours) == 21 and len(set(colours)) == 21

    # parallel coordinates: short labels, each inside the figure and clear of its neighbours
    fig = rects(browser, "#fig-parallel")[0]
    titles = browser.find_elements("css selector", "#fig-parallel .axis-title")
    assert [t.text for t in titles] == ["kl_anneal_type", "tfr", "tfr_decay_step", "best val PSNR (dB)"]
    boxes = rects(browser, "#fig-parallel .axis-title")
    for box in boxes:
        assert fig[0] <= box[0] and box[2] <= fig[2] and fig[1] <= box[1], (box, fig)  # not clipped
    assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])

    # plotly's toolbar (top right of each figure, on hover) covers no panel or subplot title
    bars = rects(browser, ".modebar-container")
    titles = rects(browser, ".fig-title, .panel h3, .js-plotly-plot .gtitle, .js-plotly-plot .annotation-text")
    assert len(bars) == declared and len(titles) >= declared
    assert not [(b, t) for b in bars for t in titles if overlap(b, t)]
    assert screenshot(browser, "dashboard.png").stat().st_size > 50_000
