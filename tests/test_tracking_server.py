"""A tiny study tracked into a real `mlflow server`, read back with MlflowClient value by value."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from vpsearch.tracking import names
from vpsearch.tracking.retention import retain_checkpoint

pytest_plugins = ["mlflow_server"]
pytestmark = pytest.mark.slow

FILES = {"config.yaml", "metrics.csv", "frame_psnr.csv", "plots/curves.png", "plots/schedules.png",
         "plots/frame_psnr.png", "samples/best.gif", "samples/best_strip.png"}


def artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= artifact_files(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def children(client: MlflowClient, study) -> dict[str, object]:
    runs = client.search_runs([study.experiment_id], f"tags.`mlflow.parentRunId` = '{study.parent_run_id}'")
    return {r.info.run_name: r for r in runs}


def test_study_is_one_experiment_with_a_parent_run(mlflow_server, tiny_study, tmp_path):
    client = mlflow_server.client()
    exp = client.get_experiment(tiny_study.experiment_id)
    assert exp.name == "tiny-study"
    parent = client.get_run(tiny_study.parent_run_id)
    assert parent.info.run_name == "tiny-study" and parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags[names.TAG_ROLE] == "study" and tags[names.TAG_SAMPLER] == "random"
    assert tags[names.TAG_STORAGE] == "postgresql://vp:***@db:5432/optuna"  # password redacted
    assert "s3cret" not in str(parent.data)
    assert parent.data.params["study.space.optim.lr.log"] == "True"
    local = client.download_artifacts(tiny_study.parent_run_id, "study.yaml", str(tmp_path))
    assert yaml.safe_load(Path(local).read_text())["n_trials"] == 4


def test_trial_runs_are_nested_named_and_tagged(mlflow_server, tiny_study):
    client = mlflow_server.client()
    runs = children(client, tiny_study)
    # named by number and what was searched: the trials' lr
    assert sorted(runs) == ["t0 lr=2e-3", "t1 lr=5e-4", "t2 lr=2e-3", "t3 lr=2e-3"]
    expected = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    for t in tiny_study.trials:
        run = runs[t.name]
        assert run.info.run_id == t.run_id
        assert run.info.status == expected[t.state]
        tags = run.data.tags
        assert tags[names.TAG_TRIAL] == str(t.number) and tags[names.TAG_STATE] == t.state
        assert tags[names.TAG_SEED] == str(t.config.train.seed) and tags[names.TAG_SAMPLER] == "random"
        assert tags[names.TAG_CONFIG_HASH] == t.config.hash() and tags[names.TAG_DEVICE] == "cpu"
        assert tags[names.TAG_HOST] and tags[names.TAG_GIT_COMMIT]
        assert tags.get(names.TAG_REASON) == t.reason
    assert [t.state for t in tiny_study.trials] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert "pruned after epoch 0" in runs["t2 lr=2e-3"].data.tags[names.TAG_REASON]
    assert "loss exploded at epoch 0" in runs["t3 lr=2e-3"].data.tags[names.TAG_REASON]
    # repeats of one configuration (same params, other seeds) are found by the config hash
    same = client.search_runs([tiny_study.experiment_id],
                              f"tags.config_hash = '{tiny_study.trials[0].config.hash()}'")
    assert sorted(r.info.run_name for r in same) == ["t0 lr=2e-3", "t2 lr=2e-3", "t3 lr=2e-3"]


def test_params_are_the_full_flattened_config(mlflow_server, tiny_study):
    client = mlflow_server.client()
    for t in tiny_study.trials:
        params = client.get_run(t.run_id).data.params
        assert params == names.params_from_flat(t.config.flat())
    assert client.get_run(tiny_study.trials[1].run_id).data.params["optim.lr"] == "0.0005"


def test_epoch_metrics_match_metrics_csv_value_by_value(mlflow_server, tiny_study):
    client = mlflow_server.client()
    for t in tiny_study.trials[:3]:
        rows = list(csv.DictReader((t.run_dir / "metrics.csv").open()))
        assert len(rows) == (1 if t.state == "PRUNED" else 2)
        for column, name in names.EPOCH_METRICS.items():
            history = sorted((m.step, m.value) for m in client.get_metric_history(t.run_id, name))
            want = [(int(r["epoch"]), float(r[column])) for r in rows if r[column] != ""]
            assert history == want, (t.number, name)
    failed = tiny_study.trials[3]  # failed in report(epoch 0): its epoch 0 was logged before
    assert [m.step for m in client.get_metric_history(failed.run_id, "train/loss")] == [0]


def test_frame_psnr_artifacts_and_curve(mlflow_server, tiny_study, tmp_path):
    client = mlflow_server.client()
    for t in tiny_study.by_state("COMPLETE"):
        evaluated = [0, 1]  # eval.every=1
        files = artifact_files(client, t.run_id, "frame_psnr")
        assert files == {f"frame_psnr/epoch_{e}.csv" for e in evaluated}
        for e in evaluated:
            got = client.download_artifacts(t.run_id, f"frame_psnr/epoch_{e}.csv", str(tmp_path / t.run_id))
            lines = Path(got).read_text().splitlines()
            assert lines[0] == "frame,psnr,ssim" and len(lines) == 1 + t.config.data.n_future
            assert Path(got).read_bytes() == (t.run_dir / "frame_psnr" / f"epoch_{e}.csv").read_bytes()
        best = list(csv.DictReader((t.run_dir / "frame_psnr.csv").open()))
        curve = sorted((m.step, m.value) for m in client.get_metric_history(t.run_id, names.FRAME_PSNR))
        assert curve == [(int(r["frame"]), float(r["psnr"])) for r in best]
        copy = sorted((m.step, m.value) for m in client.get_metric_history(t.run_id, names.FRAME_COPY))
        assert copy == [(int(r["frame"]), float(r["baseline_psnr"])) for r in best]  # the line to beat, per frame
        (best_metric,) = client.get_metric_history(t.run_id, names.BEST_PSNR)
        assert best_metric.value == pytest.approx(t.best_psnr)


def test_trial_artifacts_and_top_k_checkpoint(mlflow_server, tiny_study, tmp_path):
    client = mlflow_server.client()
    complete = tiny_study.by_state("COMPLETE")
    winner = max(complete, key=lambda t: t.best_psnr)
    for t in tiny_study.trials[:3]:
        files = artifact_files(client, t.run_id)
        assert FILES <= files, t.number
        for name in ("config.yaml", "metrics.csv"):
            got = client.download_artifacts(t.run_id, name, str(tmp_path / f"{t.number}"))
            assert Path(got).read_bytes() == (t.run_dir / name).read_bytes()
        has_ckpt = "checkpoints/best.pt" in files
        assert has_ckpt == (t is winner), t.number  # keep_checkpoints=1: the best complete trial only
        tag = client.get_run(t.run_id).data.tags.get(names.TAG_CHECKPOINT)
        if t is winner:
            assert tag == "kept"
        elif t.state == "COMPLETE":
            assert tag in ("not_top_k", "deleted")  # depends on which of the two finished first
        else:
            assert tag is None  # pruned trials do not compete for a checkpoint
    got = client.download_artifacts(winner.run_id, "checkpoints/best.pt", str(tmp_path / "ckpt"))
    assert Path(got).read_bytes() == (winner.run_dir / "checkpoints" / "best.pt").read_bytes()
    failed = artifact_files(client, tiny_study.trials[3].run_id)
    assert {"config.yaml", "metrics.csv"} <= failed and not any(f.startswith("checkpoints") for f in failed)


@pytest.mark.parametrize("store", ["server", "embedded"])
def test_retention_deletes_checkpoints_that_drop_out_of_the_top_k(store, mlflow_server, tmp_path):
    """Scores arrive 10, 30, 20, 5 with k=2: 10 is uploaded then deleted when 20 arrives;
    5 is never uploaded."""
    if store == "server":
        client = mlflow_server.client()
        exp = client.create_experiment(f"retention-{tmp_path.name}")
    else:
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
        exp = client.create_experiment("retention", artifact_location=(tmp_path / "art").as_uri())
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights" * 100)
    parent = client.create_run(exp).info.run_id
    tags = {}
    for score in (10.0, 30.0, 20.0, 5.0):
        run_id = client.create_run(exp, tags={names.MLFLOW_PARENT: parent}).info.run_id
        client.log_metric(run_id, names.BEST_PSNR, score)
        tags[score] = (run_id, retain_checkpoint(client, run_id, {
            "path": str(ckpt), "score": score, "keep": 2, "experiment_id": exp, "parent_run_id": parent}))
    final = {s: client.get_run(rid).data.tags[names.TAG_CHECKPOINT] for s, (rid, _) in tags.items()}
    assert final == {10.0: "deleted", 30.0: "kept", 20.0: "kept", 5.0: "not_top_k"}
    for s, (rid, _) in tags.items():
        assert bool(client.list_artifacts(rid, "checkpoints")) == (final[s] == "kept")
    assert math.isinf(names.score(float("nan")))


def test_parent_run_ends_when_its_last_worker_leaves(mlflow_server, tmp_path):
    """The launcher creates the parent and leaves; workers keep it RUNNING until the last one closes."""
    from vpsearch.config import load_config
    from vpsearch.tracking import make_tracker

    cfg = load_config("pushing-small")
    launcher = make_tracker(mlflow_server.uri, tmp_path, "lifecycle")
    parent = launcher.ensure_parent({"name": "lifecycle"}, "tpe", "journal:x")
    launcher.close()
    client = mlflow_server.client()
    assert client.get_run(parent).info.status == "RUNNING"
    workers = [make_tracker(mlflow_server.uri, tmp_path, "lifecycle") for _ in range(2)]
    for number, w in enumerate(workers):
        w.ensure_parent({"name": "lifecycle"}, "tpe", "journal:x", parent_run_id=parent)
        w.trial(number, cfg, {}).close("FAIL", "no data in this test")
    workers[0].close()
    assert client.get_run(parent).info.status == "RUNNING"  # the other worker still trains
    workers[1].close()
    assert client.get_run(parent).info.status == "FINISHED"
    assert not list((tmp_path / "mlflow-spool").iterdir())  # everything delivered, nothing left


def test_a_lost_trial_is_ended_failed_by_the_worker_that_reruns_it(mlflow_server, tmp_path):
    """A worker dies mid-trial (never closes); the process that re-runs the trial ends the dead
    run FAILED with the reason and counts the dead worker out of the parent run."""
    import os
    import socket

    from vpsearch.config import load_config
    from vpsearch.tracking import make_tracker

    cfg = load_config("pushing-small")
    launcher = make_tracker(mlflow_server.uri, tmp_path, "lost")
    parent = launcher.ensure_parent({"name": "lost"}, "tpe", "journal:x")
    launcher.close()
    dead = make_tracker(mlflow_server.uri, tmp_path, "lost")
    dead.ensure_parent({"name": "lost"}, "tpe", "journal:x", parent_run_id=parent)
    run_id = dead.trial(0, cfg, {}).run_id
    assert dead.sender.wait(timeout=30)  # its run and its worker tag exist; then it "dies"
    dead.sender.stop(1)
    rerun = make_tracker(mlflow_server.uri, tmp_path, "lost")
    rerun.ensure_parent({"name": "lost"}, "tpe", "journal:x", parent_run_id=parent)
    rerun.lost_trial(0, run_id, f"{socket.gethostname()}:{os.getpid()}", "worker vm:1 killed (SIGKILL)")
    rerun.close()
    client = mlflow_server.client()
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags[names.TAG_STATE] == "FAIL"
    assert run.data.tags[names.TAG_REASON] == "worker vm:1 killed (SIGKILL)"
    assert client.get_run(parent).info.status == "FINISHED"  # the dead worker no longer holds it open
