"""The tracking server goes away in the middle of a trial: training goes on, nothing is lost.

Two workers of one study share the outage. Worker A's process ends while the server is
down: its journal stays in the spool and `vpsearch sync` delivers it later. Worker B
starts a trial during the outage (its run cannot even be created yet) and stays up: its
sender flushes everything by itself when the server is back on the same port and store.
"""

from __future__ import annotations

import csv
import logging

import pytest

from vpsearch.cli import main
from vpsearch.tracking import make_tracker, names
from vpsearch.tracking.journal import pending_streams, spool_root
from vpsearch.training import Reporter

from mlflow_server import MlflowServer, run_trial, tiny_config

pytestmark = pytest.mark.slow


class StopServerAfter(Reporter):
    """Stops the server once the trial has reported an epoch (the training thread goes on)."""

    def __init__(self, server: MlflowServer, epoch: int):
        self.server, self.epoch = server, epoch

    def report(self, epoch: int, metrics: dict[str, float]) -> bool:
        if epoch == self.epoch and self.server.process is not None:
            self.server.stop()
        return False


def assert_trial_arrived(client, trial, parent_run_id: str) -> None:
    run = client.get_run(trial.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[names.MLFLOW_PARENT] == parent_run_id
    assert run.data.params == names.params_from_flat(trial.config.flat())
    rows = list(csv.DictReader((trial.run_dir / "metrics.csv").open()))
    assert len(rows) == trial.config.train.epochs
    for column, name in names.EPOCH_METRICS.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(trial.run_id, name))
        assert history == [(int(r["epoch"]), float(r[column])) for r in rows if r[column] != ""], name
    files = {a.path for a in client.list_artifacts(trial.run_id)}
    assert {"config.yaml", "metrics.csv", "frame_psnr.csv", "plots", "samples", "frame_psnr",
            "checkpoints"} <= files
    frames = {a.path for a in client.list_artifacts(trial.run_id, "frame_psnr")}
    assert frames == {f"frame_psnr/epoch_{e}.csv" for e in range(trial.config.train.epochs)}


def test_outage_mid_trial_loses_nothing(tmp_path, pushing_root, caplog, capsys):
    server = MlflowServer(tmp_path / "server").start()
    root = tmp_path / "runs"
    try:
        with caplog.at_level(logging.WARNING, logger="vpsearch.tracking"):
            worker_a = make_tracker(server.uri, root, "outage")
            parent = worker_a.ensure_parent({"name": "outage"}, "tpe", "journal:/x.log")
            worker_b = make_tracker(server.uri, root, "outage")
            worker_b.ensure_parent({"name": "outage"}, "tpe", "journal:/x.log", parent_run_id=parent)

            cfg = tiny_config(pushing_root, "train.epochs=3", "train.seed=11")
            a = run_trial(worker_a, 0, cfg, root / "a", StopServerAfter(server, epoch=0))
            assert a.state == "COMPLETE" and server.process is None  # trained through the outage
            assert a.run_id is not None  # created before the outage
            worker_a.close(timeout=2)  # the process ends while the server is down
            assert "vpsearch sync --root" in caplog.text

            b = run_trial(worker_b, 1, tiny_config(pushing_root, "train.epochs=3", "train.seed=12"), root / "b")
            assert b.state == "COMPLETE" and b.run_id is None  # its run could not be created yet
            assert "unreachable" in caplog.text

            server.start()  # same port, same store
            worker_b.close(timeout=60)  # B is still running: its sender flushes by itself
            assert "is back" in caplog.text
        client = server.client()
        assert b.run_id is not None  # created late, once the server answered
        assert_trial_arrived(client, b, parent)
        assert client.get_run(b.run_id).data.tags[names.TAG_STATE] == "COMPLETE"

        left = list(pending_streams(spool_root(root)))
        assert {s.meta["run_name"] for s in left} == {"t0", "outage"}  # A's trial and parent-run ops
        capsys.readouterr()
        assert main(["sync", "--root", str(root)]) == 0
        out = capsys.readouterr().out
        assert "t0 (" in out and "runs complete" in out
        assert list(pending_streams(spool_root(root))) == []
        assert_trial_arrived(client, a, parent)
        assert client.get_run(parent).info.status == "FINISHED"  # A created it, its end was spooled
        assert len(client.search_runs([client.get_run(parent).info.experiment_id])) == 3  # no twins
    finally:
        server.stop()

