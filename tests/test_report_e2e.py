"""A tiny real study (the study driver, real training) reported, exported and retrained.

`vpsearch study run` -> `vpsearch report` -> `vpsearch export-best` -> `vpsearch train
--config best.yaml`, all through the real entry point; tables checked against the values
the driver stored; the HTML opened in headless Chromium.
"""

from __future__ import annotations

import json
import math

import optuna
import pandas as pd
import pytest

from browser import browser, screenshot  # noqa: F401 (fixture)
from conftest import TINY_SVG
from test_report_browser import open_offline
from test_report_cli import vp
from vpsearch.cli import main
from vpsearch.config import load_config
from vpsearch.reporting.report import REPORT_FIGURES
from vpsearch.search.records import TrialRecord
from vpsearch.search.storage import open_storage

pytestmark = pytest.mark.slow

# the study driver owns these; the rest of the tiny model goes into the study's overrides
DRIVER_OWNED = ("train.epochs", "train.steps_per_epoch", "train.progress", "train.num_threads")


@pytest.fixture(scope="module")
def ran(pushing_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    overrides = [o for o in TINY_SVG if not o.startswith(DRIVER_OWNED)] + [f"data.root={pushing_root}"]
    study_yaml = tmp / "tiny.yaml"
    study_yaml.write_text(
        "name: tiny\nbase: pushing-small\noverrides:\n" + "".join(f"  - {o}\n" for o in overrides)
        + "search_space:\n  schedule.kl_anneal_type: {type: categorical, choices: [none, cyclical]}\n"
        + "sampler: grid\nbudget: {epochs: 2, steps_per_epoch: 2}\nrepeats: 2\nworkers: 1\n")
    root = tmp / "runs"
    proc = vp("study", "run", study_yaml, "--root", root, "--tracking-uri", "off", cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name="tiny", storage=open_storage(f"journal:{root / 'optuna-journal.log'}").storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    return tmp, root, study


def test_report_tables_match_the_stored_trials(ran):
    tmp, root, study = ran
    assert main(["report", "tiny", "--root", str(root)]) == 0
    out = root / "studies" / "tiny" / "report"
    cells = pd.read_csv(out / "strategies.csv").set_index("kl")
    assert set(cells.index) == {"none", "cyclical"}
    seeds = {}
    for kl in ("none", "cyclical"):
        trials = [t for t in study.trials if TrialRecord.of(t).config["schedule"]["kl_anneal_type"] == kl]
        xs = [TrialRecord.of(t).results.val_psnr_best for t in trials]
        seeds[kl] = sorted(TrialRecord.of(t).seed for t in trials)
        mean = sum(xs) / 2
        half = 12.706204736174707 * (abs(xs[0] - xs[1]) / math.sqrt(2)) / math.sqrt(2)  # sd of 2 = |a-b|/sqrt(2)
        row = cells.loc[kl]
        assert row["n"] == "1 x 2" and (row["psnr_mean"], row["psnr_ci_high"]) == pytest.approx((mean, mean + half))
    assert seeds["none"] == seeds["cyclical"]  # repeats share seeds across configurations ...
    assert list(cells["test"].fillna("")) == ["", "paired"]  # ... so the comparison is paired
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4 and trials["run_dir"].map(lambda p: (root / p).is_dir()).all()  # relative to the root


def test_export_best_retrains_as_is(ran, capsys):
    tmp, root, study = ran
    assert main(["export-best", "tiny", "--root", str(root)]) == 0
    best = root / "studies" / "tiny" / "best"
    env = json.loads((best / "environment.json").read_text())
    trial = study.trials[env["trial"]]
    cfg = load_config(best / "best.yaml")  # loads and validates
    rec = TrialRecord.of(trial)
    # the trial's config, as is, with the device and threads it trained with
    expected = {**rec.config, "name": "tiny-best"}
    expected["train"] = {**expected["train"], "device": rec.device, "num_threads": rec.threads}
    assert cfg.to_dict() == expected
    for name in ("best.gif", "best.pt", "metrics.csv", "report.html", "report.md"):
        assert (best / name).is_file(), name
    capsys.readouterr()
    assert main(["train", "--config", str(best / "best.yaml"), "--out", str(tmp / "retrain"), "--json"]) == 0
    # the same config and seed reproduce the trial's best PSNR
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["best_val_psnr"] == pytest.approx(TrialRecord.of(trial).results.val_psnr_best, abs=1e-3)


@pytest.mark.browser
def test_real_study_pages_render(ran, browser):  # noqa: F811
    tmp, root, _ = ran
    report = root / "studies" / "tiny" / "report" / "report.html"
    if not report.is_file():
        assert main(["report", "tiny", "--root", str(root)]) == 0
    assert open_offline(browser, report) == len(REPORT_FIGURES) - 2  # no replay was run; importances need 10 trials
    screenshot(browser, "e2e_report.png")
    assert main(["dashboard", "tiny", "--root", str(root)]) == 0
    assert open_offline(browser, root / "studies" / "tiny" / "dashboard" / "index.html") > 0
    screenshot(browser, "e2e_dashboard.png")
