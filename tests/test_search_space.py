"""Search space, skopt driver and budget accounting, without training."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from vpsearch.search.configurations import SamplerView
from vpsearch.search.plan import load_study
from vpsearch.search.records import TrialRecord, trial_id
from vpsearch.search.recovery import RetryStaleTrial, fail_and_requeue, tally
from vpsearch.search.samplers import SkoptProposer
from vpsearch.search.space import distribution, grid, suggest, trial_config

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
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
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
    # tfr 0.5 already sits on pushing-small's floor (0.5): its three decay starts train identically
    assert plan.n_trials == 4


def skopt_study(plan, *trials):
    """An in-memory study holding configurations that skopt proposed (one seed each)."""
    study = optuna.create_study(direction="maximize")
    for number, state, point, value in trials:
        dists = {n: distribution(plan.space[n]) for n in SkoptProposer(plan.space, plan.base.flat(), "maximize",
                                                                       3, None).params(point)}
        params = SkoptProposer(plan.space, plan.base.flat(), "maximize", 3, None).params(point)
        study.add_trial(optuna.trial.create_trial(
            state=state, value=value, params=params, distributions=dists,
            user_attrs=TrialRecord(config_id=number, repeat=0, skopt_point=point).attrs()))
    return study


def test_skopt_proposer_random_then_gp_and_replays_the_same_history(plan):
    drv = SkoptProposer(plan.space, plan.base.flat(), "maximize", n_initial_points=3, acq_func=None)
    points: list = []
    rows: list = []
    for i in range(3):  # initial design: seeded per trial, so no two workers/restarts repeat a point
        _, extra = drv.propose(SamplerView(skopt_study(plan, *rows), "penalty"), None, seed=i, seen=None)
        x = extra["skopt_point"]
        assert x not in points
        points.append(x)
        rows.append((i, TrialState.COMPLETE, x, 20.0 + i))
    view = SamplerView(skopt_study(plan, *rows), "penalty")
    params, extra = drv.propose(view, None, seed=7, seen=None)
    gp = extra["skopt_point"]
    # a fresh proposer (a restart, another worker) proposes exactly the same from the same history
    again = SkoptProposer(plan.space, plan.base.flat(), "maximize", 3, None).propose(view, None, 7, None)[1]
    assert gp == again["skopt_point"] and gp not in points
    # a running configuration at that point makes the next proposal move away (constant liar)
    busy = SamplerView(skopt_study(plan, *rows, (3, TrialState.RUNNING, gp, None)), "penalty")
    assert drv.propose(busy, None, seed=7, seen=None)[1]["skopt_point"] != gp
    assert params["schedule.tfr_start_decay_epoch"] in (0, 5, 10)
    assert ("schedule.kl_anneal_cycle" in params) == (params["schedule.kl_anneal_type"] == "cyclical")


def test_skopt_is_told_the_penalty_for_pruned_and_diverged_never_their_own_value(plan):
    drv = SkoptProposer(plan.space, plan.base.flat(), "maximize", n_initial_points=2, acq_func=None)
    a, b, c, d = ([1e-3 * (i + 1), "monotonic", 3, 0] for i in range(4))  # in order(space)
    study = skopt_study(plan, (0, TrialState.COMPLETE, a, 20.0), (1, TrialState.COMPLETE, b, 22.0),
                        (2, TrialState.PRUNED, c, 30.0), (3, TrialState.RUNNING, d, None))
    diverged = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=TrialRecord(
        config_id=4, repeat=0, skopt_point=[9e-3, "monotonic", 3, 0], outcome="diverged").attrs())
    study.add_trial(diverged)
    xs, ys, pending = drv.history(SamplerView(study, "penalty"))
    # the pruned one's stored 30.0 (its last intermediate value) is never told: it gets the worst, 20
    assert ys == [-20.0, -22.0, -20.0, -20.0] and xs[2] == c and pending == [d]


def test_tally_counts_a_rerun_instead_of_the_trial_it_replaces():
    study = optuna.create_study()
    for v in (1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(value=v))
    t = study.ask()
    t.set_user_attr("repeat", 0)
    assert fail_and_requeue(study, trial_id(t), "worker x:1 died", RetryStaleTrial(2))
    assert not fail_and_requeue(study, trial_id(t), "again", RetryStaleTrial(2))  # already reaped
    trials = study.get_trials()
    failed, copy = TrialRecord.of(trials[2]), TrialRecord.of(trials[3])
    assert trials[2].state == TrialState.FAIL and failed.fail_reason == "worker x:1 died; re-queued"
    assert failed.outcome == "lost" and trials[3].state == TrialState.WAITING and copy.retry_of == 2
    assert copy.repeat == 0 and copy.fail_reason is None and copy.outcome is None
    tl = tally(trials)
    assert (tl.complete, tl.failed, tl.waiting, tl.counted, tl.retried) == (2, 0, 1, 3, {2})
    # retries run out: the trial stays failed, with the reason saying so
    t2 = study.ask()
    assert t2.number == 3
    assert fail_and_requeue(study, trial_id(t2), "died again", RetryStaleTrial(1))
    last = study.get_trials()[-1]
    assert last.state == TrialState.FAIL and "not re-run: retries spent (1)" in TrialRecord.of(last).fail_reason
    assert tally(study.get_trials()).failed == 1
