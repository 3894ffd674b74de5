"""The MLflow side of a worker that died mid-trial (killed, host gone): its process can close
neither its trial's run nor its place in the parent run, so the worker that re-runs the trial
does it (StudyTracker.lost_trial). Embedded store, in process; the same with a real server,
PostgreSQL and SIGKILL runs in test_deploy_topology.py."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from vpsearch.tracking import make_tracker, names

from mlflow_server import tiny_config

pytestmark = pytest.mark.slow
REASON = "no heartbeat for over 90s from worker gpu-7:4242 (killed or cut off); re-queued"


def test_lost_trial_ends_its_run_failed_and_counts_the_dead_worker_out(tmp_path, pushing_root):
    cfg = tiny_config(pushing_root)
    dead = make_tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "dead", "lost")
    parent = dead.ensure_parent({"name": "lost"}, "random", "postgresql://db/optuna")
    dead.worker_key = names.TAG_WORKER + "gpu-7-4242-abc123"  # as if it ran on host gpu-7, pid 4242
    dead.trial(0, cfg, {}).close("COMPLETE")  # a trial it finished: its run must stay FINISHED
    orphan = dead.trial(1, cfg, {})  # ... and the one it was training when it died
    dead.sender.wait()  # delivered, then the process "dies": no close(), no worker_done

    live = make_tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "live", "lost")
    live.ensure_parent({"name": "lost"}, "random", "postgresql://db/optuna", parent_run_id=parent)
    rerun = live.trial(2, cfg, {})  # the re-run of trial 1, on a live worker
    live.lost_trial(1, orphan.run_id, "gpu-7:4242", REASON)
    live.lost_trial(0, _run_id(live, parent, "t0"), None, "reaped after it finished")
    live.sender.wait()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    lost = client.get_run(orphan.run_id)
    assert lost.info.status == "FAILED" and lost.info.end_time
    assert lost.data.tags[names.TAG_STATE] == "FAIL" and lost.data.tags[names.TAG_REASON] == REASON
    finished = client.get_run(_run_id(live, parent, "t0"))
    assert finished.info.status == "FINISHED" and names.TAG_REASON not in finished.data.tags  # left alone
    tags = client.get_run(parent).data.tags
    assert tags[dead.worker_key] == "done" and tags[live.worker_key] == "running"
    assert client.get_run(parent).info.status == "RUNNING"  # the live worker still trains

    rerun.close("COMPLETE")
    live.close()  # the last live worker leaves: the parent ends, the dead one no longer holds it open
    assert client.get_run(parent).info.status == "FINISHED"
    assert not list((tmp_path / "live" / "mlflow-spool").iterdir())  # every journal delivered and cleaned


def _run_id(tracker, parent: str, name: str) -> str:
    runs = tracker.client.search_runs([tracker.experiment()], f"tags.`mlflow.parentRunId` = '{parent}'")
    return next(r.info.run_id for r in runs if r.info.run_name == name)


def test_a_conditional_parameter_a_trial_does_not_use_is_not_logged_as_if_set(tmp_path, pushing_root):
    cfg = tiny_config(pushing_root)
    tracker = make_tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, "cond")
    tracker.ensure_parent({"name": "cond"}, "random", "journal:x")
    # kl none: the cycle count is searched only for cyclical trials, so this one never read it
    t = tracker.trial(0, cfg, {}, {"schedule.kl_anneal_type": "none"}, frozenset({"schedule.kl_anneal_cycle"}))
    t.close("COMPLETE")
    tracker.sender.wait()
    params = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(t.run_id).data.params
    assert "schedule.kl_anneal_cycle" not in params and params["schedule.kl_anneal_ratio"] == str(
        cfg.schedule.kl_anneal_ratio)
    tracker.close()
