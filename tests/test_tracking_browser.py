"""The MLflow UI, in headless Chromium, shows the study's parent run with its trial runs nested
under it, and a trial's metric charts. Screenshots go to test-artifacts/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from browser import ARTIFACTS, browser, screenshot  # noqa: F401 - browser is a fixture

pytest_plugins = ["mlflow_server"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def wait_for(driver, xpath: str, timeout: float = 30.0, count: int = 1) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in driver.find_elements("xpath", xpath) if e.is_displayed()]
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{count} x {xpath} not shown within {timeout:.0f} s")


def tidy(driver) -> None:
    """Model-training mode and no assistant panel: the view a user of vpsearch wants."""
    for xpath in ("//button[@aria-label='Close']", "//*[normalize-space(text())='Model training']"):
        for e in driver.find_elements("xpath", xpath):
            if e.is_displayed():
                e.click()
                time.sleep(0.3)
                break


def show_study_runs(driver, base_url: str, experiment_id: str, study: str, n_trials: int) -> list[str]:
    """Open the experiment's runs table, expand the parent run; returns the trial names shown."""
    driver.get(f"{base_url}/#/experiments/{experiment_id}/runs")
    wait_for(driver, f"//a[.//span[text()='{study}']]")
    tidy(driver)
    expand = wait_for(driver, f"//a[.//span[text()='{study}']]/ancestor::div[@role='gridcell']//button")[0]
    expand.click()  # trial runs are nested under the study's run, collapsed at first
    links = wait_for(driver, "//a[.//span[starts-with(text(), 'trial-')]]", count=n_trials)
    return sorted(e.text for e in links)


def choose_columns(driver, names: list[str]) -> None:
    """Toggle runs-table columns (metrics, params, tags, attributes) by their exact names."""
    from selenium.webdriver.common.keys import Keys

    wait_for(driver, "//button[normalize-space(.)='Columns']")[0].click()
    box = wait_for(driver, "//input[@placeholder='Search columns']")[0]
    for name in names:
        box.send_keys(Keys.CONTROL, "a", Keys.DELETE, name)
        time.sleep(0.4)
        # the search highlights matches (<strong>val/psnr_best</strong>_of_n): compare whole titles
        clicked = driver.execute_script("""
            for (const node of document.querySelectorAll('[class*="tree-treenode"]')) {
              const title = node.querySelector('[class*="tree-title"]');
              if (title && title.textContent.trim() === arguments[0]) {
                node.querySelector('[class*="tree-checkbox"]').click();
                return true;
              }
            }
            return false;""", name)
        assert clicked, f"no column {name!r} in the Columns menu"
    box.send_keys(Keys.ESCAPE)
    time.sleep(0.5)


def show_trial_charts(driver, base_url: str, experiment_id: str, run_id: str) -> None:
    """Open a trial's Model metrics tab, tall enough that every section draws its charts
    (the page draws only the sections in view)."""
    driver.set_window_size(1400, 2600)
    driver.get(f"{base_url}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics")
    wait_for(driver, "//*[contains(@class, 'js-plotly-plot')]//*[name()='svg']", count=2)
    tidy(driver)
    for chart in ("loss", "psnr", "kl_beta", "tfr"):
        wait_for(driver, f"//*[normalize-space(text())='{chart}']")
    time.sleep(1.0)  # let the last charts finish drawing before the picture


def test_mlflow_ui_shows_the_study_and_its_trials(browser, mlflow_server, tiny_study):  # noqa: F811
    names = show_study_runs(browser, mlflow_server.uri, tiny_study.experiment_id, tiny_study.name,
                            len(tiny_study.trials))
    assert names == [f"trial-{t.number}" for t in tiny_study.trials]
    choose_columns(browser, ["Dataset", "Source", "Models", "val/psnr_best", "optim.lr", "state"])
    body = browser.find_element("tag name", "body").text
    for state in ("COMPLETE", "PRUNED", "FAIL"):  # the state tag, visible per trial
        assert state in body, state
    best = max(t.best_psnr for t in tiny_study.by_state("COMPLETE"))
    assert str(best)[:5] in body  # the best-PSNR column shows the values (digits cut by the UI)
    shot = screenshot(browser, "mlflow-study-runs.png", full_page=False)
    assert shot.stat().st_size > 10_000

    trial = tiny_study.by_state("COMPLETE")[0]
    show_trial_charts(browser, mlflow_server.uri, tiny_study.experiment_id, trial.run_id)
    body = browser.find_element("tag name", "body").text
    for legend in ("train/loss", "val/psnr", "schedule/kl_beta", "schedule/tfr", "time/epoch_seconds"):
        assert f"trial-{trial.number} ({legend})" in body, legend
    shot = screenshot(browser, "mlflow-trial-charts.png", full_page=False)
    assert shot.stat().st_size > 10_000 and Path(ARTIFACTS).is_dir()
