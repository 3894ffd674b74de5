"""The same commands on a laptop and in the cluster: with no --storage / --tracking-uri / --root
flag, every `vpsearch` command finds the study through VPSEARCH_STORAGE, logs through
MLFLOW_TRACKING_URI and writes under VPSEARCH_ROOT (the PostgreSQL + MLflow-server version of
this runs in test_deploy_topology.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest
from test_study_run import cli, write_study

pytestmark = pytest.mark.slow


def test_every_command_takes_storage_tracking_and_root_from_the_environment(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root, budget={"n_trials": 1, "epochs": 1,
                                                                         "steps_per_epoch": 1})
    cluster = tmp_path / "cluster"  # stands for the shared servers
    db = cluster / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    env = {**os.environ, "VPSEARCH_STORAGE": f"journal:{cluster / 'optuna.log'}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "VPSEARCH_ROOT": str(tmp_path / "machine")}
    cwd = tmp_path / "elsewhere"  # nothing may land in the current directory
    cwd.mkdir()

    def run(*args: str) -> str:
        r = subprocess.run(cli(*args), capture_output=True, text=True, timeout=180, env=env, cwd=cwd)
        assert r.returncode == 0, f"vpsearch {' '.join(args)}: {r.stdout}{r.stderr}"
        return r.stdout

    assert "study tiny created in journal:" in run("study", "create", str(study_file))
    assert "ran 1 trials" in run("worker", "--study", "tiny", "--device", "cpu", "--threads", "1")
    assert json.loads(run("study", "status", "tiny", "--json"))["counts"]["complete"] == 1
    run("report", "tiny")
    run("export-best", "tiny")
    run("dashboard", "tiny")

    machine = tmp_path / "machine" / "studies" / "tiny"
    assert (machine / "trials" / "0" / "metrics.csv").is_file()
    assert {"report", "best", "dashboard"} <= {p.name for p in machine.iterdir()}
    assert not list(cwd.iterdir())
    with sqlite3.connect(db) as con:  # the trial's run and the study's parent run went to that store
        names = {n for (n,) in con.execute("SELECT name FROM runs")}
    assert len(names) == 2 and "tiny" in names and (names - {"tiny"}).pop().startswith("t0 lr=")
