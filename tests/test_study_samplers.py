"""Every sampler runs a tiny study (in-process worker); skopt replays its history after a restart;
pruning and the tracker lifecycle seen from a real trial."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_study_run import write_study

from vpsearch.search.records import StudyRecord, TrialRecord
from vpsearch.search.launcher import prepare_study
from vpsearch.search.plan import load_study
from vpsearch.search.storage import open_storage
from vpsearch.search.worker import Worker, WorkerOptions
from vpsearch.tracking.base import StudyTracker, TrialTracker

pytestmark = pytest.mark.slow
ONE_EPOCH = {"epochs": 1, "steps_per_epoch": 1}


def create(tmp_path: Path, pushing_root: Path, **fields):
    plan = load_study(write_study(tmp_path / "s.yaml", pushing_root, **fields))
    url = f"journal:{tmp_path / 'runs' / 'journal.log'}"
    study = prepare_study(plan, open_storage(url), "off", str(tmp_path / "runs"))
    return plan, url, study


def work(url: str, tmp_path: Path, **kw) -> int:
    return Worker(WorkerOptions("tiny", url, device="cpu", threads=1, tracking_uri="off",
                                root=str(tmp_path / "runs"), **kw)).run()


SPACE = {"optim.lr": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True},
         "schedule.kl_anneal_type": {"type": "categorical", "choices": ["monotonic", "cyclical"]}}
GRID = {"optim.lr": {"type": "categorical", "choices": [1e-3, 3e-3]},
        "schedule.kl_anneal_type": {"type": "categorical", "choices": ["monotonic", "cyclical"]}}


@pytest.mark.parametrize("name", ["tpe", "gp", "cmaes", "random", "grid", "skopt"])
def test_each_sampler_runs_a_tiny_study(tmp_path, pushing_root, name):
    sampler = {"name": name} if name in ("random", "grid") else {"name": name, "n_startup_trials": 1}
    # 4 steps: monotonic and cyclical KL differ (over 1 step both are 0: one configuration)
    plan, url, study = create(tmp_path, pushing_root, sampler=sampler, search_space=GRID if name == "grid" else SPACE,
                              budget={"n_trials": 4 if name == "grid" else 3, "epochs": 1, "steps_per_epoch": 4})
    assert work(url, tmp_path) == plan.n_trials
    trials = optuna.load_study(study_name="tiny", storage=open_storage(url).storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * plan.n_trials
    for t in trials:
        assert 1e-3 <= t.params["optim.lr"] <= 3e-3
        assert TrialRecord.of(t).config["optim"]["lr"] == t.params["optim.lr"]
    assert len({repr(t.params) for t in trials}) == plan.n_trials  # no configuration proposed twice
    if name == "grid":  # every grid point exactly once
        assert {(t.params["optim.lr"], t.params["schedule.kl_anneal_type"]) for t in trials} == {
            (lr, k) for lr in (1e-3, 3e-3) for k in ("monotonic", "cyclical")}
    if name == "skopt":
        assert all(len(TrialRecord.of(t).skopt_point) == 2 for t in trials)


def test_skopt_rebuilds_from_the_storage_after_a_restart(tmp_path, pushing_root):
    from vpsearch.search.configurations import SamplerView
    from vpsearch.search.samplers import SkoptProposer, mix_seed

    plan, url, _ = create(tmp_path, pushing_root, search_space=SPACE, budget={"n_trials": 3, **ONE_EPOCH},
                          sampler={"name": "skopt", "n_startup_trials": 2, "seed": 5})
    assert work(url, tmp_path, max_trials=2) == 2  # then the process is gone: nothing of skopt survives
    assert work(url, tmp_path) == 1  # a new worker replays the two completed trials into a new optimizer
    study = optuna.load_study(study_name="tiny", storage=open_storage(url).storage)
    t0, t1, t2 = study.get_trials()
    # the same proposal from the first two trials alone, with trial 2's seed
    before = optuna.create_study(direction="maximize")
    before.add_trials([t0, t1])
    drv = SkoptProposer(plan.space, plan.base.flat(), "maximize", 2, None)
    params, extra = drv.propose(SamplerView(before, "penalty"), t2, mix_seed(5, 2, 0), lambda p: False)
    assert TrialRecord.of(t2).skopt_point == extra["skopt_point"] and t2.params == params


def test_a_trial_below_the_median_is_pruned_with_its_reason(tmp_path, pushing_root):
    plan, url, study = create(tmp_path, pushing_root, pruner={"name": "median", "n_startup_trials": 1},
                              budget={"n_trials": 2, "epochs": 2, "steps_per_epoch": 1})
    # a finished trial far above anything 2 steps of training reach
    lr = optuna.distributions.FloatDistribution(1e-3, 3e-3, log=True)
    study.add_trial(optuna.trial.create_trial(value=60.0, intermediate_values={0: 60.0, 1: 60.0},
                                              params={"optim.lr": 2e-3}, distributions={"optim.lr": lr}))
    assert work(url, tmp_path) == 1
    t = optuna.load_study(study_name="tiny", storage=open_storage(url).storage).get_trials()[1]
    assert t.state == TrialState.PRUNED and list(t.intermediate_values) == [0]
    rec = TrialRecord.of(t)
    assert rec.fail_reason == "pruned at epoch 0 by the median pruner (val_psnr below the other trials)"
    rows = list(csv.DictReader(open(tmp_path / "runs" / rec.run_dir / "metrics.csv")))
    assert len(rows) == 1  # training stopped when the pruner said so


class RecordingTracker(StudyTracker):
    def __init__(self, log):
        self.log = log

    def ensure_parent(self, study_config, sampler, storage_url, parent_run_id=None):
        self.log.append(("ensure_parent", sampler, parent_run_id))
        return "parent-1"

    def set_view(self, objective, params):
        self.log.append(("set_view", objective, params))

    def study_progress(self, step, metrics, tags):
        self.log.append(("progress", step, metrics["trials/complete"], sorted(tags)))

    def trial(self, number, config, tags, params=None, unused=frozenset()):
        log = self.log

        class T(TrialTracker):
            run_id = f"run-{number}"

            def report(self, epoch, metrics):
                log.append(("report", number, epoch))
                return False

            def close(self, state, reason=None):
                log.append(("close", number, state, reason))
        log.append(("trial", number, tags["seed"], tags["repeat"], config.train.seed, sorted(params)))
        return T()

    def close(self):
        self.log.append(("tracker_close",))


def test_worker_follows_the_tracking_lifecycle(tmp_path, pushing_root, monkeypatch):
    log: list = []
    monkeypatch.setattr("vpsearch.search.worker.make_tracker", lambda uri, root, name, **kw: RecordingTracker(log))
    monkeypatch.setattr("vpsearch.search.launcher.make_study_tracker", lambda uri, root, name: RecordingTracker(log))
    plan, url, study = create(tmp_path, pushing_root, repeats=2, budget={"n_trials": 2, **ONE_EPOCH})
    record = StudyRecord.of(study)
    assert record.mlflow_parent_run_id == "parent-1" and record.mlflow_tracking_uri == "off"
    work(url, tmp_path)
    # the creator stores the parent and the runs table's view; the worker nests under the parent,
    # names each run by its params, and tells the parent the study's progress after each trial
    assert log == [("ensure_parent", "random", None), ("set_view", "val_psnr", ["optim.lr"]), ("tracker_close",),
                   ("ensure_parent", "random", "parent-1"),
                   ("trial", 0, "1", "0", 1, ["optim.lr"]), ("report", 0, 0), ("close", 0, "COMPLETE", None),
                   ("progress", 1, 1, ["best_trial", "mlflow.note.content"]),
                   ("trial", 1, "2", "1", 2, ["optim.lr"]), ("report", 1, 0), ("close", 1, "COMPLETE", None),
                   ("progress", 2, 2, ["best_trial", "mlflow.note.content"]),
                   ("tracker_close",)]
    trials = optuna.load_study(study_name="tiny", storage=open_storage(url).storage).get_trials()
    assert [TrialRecord.of(t).mlflow_run_id for t in trials] == ["run-0", "run-1"]


class LateRunTracker(StudyTracker):
    """The tracking server was away when each trial started: its run is created while it trains."""

    def trial(self, number, config, tags, params=None, unused=frozenset()):
        class T(TrialTracker):
            run_id = None

            def report(self, epoch, metrics):
                self.run_id = f"late-{number}"  # the sender got through during the trial
                return False
        return T()


def test_a_run_created_after_a_tracking_outage_is_named_in_the_trial_record(tmp_path, pushing_root, monkeypatch):
    monkeypatch.setattr("vpsearch.search.worker.make_tracker", lambda uri, root, name, **kw: LateRunTracker())
    plan, url, study = create(tmp_path, pushing_root, budget={"n_trials": 2, **ONE_EPOCH})
    work(url, tmp_path)
    trials = optuna.load_study(study_name="tiny", storage=open_storage(url).storage).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [TrialRecord.of(t).mlflow_run_id for t in trials] == ["late-0", "late-1"]


def test_multi_objective_study_stores_both_values(tmp_path, pushing_root):
    plan, url, study = create(tmp_path, pushing_root, budget={"n_trials": 2, **ONE_EPOCH},
                              objective={"metric": "val_psnr", "secondary": {"metric": "train_seconds"}})
    work(url, tmp_path)
    trials = optuna.load_study(study_name="tiny", storage=open_storage(url).storage).get_trials()
    for t in trials:
        assert t.state == TrialState.COMPLETE and len(t.values) == 2
        assert t.values[0] == TrialRecord.of(t).results.val_psnr_best and t.values[1] > 0


def test_parameters_that_clash_fail_that_trial_with_the_reason(tmp_path, pushing_root):
    overrides = ["model.nf=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "train.batch_size=4",
                 "eval.max_sequences=4", "eval.gif_sequences=1", "train.amp=none", f"data.root={pushing_root}",
                 "schedule.tfr_lower_bound=0.0"]
    plan, url, _ = create(tmp_path, pushing_root, sampler="grid", budget=ONE_EPOCH, overrides=overrides, search_space={
        "schedule.tfr": {"type": "categorical", "choices": [0.2, 1.0]},
        "schedule.tfr_lower_bound": {"type": "categorical", "choices": [0.0, 0.5]}})
    # over 1 epoch tfr 1.0 never decays, so its two floors train identically: 3 distinct points
    assert plan.n_trials == 3 and work(url, tmp_path) == 3
    trials = optuna.load_study(study_name="tiny", storage=open_storage(url).storage).get_trials()
    assert len({t.params["schedule.tfr"] for t in trials}) == 2
    for t in trials:
        clash = t.params == {"schedule.tfr": 0.2, "schedule.tfr_lower_bound": 0.5}
        assert t.state == (TrialState.FAIL if clash else TrialState.COMPLETE)
        if clash:
            rec = TrialRecord.of(t)
            assert "field schedule.tfr_lower_bound: 0.5 is above schedule.tfr (0.2)" in rec.fail_reason
            assert rec.outcome == "error"
            assert rec.seed == 1 and rec.config is None
