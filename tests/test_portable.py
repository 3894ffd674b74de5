"""A runs folder is portable: copied elsewhere, every command works on the copy and the original is
never touched (trial folders, the journal, the embedded MLflow store and its artifacts move together)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from test_study_run import QUIET, cli, journal, open_study, run_cli, write_study

from vpsearch.search.records import StudyRecord, TrialRecord

pytestmark = pytest.mark.slow


def newer_than(folder: Path, stamp: float) -> list[str]:
    """What `find FOLDER -newer STAMP` would print."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            if p.lstat().st_mtime > stamp:
                out.append(str(p))
    return out


def test_a_copied_runs_folder_works_from_its_new_place(tmp_path, pushing_root):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    study_file = write_study(tmp_path / "s.yaml", pushing_root, budget={"n_trials": 2, "epochs": 1, "steps_per_epoch": 2})
    quiet = [x for x in QUIET if x not in ("--tracking-uri", "off")]  # the embedded store, on purpose
    r = run_cli("study", "run", str(study_file), "--root", str(a / "runs"), *quiet, cwd=a)
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.copytree(a, b, symlinks=True)
    # every file of the original as the study left it; a later write moves a file's mtime past this
    stamp = max(p.lstat().st_mtime for p in a.rglob("*"))
    root = b / "runs"
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)

    def vp(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(cli(*args), capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)

    study = open_study(journal(root), "tiny")
    assert StudyRecord.of(study).mlflow_tracking_uri == "embedded"
    assert all(not Path(TrialRecord.of(t).run_dir).is_absolute() for t in study.get_trials())

    st = vp("study", "status", "tiny", "--root", str(root))
    assert st.returncode == 0 and "2/2 finished" in st.stdout, st.stderr
    rep = vp("report", "tiny", "--root", str(root))
    assert rep.returncode == 0 and f"({root.resolve() / 'mlflow' / 'mlflow.db'}" not in rep.stdout, rep.stderr
    assert "logged to MLflow run" in rep.stdout and (root / "studies" / "tiny" / "report" / "report.md").is_file()
    best = vp("export-best", "tiny", "--root", str(root), "--no-test")
    assert best.returncode == 0, best.stderr
    assert (root / "studies" / "tiny" / "best" / "best.gif").is_file()
    dash = vp("dashboard", "tiny", "--root", str(root))
    assert dash.returncode == 0, dash.stderr

    # the copy's MLflow store points at the copy's artifacts, for clients and for the UI server
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    run_id = TrialRecord.of(study.get_trials()[0]).mlflow_run_id
    assert client.get_run(run_id).info.artifact_uri.startswith((root / "mlflow" / "artifacts").resolve().as_uri())
    assert "config.yaml" in {f.path for f in client.list_artifacts(run_id)}
    ui = subprocess.Popen(cli("ui", "--root", str(root), "--port", "0"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=env, start_new_session=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "MLflow UI for" not in line and time.monotonic() < deadline:
            line = ui.stdout.readline()
        url = __import__("re").search(r"http://[\w.]+:\d+", line).group(0)  # the server, not the view's page
        listed = json.load(urllib.request.urlopen(f"{url}/api/2.0/mlflow/artifacts/list?run_id={run_id}", timeout=30))
        assert "config.yaml" in {f["path"] for f in listed["files"]}
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(30)

    # resume the study there with a larger budget
    grown = study_file.read_text().replace("n_trials: 2", "n_trials: 3")
    (tmp_path / "s3.yaml").write_text(grown)
    again = vp("study", "run", str(tmp_path / "s3.yaml"), "--root", str(root), *quiet)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(open_study(journal(root), "tiny").get_trials()) == 3
    assert newer_than(a, stamp) == []  # the original was not touched
