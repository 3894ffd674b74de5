"""Racing over seeds and the stop rule: the decisions on known values, and a raced study end to end."""

from __future__ import annotations

import json

import math

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial
from optuna.distributions import FloatDistribution

from vpsearch.search.racing import Verdict, final_pick, paired_noise, race_verdict
from vpsearch.search.stopping import MIN_CONFIGURATIONS, seed_noise, stop_verdict


def test_paired_noise_pools_the_spread_of_paired_differences():
    # a - b on seeds 1, 2, 3: 1.0, 1.2, 0.8 -> mean 1.0, squares 0.08 over 2 dof -> std 0.2
    values = {0: {1: 25.0, 2: 24.2, 3: 25.8}, 1: {1: 24.0, 2: 23.0, 3: 25.0}}
    assert paired_noise(values) == pytest.approx(0.2)
    # a common seed effect cancels: +5 on seed 2 for both changes nothing
    shifted = {c: {s: v + (5 if s == 2 else 0) for s, v in seeds.items()} for c, seeds in values.items()}
    assert paired_noise(shifted) == pytest.approx(0.2)
    assert paired_noise({0: {1: 1.0}, 1: {1: 2.0}}) is None  # no pair shares two seeds


def test_a_configuration_is_raced_out_only_when_even_its_optimistic_bound_is_below_another():
    values = {0: {1: 25.0, 2: 24.2, 3: 25.8}, 1: {1: 24.0, 2: 23.0, 3: 25.0}, 2: {1: 24.9}, 3: {1: 23.0}}
    # sigma 0.2: config 3 is 2.0 below config 0 on seed 1, bound -2.0 + 2 * 0.2 = -1.6 < 0
    v = race_verdict(3, values)
    assert v.raced_out and v.by == 0 and v.seeds == 1 and v.margin == pytest.approx(-1.6)
    assert "raced out after 1 seed(s)" in v.reason
    # config 2 is 0.1 below on seed 1: -0.1 + 0.4 > 0, still in the race
    assert not race_verdict(2, values).raced_out
    # minimising flips the sign: config 3 is then the best and stays
    assert not race_verdict(3, values, maximize=False).raced_out
    assert race_verdict(2, {2: {1: 1.0}, 0: {1: 2.0}}) == Verdict(False, seeds=1)  # no noise estimate yet


def test_the_pick_ranks_only_configurations_that_ran_every_seed():
    values = {0: {1: 25.0, 2: 24.0}, 1: {1: 30.0}, 2: {1: 24.0, 2: 24.5}}
    assert final_pick(values, repeats=2) == 0  # config 1 is higher on one seed but raced (or ran) fewer
    assert final_pick(values, repeats=3) is None


def test_seed_noise_is_the_median_std_over_configurations():
    assert seed_noise([[1.0, 3.0], [2.0, 2.0], [5.0, 5.0, 5.0], [7.0]]) == pytest.approx(0.0)
    assert seed_noise([[1.0, 3.0], [0.0, 4.0], [1.0, 1.0]]) == pytest.approx(math.sqrt(2))
    assert seed_noise([[1.0], [2.0]]) is None


def _trials(values: list[tuple[float, float]]) -> list:
    d = {"x": FloatDistribution(0.0, 1.0)}
    return [create_trial(params={"x": x}, distributions=d, value=y, state=TrialState.COMPLETE) for x, y in values]


def test_the_stop_rule_waits_for_enough_configurations_then_compares_the_bound_with_the_noise():
    few = _trials([(i / 40, float(i)) for i in range(MIN_CONFIGURATIONS - 1)])
    v = stop_verdict(few, StudyDirection.MAXIMIZE, noise=0.1)
    assert not v.stop and v.regret_bound is None and v.configurations == MIN_CONFIGURATIONS - 1
    # a flat objective (every configuration 20 +- 0.001) has nothing left to find: below a noise of 0.5
    flat = _trials([(i / 40, 20.0 + 0.001 * ((i * 7) % 3)) for i in range(40)])
    v = stop_verdict(flat, StudyDirection.MAXIMIZE, noise=0.5)
    assert v.stop and v.regret_bound < 0.5 and "below the seed noise" in v.reason
    # a steep one (value = 100 x) still promises more than a noise of 0.001
    steep = _trials([(i / 40 * 0.5, 100 * i / 40 * 0.5) for i in range(40)])
    assert not stop_verdict(steep, StudyDirection.MAXIMIZE, noise=0.001).stop


def test_the_schedule_aware_pruner_gives_one_verdict_per_configuration():
    from vpsearch.search.pruners import ScheduleAwarePruner
    from vpsearch.search.records import write_trial

    study = optuna.create_study(direction="maximize")
    pruner = ScheduleAwarePruner(n_startup_trials=1, patience=1)

    def run(config_id: int, repeat: int, curve: list[float], tell: bool = True):
        t = study.ask()
        write_trial(study, t, config_id=config_id, repeat=repeat)
        for e, v in enumerate(curve):
            t.report(v, e)
        frozen = study._storage.get_trial(t._trial_id)
        verdict = pruner.prune(study, frozen)
        if tell:
            study.tell(t, state=TrialState.PRUNED) if verdict else study.tell(t, max(curve))
        return verdict

    assert not run(0, 0, [20.0, 21.0, 22.0])  # nothing completed yet: no bar
    assert run(1, 0, [10.0, 11.0])  # far below the only completed trial: pruned
    assert run(1, 1, [30.0])  # its other seed follows its configuration's verdict, however it starts
    assert not run(0, 1, [1.0, 2.0])  # a configuration that completed a seed keeps its other seeds
    with pytest.raises(ValueError, match="percentile must lie in"):
        ScheduleAwarePruner(percentile=100)


@pytest.mark.slow
def test_a_raced_study_runs_each_next_seed_after_the_last_and_accounts_for_every_configuration(tmp_path,
                                                                                              pushing_root):
    from test_study_run import QUIET, open_study, run_cli, write_study

    from vpsearch.search.records import StudyRecord, TrialRecord

    study_file = write_study(tmp_path / "race.yaml", pushing_root, name="race", sampler="grid",
                             budget={"epochs": 2, "steps_per_epoch": 2},
                             search_space={"optim.lr": {"type": "categorical", "choices": [1e-4, 1e-3, 3e-3, 0.3]}},
                             repeats={"max": 3, "race": True}, seeds=[1, 2, 3], stop="regret_bound")
    root = tmp_path / "runs"
    r = run_cli("study", "run", str(study_file), "--workers", "1", "--root", str(root), *QUIET, timeout=600)
    assert r.returncode == 0, r.stderr
    study = open_study(f"journal:{root}/optuna-journal.log", "race")
    trials = [t for t in study.get_trials() if TrialRecord.of(t).outcome != "skipped"]
    by_config: dict[int, list] = {}
    for t in trials:
        by_config.setdefault(TrialRecord.of(t).config_id, []).append(t)
    assert len(by_config) == 4
    raced = StudyRecord.of(study).raced_out or {}
    for cid, ts in by_config.items():
        ts.sort(key=lambda t: TrialRecord.of(t).repeat)
        assert [TrialRecord.of(t).repeat for t in ts] == list(range(len(ts)))
        assert [TrialRecord.of(t).seed for t in ts] == [1, 2, 3][:len(ts)]
        # a next seed is queued only once the one before it completed
        assert all(b.datetime_start >= a.datetime_complete for a, b in zip(ts, ts[1:]))
        # every configuration either ran all its seeds or says why it stopped early
        assert len(ts) == 3 or str(cid) in raced, (cid, len(ts), raced)
    assert set(raced) <= {str(c) for c in by_config}
    # study status says how many seeds each configuration ran and why one stopped early
    status = run_cli("study", "status", "race", "--root", str(root))
    assert status.returncode == 0, status.stderr
    full = sum(1 for ts in by_config.values() if len(ts) == 3)
    assert f"seeds: 4 configuration(s), {full} with all 3 seeds" in status.stdout
    for cid, why in raced.items():
        assert f"  configuration {cid}: {len(by_config[int(cid)])} of 3 seeds run; {why}" in status.stdout
    as_json = json.loads(run_cli("study", "status", "race", "--root", str(root), "--json").stdout)
    assert as_json["raced_out"] == raced


def test_advance_race_queues_next_seeds_races_out_the_worse_and_stops_a_pruned_configuration():
    from types import SimpleNamespace

    from vpsearch.search.after_trial import advance_race, raced_seeds_skipped
    from vpsearch.search.records import StudyRecord, TrialRecord, write_trial

    study = optuna.create_study(direction="maximize")
    plan = SimpleNamespace(spec=SimpleNamespace(race=True, repeats=3, objective=SimpleNamespace(direction="maximize")))

    def seed(cid: int, repeat: int, value: float | None):
        t = study.ask({"x": FloatDistribution(0.0, 10.0)}) if repeat == 0 else study.ask()
        write_trial(study, t, config_id=cid if repeat else t.number, repeat=repeat)
        study.tell(t, value) if value is not None else study.tell(t, state=TrialState.PRUNED)
        return t.number

    c0 = seed(0, 0, 25.0)
    seed(c0, 1, 24.2)
    c1 = seed(1, 0, 24.0)
    seed(c1, 1, 23.0)  # c0 - c1: 1.0, 1.2 -> paired std 0.141
    c2 = seed(2, 0, 20.0)  # 5 below c0 on seed 0
    c3 = seed(3, 0, 24.95)  # 0.05 below c0: within 2 x 0.141
    c4 = seed(4, 0, None)  # pruned
    said = advance_race(study, plan)
    raced = StudyRecord.of(study).raced_out
    assert set(raced) == {str(c1), str(c2), str(c4)}, said
    assert "raced out after 2 seed(s)" in raced[str(c1)] and "raced out after 1 seed(s)" in raced[str(c2)]
    assert raced[str(c4)] == "stopped after 1 seed(s): a seed ended PRUNED"
    queued = sorted((TrialRecord.of(t).config_id, TrialRecord.of(t).repeat)
                    for t in study.get_trials(states=(TrialState.WAITING,)))
    assert queued == [(c0, 2), (c3, 1)]
    # the seeds the race saved: c1 one, c2 and c4 two each
    assert raced_seeds_skipped(study.get_trials(), StudyRecord.of(study), 3) == 5
    assert advance_race(study, plan) == [] and len(study.get_trials(states=(TrialState.WAITING,))) == 2
