"""The MLflow UI in headless Chromium, as `vpsearch ui` opens it: the study's runs table in the
model-training workflow with the objective, baseline, searched param and state columns, best
first; a trial's charts (lr readable), its description, and its labelled GIF and strip.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from browser import ARTIFACTS, browser, screenshot  # noqa: F401 - browser is a fixture
from vpsearch.tracking import ui

pytest_plugins = ["mlflow_server"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]
COLUMNS = ["val/psnr_best", "val/baseline_psnr", "optim.lr", "state"]


def wait_for(driver, xpath: str, timeout: float = 30.0, count: int = 1) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in driver.find_elements("xpath", xpath) if e.is_displayed()]
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{count} x {xpath} not shown within {timeout:.0f} s")


def close_assistant(driver) -> None:
    """MLflow 3 opens its assistant panel beside every page of a fresh profile: close it."""
    for e in driver.find_elements("xpath", "//button[@aria-label='Close']"):
        if e.is_displayed():
            e.click()
            time.sleep(0.5)
            return


def in_view(driver, element) -> bool:
    """Drawn inside the window (not scrolled off to the right of the table)."""
    return driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                 "return r.width > 0 && r.left >= 0 && r.right <= window.innerWidth;", element)


def header(driver, name: str):
    return wait_for(driver, f"//*[@role='columnheader']//*[normalize-space(text())='{name}']")[0]


def test_vpsearch_ui_opens_the_study_runs_with_its_columns(browser, mlflow_server, tiny_study):  # noqa: F811
    url, others = ui.study_page(mlflow_server.uri, mlflow_server.uri, None)  # what `vpsearch ui` prints
    assert others == [] and url.endswith(f"/#/experiments/{tiny_study.experiment_id}/runs?"
                                         "workflowType=machine_learning&viewStateShareKey=vpsearch")
    browser.set_window_size(1400, 900)
    browser.get(url)
    for t in tiny_study.trials:  # every trial, named by what tells it apart (`t1 lr=5e-4`)
        wait_for(browser, f"//a[.//span[text()='{t.name}']]")
    close_assistant(browser)
    time.sleep(1.0)
    body = browser.find_element("tag name", "body").text
    assert "Model training" in body and "Runs" in body
    assert "Traces\n0" not in body and "No data available" not in body  # not the GenAI overview
    for name in COLUMNS:  # the saved view's columns, all on screen without scrolling
        assert in_view(browser, header(browser, name)), name
    for state in ("COMPLETE", "PRUNED", "FAIL"):  # the state tag, visible per trial
        assert state in body, state
    # best first: the study's row (its best so far) and the best trial share the top value
    rows = browser.execute_script("""
        return Array.from(document.querySelectorAll('[role=gridcell] a'))
          .filter(a => a.offsetParent !== null && a.textContent.trim())
          .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
          .map(a => a.textContent.trim());""")
    complete = tiny_study.by_state("COMPLETE")
    best = max(complete, key=lambda t: t.best_psnr)
    # among the study's row and the complete trials (a pruned or failed trial's partial best may
    # rank above: its first epoch can beat a finished run), the study's row and the best lead
    ranked = [r for r in rows if r in {tiny_study.name, *(t.name for t in complete)}]
    assert set(ranked[:2]) == {tiny_study.name, best.name}, rows
    assert f"{best.best_psnr:.4f}"[:5] in body  # the objective column shows the values (cut by the UI)
    shot = screenshot(browser, "mlflow-study-runs.png", full_page=False)
    assert shot.stat().st_size > 10_000


def test_a_trial_shows_readable_charts_its_description_and_labelled_pictures(browser, mlflow_server,  # noqa: F811
                                                                             tiny_study):
    trial = max(tiny_study.by_state("COMPLETE"), key=lambda t: t.best_psnr)
    base = f"{mlflow_server.uri}/#/experiments/{tiny_study.experiment_id}/runs/{trial.run_id}"
    browser.set_window_size(1400, 2600)  # the page draws only the chart sections in view
    browser.get(f"{base}/model-metrics?workflowType=machine_learning")
    wait_for(browser, "//*[contains(@class, 'js-plotly-plot')]//*[name()='svg']", count=2)
    close_assistant(browser)
    for chart in ("loss", "psnr", "kl_weight", "tfr", "log10_lr"):
        wait_for(browser, f"//*[normalize-space(text())='{chart}']")
    time.sleep(1.0)  # let the last charts finish drawing before the picture
    body = browser.find_element("tag name", "body").text
    for legend in ("train/loss", "val/psnr", "schedule/kl_weight", "schedule/tfr", "train/log10_lr"):
        assert f"{trial.name} ({legend})" in body, legend
    # lr 2e-3 charts as a flat 0 on a +-1 axis; its log10 sits at -2.7 on an axis labelled around it
    ticks = [e.text for e in browser.find_elements("xpath", "//*[normalize-space(text())='log10_lr']/ancestor::*"
                                                             "[.//*[contains(@class, 'js-plotly-plot')]][1]"
                                                             "//*[contains(@class, 'ytick')]/*[name()='text']")]
    assert ticks and all(t.replace("\u2212", "-").startswith("-") for t in ticks), ticks  # -3, -2.5, ...
    assert screenshot(browser, "mlflow-trial-charts.png", full_page=False).stat().st_size > 10_000

    browser.set_window_size(1400, 1000)
    browser.get(f"{base}/overview?workflowType=machine_learning")
    wait_for(browser, "//*[contains(text(), 'predicted frame index')]")  # the run documents its axes
    close_assistant(browser)
    screenshot(browser, "mlflow-trial-overview.png", full_page=False)

    for rel, shot in (("samples/best.gif", "mlflow-trial-gif.png"), ("samples/best_strip.png", "mlflow-trial-strip.png")):
        browser.get("about:blank")  # a full load: a hash change alone keeps the previous artifact on screen
        browser.get(f"{base}/artifacts/{rel}?workflowType=machine_learning")
        close_assistant(browser)
        local = Image.open(trial.run_dir / rel)
        size, deadline = None, time.monotonic() + 30
        while time.monotonic() < deadline and size != list(local.size):  # the page swaps the previous image out
            time.sleep(0.3)
            imgs = [i for i in browser.find_elements("xpath", "//img[contains(@src, 'blob:')]") if i.is_displayed()]
            img = imgs[0] if imgs else None
            size = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                          img) if img else None
        assert size == list(local.size), (rel, size)  # the file, shown whole
        # what the browser decoded: a white label band with dark text over the pictures
        dark = browser.execute_script("""
            const img = arguments[0], c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = 16;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, c.width, 16).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (Math.max(d[i], d[i + 1], d[i + 2]) < 100) n++;
            return n;""", img)
        assert dark > 40, (rel, dark)
        time.sleep(0.5)
        assert screenshot(browser, shot, full_page=False).stat().st_size > 10_000
    assert Path(ARTIFACTS).is_dir()
