"""Time estimates before the first trial (issue 25): the probe, the study's line, the live ETA."""

from __future__ import annotations

import datetime as dt
import math

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.test_study_run import QUIET, journal, open_study, run_cli, write_study
from vpsearch.search.plan import load_study
from vpsearch.search.status import progress_line
from vpsearch.search.timing import estimate_study
from vpsearch.training import estimate


def test_the_probe_adds_up_the_runs_parts_and_writes_nothing(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_cfg("train.epochs=5", "train.steps_per_epoch=7", "eval.every=2")
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    e = estimate.probe(cfg)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is untouched
    assert list(tmp_path.iterdir()) == []
    assert (e.epochs, e.steps, e.evaluations, e.threads) == (5, 7, 3, 1)  # evaluated after epochs 2, 4 and 5
    assert e.step_seconds > 0 and e.eval_seconds > 0 and e.setup_seconds > 0
    parts = e.setup_seconds + 5 * (7 * e.step_seconds + e.checkpoint_seconds) + 3 * e.eval_seconds
    assert math.isclose(e.trial_seconds, parts)
    assert "5 epochs x 7 steps" in e.describe() and "fp32, 1 thread" in e.describe()


def test_evaluations_follow_eval_every():
    from vpsearch.schedules import evaluated_epochs

    assert evaluated_epochs(4, 1) == [0, 1, 2, 3] and len(evaluated_epochs(13, 2)) == 7
    assert evaluated_epochs(3, 5) == [2] and evaluated_epochs(5, 2) == [1, 3, 4]


def test_a_resumed_study_takes_its_own_trials_median(tmp_path, pushing_root):
    plan = load_study(write_study(tmp_path / "s.yaml", pushing_root))
    t0 = dt.datetime(2026, 1, 1)
    trials = [optuna.trial.FrozenTrial(number=i, state=state, value=1.0, datetime_start=t0,
                                       datetime_complete=t0 + dt.timedelta(seconds=secs), params={}, distributions={},
                                       user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=i)
              for i, (state, secs) in enumerate([(TrialState.COMPLETE, 30), (TrialState.COMPLETE, 50),
                                                  (TrialState.COMPLETE, 40), (TrialState.PRUNED, 5)])]
    e = estimate_study(plan, "cpu", 1, trials)
    assert e.per_trial == 40 and "median of 3 complete trial(s)" in e.source
    assert e.line(5, 2).endswith("at most 2m00s for the 5 trial(s) left on 2 worker(s) (pruned trials end sooner)")


def test_the_live_eta_uses_the_estimate_until_a_trial_finishes(tmp_path, pushing_root):
    plan = load_study(write_study(tmp_path / "s.yaml", pushing_root, budget={"n_trials": 4, "epochs": 2,
                                                                             "steps_per_epoch": 2}))
    now = dt.datetime(2026, 1, 1, 12, 0, 0)
    running = [optuna.trial.FrozenTrial(number=i, state=TrialState.RUNNING, value=None,
                                        datetime_start=now - dt.timedelta(seconds=25), datetime_complete=None,
                                        params={}, distributions={}, user_attrs={}, system_attrs={},
                                        intermediate_values={0: 20.0} if i else {}, trial_id=i) for i in range(2)]
    line = progress_line(plan, running, workers=2, estimate=100.0, now=now)
    # two running with 75 s left each, two queued at 100 s, over 2 workers: (150 + 200) / 2
    assert line.endswith("ETA 2m55s")
    # trial 1 has reported its first epoch of two, trial 0 none yet
    assert "0/4 finished (complete 0, pruned 0, failed 0) | running 2 (#0 epoch 0/2, #1 epoch 1/2) |" in line
    assert progress_line(plan, running, workers=2, now=now).endswith("ETA -")


@pytest.mark.slow
def test_study_check_prints_the_estimate(tmp_path, pushing_root):
    path = write_study(tmp_path / "s.yaml", pushing_root, workers=2, devices="cpu", threads_per_worker=1)
    r = run_cli("study", "check", str(path))
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[-1]
    assert line.startswith("time: about ") and "per trial (2 epochs x 2 steps at " in line
    assert "fp32, 1 thread; probed on this machine); at most " in line and "left on 2 worker(s)" in line
    r = run_cli("study", "check", str(path), "--no-estimate")
    assert r.returncode == 0 and "time:" not in r.stdout


@pytest.mark.slow
def test_study_run_prints_the_estimate_before_the_first_trial(tmp_path, pushing_root):
    path = write_study(tmp_path / "s.yaml", pushing_root)
    r = run_cli("study", "run", str(path), "--root", str(tmp_path / "runs"), *QUIET)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    at = next(i for i, x in enumerate(lines) if x.startswith("time: about "))
    assert at < next(i for i, x in enumerate(lines) if "finished (complete" in x)
    assert "for the 2 trial(s) left on 1 worker(s)" in lines[at]
    # outside clients (optuna-dashboard) name the objective instead of "Objective 0" (issue 26, item 7)
    assert open_study(journal(tmp_path / "runs"), "tiny").metric_names == ["val_psnr"]
