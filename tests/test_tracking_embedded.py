"""The embedded default (sqlite + artifact folder under the runs root) and `vpsearch ui` on it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from vpsearch.tracking import make_tracker, names
from vpsearch.tracking.ui import free_port

from mlflow_server import run_trial, tiny_config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def embedded(pushing_root, tmp_path_factory):
    """One trial tracked with uri=None and no MLFLOW_TRACKING_URI, from a scratch cwd."""
    work = tmp_path_factory.mktemp("embedded")
    old_env, old_cwd = os.environ.pop("MLFLOW_TRACKING_URI", None), Path.cwd()
    os.chdir(work)
    try:
        tracker = make_tracker(None, work / "runs", "embedded-study")
        parent = tracker.ensure_parent({"name": "embedded-study"}, "random", "journal:runs/j.log")
        trial = run_trial(tracker, 0, tiny_config(pushing_root), work / "runs" / "trials" / "0")
        tracker.close()
    finally:
        os.chdir(old_cwd)
        if old_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
    return work, tracker.uri, parent, trial


def test_embedded_store_lives_under_the_runs_root(embedded):
    work, uri, parent, trial = embedded
    assert uri == f"sqlite:///{work / 'runs' / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(trial.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[names.MLFLOW_PARENT] == parent
    assert len(client.get_metric_history(trial.run_id, "val/psnr")) == trial.config.train.epochs
    folder = work / "runs" / "mlflow" / "artifacts" / "embedded-study" / trial.run_id / "artifacts"
    assert (folder / "config.yaml").read_bytes() == (trial.run_dir / "config.yaml").read_bytes()
    assert (folder / "checkpoints" / "best.pt").is_file() and (folder / "samples" / "best.gif").is_file()
    assert not (work / "mlruns").exists()  # nothing leaks into the current directory
    assert not any((work / "runs" / "mlflow-spool").iterdir())  # all delivered, journal cleaned


def _read_url(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "http://" in line:
            return line.split("http://", 1)[1].split()[0]
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"vpsearch ui printed no URL (exit {proc.poll()})")


def test_vpsearch_ui_serves_the_embedded_store(embedded):
    work, _, parent, trial = embedded
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "vpsearch.cli", "ui", "--root", str(work / "runs"),
                             "--port", str(port), "--no-browser"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        page = "http://" + _read_url(proc, 90)
        url = f"http://127.0.0.1:{port}"
        exp = MlflowClient(tracking_uri=embedded[1]).get_experiment_by_name("embedded-study").experiment_id
        # the study's runs in the model-training workflow, not MLflow's GenAI overview
        assert page == f"{url}/#/experiments/{exp}/runs?workflowType=machine_learning"
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/runs/get?run_id={trial.run_id}", timeout=10) as r:
            run = json.load(r)["run"]
        assert run["info"]["run_name"] == "t0"  # no searched params given: the number alone
        with urllib.request.urlopen(f"{url}/get-artifact?path=config.yaml&run_uuid={trial.run_id}", timeout=10) as r:
            assert r.read() == (trial.run_dir / "config.yaml").read_bytes()  # artifacts are browsable
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    with socket.socket() as s:  # the server went with it: the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_vpsearch_ui_on_a_busy_port_is_a_one_line_error(tmp_path, capsys):
    from vpsearch.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["ui", "--root", str(tmp_path), "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_sync_with_nothing_to_do(tmp_path, capsys):
    from vpsearch.cli import main

    assert main(["sync", "--root", str(tmp_path)]) == 0
    assert "delivered 0 operations" in capsys.readouterr().out
