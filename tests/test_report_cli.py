"""`vpsearch report` end to end: where files go, edge cases, one-line errors, MLflow logging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

from test_report_study import add_unfinished, make_study
from vpsearch.cli import main
from vpsearch.search.records import write_study
from vpsearch.search.storage import open_storage

REPO = Path(__file__).resolve().parent.parent


def vp(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process (PYTHONPATH: the checkout, installed or not)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "vpsearch.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture()
def root(tmp_path, monkeypatch) -> Path:
    """A runs root whose default journal holds the synthetic grid study."""
    monkeypatch.delenv("VPSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    make_study(f"journal:{tmp_path / 'runs' / 'optuna-journal.log'}", "grid")
    return tmp_path / "runs"


def test_report_defaults_to_the_study_folder(root, capsys):
    assert main(["report", "grid", "--root", str(root)]) == 0
    out = root / "studies" / "grid" / "report"
    for name in ("report.md", "report.html", "strategies.csv", "grid.csv", "strategies_kl.csv", "strategies_tf.csv",
                 "trials.csv", "importances.csv"):
        assert (out / name).is_file(), name
    printed = capsys.readouterr().out
    assert "18 complete, 1 pruned, 1 fail, 1 running" in printed
    assert "not logged to MLflow: the study has no parent run" in printed
    md = (out / "report.md").read_text()
    # the verdict first; cyclical | tfr 1 (25.17) lost a trial to divergence, so the best complete strategy leads
    assert md.split("\n")[2] == ("> The best strategy beats copying the last context frame: 24.20 dB vs 20.00 dB on "
                                  "the same validation sequences (+4.20 dB). Best strategy: KL cyclical, teacher "
                                  "forcing tfr 0.5 fixed: 24.20 dB [95% CI over seeds 23.95, 24.45], n = 1 x 3 "
                                  "(configurations x seeds). Of the 2 other complete strategies, it is significantly "
                                  "better than 2; 3 more lost trials to pruning or failure and are not compared."
                                  " By KL annealing alone: cyclical leads (24.68 vs 23.60 dB for none) (both "
                                  "incomplete: survivors' means). By teacher forcing alone: tfr 1 -0.25/ep after ep 1 "
                                  "leads (23.73 vs 22.76 dB for tfr 0.5 fixed) (both incomplete: survivors' means).")
    assert "| 18 | FAIL |" in md and "non-finite loss at epoch 1" in md and "| 20 | RUNNING |" in md


def test_report_storage_flag_and_out(root, tmp_path, capsys):
    url = f"journal:{root / 'optuna-journal.log'}"
    assert main(["report", "grid", "--storage", url, "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.html").is_file()


def test_no_completed_trial_is_one_line_exit_2(tmp_path, capsys):
    journal = tmp_path / "runs" / "optuna-journal.log"
    study = optuna.create_study(study_name="waiting", storage=open_storage(f"journal:{journal}").storage)
    add_unfinished(study)
    line = ("vpsearch: error: study 'waiting' has no completed trial yet (3 trials: 0 complete, 1 pruned, "
            "1 fail, 1 running); nothing to report")
    proc = vp("report", "waiting", "--root", tmp_path / "runs", cwd=tmp_path)  # the real entry point
    assert (proc.returncode, proc.stderr.strip()) == (2, line)
    assert main(["export-best", "waiting", "--root", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == line
    assert not (tmp_path / "runs" / "studies" / "waiting" / "report").exists()


@pytest.mark.parametrize("args,needle", [
    (["report", "nope"], "study 'nope' not found"),
    (["report", "grid", "--storage", "journal:/no/such.log"], "no such journal file"),
    (["dashboard", "grid", "--definition", "nope"], "dashboard definition 'nope'"),
])
def test_user_errors(root, args, needle, capsys):
    assert main([*args, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


class FakeTracker:
    calls: list = []

    def __init__(self, uri, root, name):
        self.calls.append(("make", uri, name))

    def ensure_parent(self, cfg, sampler, storage, parent_run_id=None):
        self.calls.append(("parent", sampler, parent_run_id))
        return parent_run_id

    def log_study_artifacts(self, paths, artifact_path="report"):
        self.calls.append(("log", sorted(Path(p).name for p in paths), artifact_path))

    def close(self):
        self.calls.append(("close",))


def test_report_is_logged_to_the_parent_run(tmp_path, monkeypatch, capsys):
    import vpsearch.tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    FakeTracker.calls = []
    monkeypatch.setattr(vpsearch.tracking, "make_tracker", FakeTracker)
    url = f"journal:{tmp_path / 'j.log'}"
    make_study(url, "tracked", parent_run_id="abc123")
    assert main(["report", "tracked", "--storage", url, "--out", str(tmp_path / "r")]) == 0
    make, parent, log, close = FakeTracker.calls
    assert make == ("make", "sqlite:///nowhere.db", "tracked")  # the URI the study recorded
    assert parent == ("parent", "grid", "abc123")
    # the compact report goes to MLflow; the interactive page and its plotly.js stay on disk
    assert log[2] == "report" and {"report.md", "strategies.csv", "trials.csv"} <= set(log[1])
    assert not [n for n in log[1] if n.endswith((".html", ".js"))]
    assert close == ("close",)
    assert "logged to MLflow run abc123" in capsys.readouterr().out


def test_tracking_trouble_is_a_warning_not_a_failure(tmp_path, monkeypatch, capsys):
    import vpsearch.tracking

    def broken(*a, **k):
        raise ConnectionError("tracking server http://127.0.0.1:9 unreachable")

    monkeypatch.setattr(vpsearch.tracking, "make_tracker", broken)
    url = f"journal:{tmp_path / 'j.log'}"
    make_study(url, "tracked", parent_run_id="abc123")
    assert main(["report", "tracked", "--storage", url, "--out", str(tmp_path / "r"),
                 "--tracking-uri", "http://127.0.0.1:9"]) == 0
    out = capsys.readouterr().out
    assert "warning: report not logged to MLflow (http://127.0.0.1:9): tracking server" in out
    assert (tmp_path / "r" / "report.html").is_file()


def test_report_lands_in_a_real_mlflow_parent_run(tmp_path, monkeypatch, capsys):
    """The embedded store (sqlite + artifact folder): the files arrive under report/ of the parent run."""
    from vpsearch.tracking import make_tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    tracker = make_tracker(uri, tmp_path, "real")
    parent = tracker.ensure_parent({"name": "real"}, "grid", "journal:x")
    tracker.close()
    url = f"journal:{tmp_path / 'j.log'}"
    study = make_study(url, "real", values={("cyclical", "A"): [24.0, 24.4], ("none", "A"): [23.0, 23.5]},
                       others=False)
    write_study(study, mlflow_parent_run_id=parent, mlflow_tracking_uri=uri)
    assert main(["report", "real", "--storage", url, "--out", str(tmp_path / "r"), "--root", str(tmp_path)]) == 0
    assert f"logged to MLflow run {parent}" in capsys.readouterr().out
    from mlflow import MlflowClient
    names = {Path(a.path).name for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report.md", "strategies.csv", "trials.csv"} <= names and not [n for n in names if n.endswith(".js")]


def test_trials_csv_of_a_study_without_mlflow_or_driver_attrs(tmp_path):
    url = f"journal:{tmp_path / 'j.log'}"
    study = optuna.create_study(study_name="plain", storage=open_storage(url).storage, direction="maximize")
    study.optimize(lambda t: 20 + t.suggest_float("optim.lr", 0, 1), n_trials=4)
    assert main(["report", "plain", "--storage", url, "--out", str(tmp_path / "r")]) == 0
    cells = pd.read_csv(tmp_path / "r" / "strategies.csv")
    assert cells.loc[0, "n"] == "4 x 1" and cells.loc[0, "psnr_mean"] == pytest.approx(
        sum(t.value for t in study.trials) / 4)
