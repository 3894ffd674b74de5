"""Search space, skopt driver and budget accounting, without training."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from vpsearch.search import attrs
from vpsearch.search.plan import load_study
from vpsearch.search.recovery import RetryStaleTrial, fail_and_requeue, tally
from vpsearch.search.samplers import SkoptDriver, make_sampler
from vpsearch.search.space import grid, suggest, trial_config

SPACE = {
    "schedule.kl_anneal_type": {"type": "categorical", "choices": ["monotonic", "cyclical"]},
    "schedule.kl_anneal_cycle": {"type": "int", "low": 2, "high": 5, "when": {"schedule.kl_anneal_type": "cyclical"}},
    "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "schedule.tfr_start_decay_epoch": {"type": "int", "low": 0, "high": 10, "step": 5},
}


@pytest.fixture()
def plan(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "s", "base": "pushing-small", "budget": {"n_trials": 8},
                                 "search_space": SPACE, "sampler": {"name": "skopt", "n_startup_trials": 3}}))
    return load_study(p)


def test_conditional_parameter_exists_only_under_its_condition(plan):
    study = optuna.create_study(sampler=make_sampler(plan.spec.sampler.model_copy(update={"name": "random"}),
                                                     plan.space, 0))
    seen = {"monotonic": 0, "cyclical": 0}
    for _ in range(30):
        trial = study.ask()
        params = suggest(trial, plan.space, plan.base.flat())
        kind = params["schedule.kl_anneal_type"]
        seen[kind] += 1
        assert ("schedule.kl_anneal_cycle" in params) == (kind == "cyclical")
        assert params["schedule.tfr_start_decay_epoch"] in (0, 5, 10)
        cfg = trial_config(plan.base, plan.space, params, seed=3, name="t")
        assert cfg.optim.lr == params["optim.lr"] and cfg.schedule.kl_anneal_type == kind
        # inactive: the base value stays
        base_cycle = plan.base.schedule.kl_anneal_cycle
        assert cfg.schedule.kl_anneal_cycle == params.get("schedule.kl_anneal_cycle", base_cycle)
        study.tell(trial, 0.0)
    assert min(seen.values()) > 0


def test_grid_values_enumerate_int_steps_and_presets(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"name": "g", "base": "pushing-small", "sampler": "grid", "search_space": {
        "schedule.tfr_start_decay_epoch": {"type": "int", "low": 0, "high": 10, "step": 5},
        "tf": {"type": "categorical", "choices": {"a": {"schedule.tfr": 0.5}, "b": {"schedule.tfr": 1.0}}}}}))
    plan = load_study(p)
    assert grid(plan.space) == {"schedule.tfr_start_decay_epoch": [0, 5, 10], "tf": ["a", "b"]}
    assert plan.n_trials == 6


def frozen(number: int, state: TrialState, point, value=None, history=None) -> optuna.trial.FrozenTrial:
    t = optuna.trial.create_trial(state=state, value=value, user_attrs={attrs.SKOPT_POINT: point},
                                  system_attrs={"retry_history": history} if history else None)
    t.number = number
    return t


def test_skopt_driver_random_then_gp_and_replays_the_same_history(plan):
    drv = SkoptDriver(plan.space, "maximize", seed=0, n_initial_points=3)
    points = []
    trials = []
    for i in range(3):  # initial design: seeded by index, so no two workers/restarts repeat a point
        x = drv.propose(trials)
        assert x not in points
        points.append(x)
        trials.append(frozen(i, TrialState.COMPLETE, x, value=20.0 + i))
    gp = drv.propose(trials)
    # a fresh driver (a restart, another worker) proposes exactly the same from the same history
    again = SkoptDriver(plan.space, "maximize", seed=0, n_initial_points=3).propose(trials)
    assert gp == again and gp not in points
    # a running trial at that point makes the next proposal move away (constant liar)
    assert drv.propose(trials + [frozen(3, TrialState.RUNNING, gp)]) != gp
    params = drv.params(gp, plan.base.flat())
    assert params["schedule.tfr_start_decay_epoch"] in (0, 5, 10)
    assert ("schedule.kl_anneal_cycle" in params) == (params["schedule.kl_anneal_type"] == "cyclical")


def test_skopt_history_averages_repeats_and_tells_failures_as_worst(plan):
    drv = SkoptDriver(plan.space, "maximize", seed=0, n_initial_points=2)
    running: list = []
    for i in range(3):
        running.append(frozen(i, TrialState.RUNNING, drv.propose(running)))
    a, b, c = (t.user_attrs[attrs.SKOPT_POINT] for t in running)
    assert len({repr(a), repr(b), repr(c)}) == 3
    xs, ys, pending = drv.history([frozen(0, TrialState.COMPLETE, a, 20.0), frozen(1, TrialState.COMPLETE, a, 22.0),
                                   frozen(2, TrialState.FAIL, b), frozen(3, TrialState.WAITING, c)])
    assert xs == [a, b] and ys == [-21.0, -21.0] and pending == [c]


def test_tally_counts_a_rerun_instead_of_the_trial_it_replaces():
    study = optuna.create_study()
    for v in (1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(value=v))
    t = study.ask()
    t.set_user_attr(attrs.REPEAT, 0)
    assert fail_and_requeue(study, t._trial_id, "worker x:1 died", RetryStaleTrial(2))
    assert not fail_and_requeue(study, t._trial_id, "again", RetryStaleTrial(2))  # already reaped
    trials = study.get_trials()
    failed, copy = trials[2], trials[3]
    assert failed.state == TrialState.FAIL and failed.user_attrs[attrs.FAIL_REASON] == "worker x:1 died; re-queued"
    assert copy.state == TrialState.WAITING and copy.user_attrs[attrs.RETRY_OF] == 2
    assert copy.user_attrs[attrs.REPEAT] == 0 and copy.user_attrs[attrs.FAIL_REASON] is None
    tl = tally(trials)
    assert (tl.complete, tl.failed, tl.waiting, tl.counted, tl.retried) == (2, 0, 1, 3, {2})
    # retries run out: the trial stays failed, with the reason saying so
    t2 = study.ask()
    assert t2.number == 3
    assert fail_and_requeue(study, t2._trial_id, "died again", RetryStaleTrial(1))
    last = study.get_trials()[-1]
    assert last.state == TrialState.FAIL and "not re-run: retries spent (1)" in last.user_attrs[attrs.FAIL_REASON]
    assert tally(study.get_trials()).failed == 1
