"""`vpsearch study run --tracking-uri http://...`: a 2-trial study end to end into a real server."""

from __future__ import annotations

import csv
import json

import pytest

from vpsearch.search.records import StudyRecord, TrialRecord
from vpsearch.settings import under_root
from vpsearch.tracking import names

from test_study_run import journal, open_study, run_cli, write_study

pytest_plugins = ["mlflow_server"]
pytestmark = pytest.mark.slow


def test_study_run_tracks_every_trial_into_the_server(mlflow_server, pushing_root, tmp_path):
    study_file = write_study(tmp_path / "tracked.yaml", pushing_root, name="e2e-tracked", workers=2)
    root = tmp_path / "runs"
    r = run_cli("study", "run", str(study_file), "--root", str(root), "--tracking-uri", mlflow_server.uri)
    assert r.returncode == 0, r.stdout + r.stderr
    study = open_study(journal(root), "e2e-tracked")
    parent_id = StudyRecord.of(study).mlflow_parent_run_id
    client = mlflow_server.client()
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "e2e-tracked" and parent.info.status == "FINISHED"  # last worker ended it
    exp = client.get_experiment_by_name("e2e-tracked")
    runs = {r.info.run_name: r for r in client.search_runs(
        [exp.experiment_id], f"tags.`{names.MLFLOW_PARENT}` = '{parent_id}'")}
    trials = study.get_trials(deepcopy=False)
    # runs are named by what tells them apart: number and searched params (`t0 lr=1.3e-3`)
    expected = {names.trial_run_name(t.number, t.params): t for t in trials}
    assert sorted(runs) == sorted(expected) and len(trials) == 2
    assert all(name.startswith(f"t{t.number} lr=") for name, t in expected.items())
    # the parent run: the best value so far, the best trial, trials by state (step = trials finished)
    best = max(trials, key=lambda t: t.values[0])
    assert parent.data.metrics["val/psnr_best"] == pytest.approx(best.values[0])
    assert parent.data.metrics[names.TRIALS_COUNTS["complete"]] == 2
    assert parent.data.metrics[names.TRIALS_COUNTS["pruned"]] == parent.data.metrics["trials/failed"] == 0
    assert parent.data.tags[names.TAG_BEST_TRIAL] == names.trial_run_name(best.number, best.params)
    # the runs table `vpsearch ui` opens: objective, baseline, the searched param, state, best first
    view = json.loads(json.loads(exp.tags[names.MLFLOW_SHARED_VIEW + names.VIEW_KEY])["state"])
    assert view["selectedColumns"] == ["metrics.`val/psnr_best`", "metrics.`val/gain_db`",
                                       "metrics.`val/baseline_psnr`", "params.`optim.lr`", "tags.`state`"]
    # how much the best trial buys over copying, on the parent's row and on the trial's
    res = TrialRecord.of(best).results
    assert parent.data.metrics["val/gain_db"] == pytest.approx(res.val_psnr_best - res.baseline_psnr)
    best_run = next(r for r in runs.values() if r.data.tags.get(names.TAG_TRIAL) == str(best.number))
    assert best_run.data.metrics["val/gain_db"] == pytest.approx(res.val_psnr_best - res.baseline_psnr, abs=1e-4)
    assert view["orderByKey"] == "metrics.`val/psnr_best`" and view["orderByAsc"] is False
    for name, t in expected.items():
        run = runs[name]
        assert "predicted frame index" in run.data.tags[names.MLFLOW_NOTE]  # the run documents its axes
        assert run.info.run_id == TrialRecord.of(t).mlflow_run_id  # the study knows its run
        assert run.info.status == names.RUN_STATUS[t.state.name]
        assert run.data.tags[names.TAG_SAMPLER] == "random" and run.data.tags["trial"] == str(t.number)
        assert run.data.tags[names.TAG_CONFIG_HASH] == TrialRecord.of(t).config_hash
        assert float(run.data.params["optim.lr"]) == pytest.approx(t.params["optim.lr"])
        rows = list(csv.DictReader((under_root(TrialRecord.of(t).run_dir, root) / "metrics.csv").open()))
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/psnr"))
        assert history == [(int(r["epoch"]), float(r["val_psnr"])) for r in rows]
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "metrics.csv", "plots", "samples", "frame_psnr"} <= files
    assert not any((root / "mlflow-spool").iterdir())  # every worker delivered everything
