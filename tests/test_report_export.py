"""`vpsearch export-best`: the choice of trial, the exported folder, and the retrain round trip.

The study is synthetic but its chosen trial points at a real tiny training run, so the
export copies real outputs (GIF, checkpoint, metrics) and best.yaml retrains for real.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import optuna
import pytest

from test_report_study import DISTS, curve, params, vp_attrs
from vpsearch.cli import main
from vpsearch.config import load_config
from vpsearch.search.storage import open_storage
from vpsearch.training import fit

T975_1 = 12.706204736174707  # Student t, 97.5% quantile, 1 degree of freedom


@pytest.fixture(scope="module")
def study(tiny_cfg_module, tmp_path_factory):
    """Config A (cyclical) on seeds 0, 1 with mean v - 0.1; config B (monotonic) with one lucky
    seed at v + 0.5 and one bad one: by mean A wins, by single trial B's first seed."""
    tmp = tmp_path_factory.mktemp("export")
    cfg_a = tiny_cfg_module("schedule.kl_anneal_type=cyclical", "train.seed=0")
    result = fit(cfg_a, tmp / "trial-0")
    v = result.best_psnr
    url = f"journal:{tmp / 'j.log'}"
    s = optuna.create_study(study_name="ex", storage=open_storage(url).storage, direction="maximize")
    for kl, seed, value, run in [("cyclical", 0, v, tmp / "trial-0"), ("cyclical", 1, v - 0.2, None),
                                 ("monotonic", 0, v + 0.5, None), ("monotonic", 1, v - 5.0, None)]:
        cfg = tiny_cfg_module(f"schedule.kl_anneal_type={kl}", f"train.seed={seed}")
        a = {**vp_attrs(kl, "A", seed, value, str(run or tmp / "gone")), "config": cfg.to_dict(),
             "config_hash": cfg.hash()}  # as TrialRecord stores them
        s.add_trial(optuna.trial.create_trial(value=value, params=params(kl, "A"), distributions=DISTS,
                                              user_attrs=a, intermediate_values=curve(value)))
    return url, tmp, v, cfg_a


@pytest.fixture(scope="module")
def tiny_cfg_module(pushing_root):
    from conftest import TINY_SVG

    def make(*extra: str):
        return load_config("pushing-small", [*TINY_SVG, f"data.root={pushing_root}", *extra])
    return make


def test_export_by_mean_over_seeds_writes_the_whole_folder(study, pushing_root):
    url, tmp, v, cfg_a = study
    out = tmp / "best"
    assert main(["export-best", "ex", "--storage", url, "--out", str(out)]) == 0
    env = json.loads((out / "environment.json").read_text())
    assert env["trial"] == 0 and env["seeds_of_config"] == [0, 1] and env["by"] == "mean-over-seeds"
    for name in ("best.yaml", "report.md", "report.html", "best.gif", "best.pt", "metrics.csv", "frame_psnr.csv",
                 "curves.png", "trials.csv"):
        assert (out / name).is_file(), name
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert env["git"]["commit"] == (head or "unknown (not a git checkout)")
    files = [p for p in Path(pushing_root).rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(pushing_root).parts)]
    assert env["dataset"]["path"] == str(Path(pushing_root).resolve())
    assert env["dataset"]["fingerprint"]["files"] == len(files) and len(env["dataset"]["fingerprint"]["sha256"]) == 64
    assert env["packages"]["torch"].startswith("2.") and env["checkpoint"].endswith("best.pt")
    md = (out / "report.md").read_text()
    mean, half = v - 0.1, T975_1 * (0.2 / math.sqrt(2)) / math.sqrt(2)
    assert f"| best val PSNR (dB) | {v:.2f} | {mean:.2f} [{mean - half:.2f}, {mean + half:.2f}] | 2 |" in md
    assert f"vpsearch train --config {out.resolve() / 'best.yaml'}" in md
    assert "![Prediction vs ground truth (best epoch)](best.gif)" in md and env["git"]["commit"] in md
    html = (out / "report.html").read_text()
    assert 'src="data:image/gif;base64,' in html and 'data-figure="training_curves"' in html


def test_best_yaml_loads_as_the_trials_config(study):
    """(The retrain of an exported best.yaml runs in test_report_e2e, on a real study.)"""
    url, tmp, v, cfg_a = study
    out = tmp / "roundtrip"
    assert main(["export-best", "ex", "--storage", url, "--out", str(out)]) == 0
    loaded = load_config(out / "best.yaml")
    assert loaded.name == "ex-best"
    # every field but the name, with the device the trial trained on (its record says cpu)
    assert loaded.train.device == "cpu" and Path(loaded.data.root).is_absolute()
    trained = cfg_a.model_copy(deep=True)
    trained.train.device = "cpu"
    assert loaded.hash(exclude_seed=False) == trained.hash(exclude_seed=False)
    assert (out / "best.yaml").read_text().startswith("# vpsearch export-best: study ex, trial 0 (by mean-over-seeds")


def test_export_single_best_trial_without_its_run(study):
    url, tmp, v, _ = study
    out = tmp / "single"
    assert main(["export-best", "ex", "--storage", url, "--out", str(out), "--by", "single"]) == 2  # promised files
    assert main(["export-best", "ex", "--storage", url, "--out", str(out), "--by", "single", "--without-run"]) == 0
    env = json.loads((out / "environment.json").read_text())
    assert env["trial"] == 2 and env["seeds_of_config"] == [2, 3] and env["checkpoint"] is None
    assert load_config(out / "best.yaml").schedule.kl_anneal_type == "monotonic"
    md = (out / "report.md").read_text()
    assert "is not on this machine; retrain with the command above" in md
    assert "the single trial with the highest best val PSNR" in md
    assert not (out / "best.pt").exists()
