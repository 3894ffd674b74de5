"""Dashboards: definitions, the static build, and the served page refreshing as trials finish."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest

from browser import browser, console_errors, open_page, screenshot, wait_rendered  # noqa: F401 (fixture)
from test_report_cli import REPO
from test_report_study import DISTS, add_unfinished, curve, journal, make_study, params, vp_attrs  # noqa: F401
from vpsearch.cli import main
from vpsearch.reporting.dashboard import DashboardServer, Definition, PANELS, load_definition
from vpsearch.reporting.study import ReportError
from vpsearch.search.storage import open_storage


def test_shipped_definitions_load():
    shipped = sorted((REPO / "dashboards").glob("*.yaml"))
    assert {p.stem for p in shipped} >= {"study", "compact"}
    for p in shipped:
        d = load_definition(p.stem)
        assert d.panels and all(panel.show in PANELS for panel in d.panels)
    study = load_definition("study")
    needed = {"strategy_means", "frame_psnr", "learning_curves", "schedules", "history", "parallel", "importances",
              "trial_curves", "summary", "trials"}
    assert needed <= {p.show for p in study.panels}


@pytest.mark.parametrize("text,needle", [
    ("panels: [{show: nope}]", "field panels.0.show: unknown panel 'nope'"),
    ("panels: [{show: history, colour: red}]", "field panels.0.colour: unknown key"),
    ("columns: 9\npanels: [{show: history}]", "field columns: Input should be less than or equal to 4"),
    ("panels: []", "field panels: List should have at least 1 item"),
])
def test_bad_definitions_name_the_file_and_field(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ReportError) as e:
        load_definition(str(path))
    assert str(e.value).startswith(f"{path}: ") and needle in str(e.value)


def test_static_dashboard_of_a_study_without_completed_trials(tmp_path, capsys):
    """Watching starts before anything finished: panels say what they wait for, nothing fails."""
    url = f"journal:{tmp_path / 'j.log'}"
    add_unfinished(optuna.create_study(study_name="early", storage=open_storage(url).storage))
    assert main(["dashboard", "early", "--storage", url, "--out", str(tmp_path / "d")]) == 0
    html = (tmp_path / "d" / "index.html").read_text()
    assert 'data-figure-missing="strategy_means"' in html and "no completed trial" in html
    assert 'data-figure="trial_curves"' in html and 'data-figure="timeline"' in html
    status = json.loads((tmp_path / "d" / "status.json").read_text())
    assert status["counts"]["RUNNING"] == 1 and len(status["version"]) == 12


def _add_completed(url: str, name: str, value: float) -> None:
    study = optuna.load_study(study_name=name, storage=open_storage(url).storage)
    study.add_trial(optuna.trial.create_trial(value=value, params=params("cyclical", "B"), distributions=DISTS,
                                              user_attrs=vp_attrs("cyclical", "B", 3, value),
                                              intermediate_values=curve(value)))


@pytest.mark.browser
def test_served_dashboard_renders_and_refreshes_as_trials_finish(browser, journal, tmp_path):  # noqa: F811
    make_study(journal, "live")
    definition = load_definition("study").model_copy(update={"refresh_seconds": 0.5})
    server = DashboardServer("live", journal, definition, tmp_path / "dash", port=0, poll_seconds=0.3).start()
    try:
        declared, rendered = open_page(browser, server.url)
        expected = sum(p.show not in ("summary", "strategy_grid", "strategies", "trials") for p in definition.panels)
        assert declared == rendered == expected
        assert console_errors(browser) == []
        first = browser.find_element("css selector", "#version").text
        assert "18\ncomplete" in browser.find_element("css selector", ".kpis").text
        screenshot(browser, "dashboard_served.png")

        _add_completed(journal, "live", 26.0)  # a trial finishes: the server rebuilds, the page reloads
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if browser.find_element("css selector", "#version").text != first:
                    break
            except Exception:  # the page is reloading under us
                pass
            time.sleep(0.2)
        assert wait_rendered(browser) == (expected, expected)
        kpis = browser.find_element("css selector", ".kpis").text
        assert "19\ncomplete" in kpis and "26.00\nbest val PSNR (trial 21)" in kpis
        assert console_errors(browser) == []
        screenshot(browser, "dashboard_served_after_trial.png")
    finally:
        server.stop()


def test_serve_from_the_command_line(tmp_path):
    """`vpsearch dashboard NAME --serve --port 0` prints its URL, serves, and stops on SIGTERM/Ctrl-C."""
    url = f"journal:{tmp_path / 'j.log'}"
    make_study(url, "cli", values={("none", "A"): [23.0, 23.5]}, others=False)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "vpsearch.cli", "dashboard", "cli", "--storage", url, "--serve",
                             "--port", "0", "--out", str(tmp_path / "d")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving the dashboard of study cli at http://127.0.0.1:" in line, proc.stderr.read()
        page_url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(page_url, timeout=10) as r:
            assert r.status == 200 and b"Study cli" in r.read()
            assert r.headers["Cache-Control"] == "no-store"
        with urllib.request.urlopen(page_url.replace("index.html", "status.json"), timeout=10) as r:
            assert json.load(r)["counts"]["COMPLETE"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker compose stop` sends; Ctrl-C takes the same path
        assert proc.wait(timeout=20) == 0
    err = proc.stderr.read()
    assert "Traceback" not in err and "vpsearch dashboard: stopped" in err


def test_default_definition_fields():
    d = Definition(panels=[{"show": "history"}])
    assert (d.columns, d.refresh_seconds, d.title) == (2, 5.0, "Study {study}")


def test_dashboard_of_a_study_without_trials(tmp_path):
    url = f"journal:{tmp_path / 'j.log'}"
    optuna.create_study(study_name="new", storage=open_storage(url).storage)
    assert main(["dashboard", "new", "--storage", url, "--out", str(tmp_path / "d")]) == 0
    html = (tmp_path / "d" / "index.html").read_text()
    assert 'data-figure="' not in html.split("</script>", 1)[1]  # nothing to draw yet ...
    assert "no trial has reported an epoch yet" in html  # ... and each panel says why
