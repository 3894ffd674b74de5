"""`vpsearch replay` on a synthetic recording (known curves): pruners on shuffled orders with simulated
workers that only see what was reported by then, samplers as lookups over the grid."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from vpsearch.reporting import replay, replay_search
from vpsearch.reporting.recorded import RecordedStudy, RecordedTrial
from vpsearch.search.plan import plan_from_spec
from vpsearch.search.spec import parse_spec

EPOCHS = 6
SPACE = {"schedule.kl_anneal_type": {"type": "categorical", "choices": ["none", "monotonic", "cyclical"]},
         "optim.lr": {"type": "categorical", "choices": [0.001, 0.002]}}
LEVEL = {("none", 0.001): 22.0, ("none", 0.002): 21.0, ("monotonic", 0.001): 23.0, ("monotonic", 0.002): 22.5,
         ("cyclical", 0.001): 24.0, ("cyclical", 0.002): 20.0}


def curve(kl: str, level: float, seed: int) -> list[float]:
    """Rises to `level`; cyclical (2 cycles of 3 epochs) rises slowly, dips at its reset (epoch 3) and
    ends best: a slow starter."""
    if kl == "cyclical":
        out = [level - 8 * math.exp(-e / 2) + 0.1 * seed for e in range(EPOCHS)]
        out[3] -= 2.0
        return out
    return [level - 3 * math.exp(-e / 1.5) + 0.1 * seed for e in range(EPOCHS)]


def recording() -> RecordedStudy:
    spec = {"name": "synthetic", "base": "pushing-small", "sampler": "grid", "pruner": "none", "repeats": 2,
            "budget": {"epochs": EPOCHS, "steps_per_epoch": 4},
            "overrides": ["schedule.kl_anneal_cycle=2", "schedule.kl_anneal_ratio=0.5", "eval.every=1",
                          "schedule.tfr_start_decay_epoch=0"],
            "search_space": SPACE}
    plan = plan_from_spec(parse_spec(spec, "synthetic"), "synthetic")
    trials, n = [], 0
    for cid, ((kl, lr), level) in enumerate(LEVEL.items()):
        for seed in (1, 2):
            trials.append(RecordedTrial(n, {"schedule.kl_anneal_type": kl, "optim.lr": lr}, seed, seed - 1, 2 * cid,
                                        curve(kl, level, seed), 1.0, 20.0))
            n += 1
    return RecordedStudy("synthetic", plan.record()["study_config"], plan.record()["base_config"], trials)


def test_recording_round_trips_through_its_file(tmp_path):
    rec = recording()
    back = RecordedStudy.load(rec.save(tmp_path / "r.json"))
    assert back.trials == rec.trials and back.epochs == EPOCHS and len(back.configurations()) == 6
    assert back.config(back.trials[0]).schedule.kl_anneal_type == "none"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(Exception, match="not a vpsearch recorded study"):
        RecordedStudy.load(tmp_path / "bad.json")


class Spy(optuna.pruners.BasePruner):
    """Never prunes; records, at each decision, the furthest epoch any other trial had reported."""

    def __init__(self):
        self.seen: list[tuple[int, int, int]] = []

    def prune(self, study, trial):
        others = [max(t.intermediate_values) for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and t.intermediate_values]
        self.seen.append((trial.number, trial.last_step, max(others, default=-1)))
        return False


def test_a_simulated_worker_sees_only_what_was_reported_by_then():
    rec = recording()
    spy = Spy()
    out = replay.simulate_pruning(rec, spy, list(range(len(rec.trials))), workers=2)
    assert all(state == "COMPLETE" and epochs == EPOCHS for state, epochs in out.values())
    # two workers in step: at epoch e of trial 0 the other running trial has reported e (or e-1), never more
    first_two = [(n, step, other) for n, step, other in spy.seen if n in (0, 1)]
    assert all(other <= step for _, step, other in first_two)
    # trial 2 starts once trial 0 has finished: it sees all of trial 0's epochs from its first decision on
    assert [other for n, step, other in spy.seen if n == 2][0] == EPOCHS - 1


def test_pruner_replay_measures_savings_regret_and_ranking():
    rec = recording()
    results = {r.pruner: r for r in replay.replay_pruners(rec, ["none", "median", "schedule_aware"], orders=4)}
    assert results["none"].epochs_saved == 0 and results["none"].regret == 0 and results["none"].best_pruned == 0
    assert results["none"].top_changed == 0
    median = results["median"]
    assert 0 < median.epochs_saved < 1 and median.orders == 4
    # the true best (cyclical, lr 1e-3) starts slowly: the median pruner kills it in some orders
    assert median.best_pruned > 0 and median.regret > 0
    # the median pruner loses the slow starter in every order (below the median from epoch 1 on) and
    # picks monotonic lr 1e-3 instead: 0.45 dB worse in true mean, in half the orders
    assert median.best_pruned == 1.0 and median.regret_max == pytest.approx(0.4503, abs=1e-3)
    aware = results["schedule_aware"]
    # judged only once the schedules settled (cyclical at epochs 1-2 of its first cycle): it keeps the
    # slow starter in 3 of 4 orders, still prunes the clearly bad ones, and its median pick is the best
    assert aware.best_pruned == 0.25 and aware.regret == 0.0
    assert 0 < aware.epochs_saved < median.epochs_saved


def test_sampler_replay_is_a_lookup_without_repeats():
    rec = recording()
    grid = replay_search.grid_values(rec)
    assert len(grid) == 6 and max(grid.values()) == pytest.approx(24.0 - 8 * math.exp(-2.5) + 0.15)
    seen, _ = replay_search.replay_sampler(rec, "random", seed=0)
    assert sorted(seen) == sorted(grid.values())  # every configuration once, no repeats
    results = replay_search.replay_samplers(rec, ["random", "tpe"], seeds=3)
    for r in results:
        assert 1 <= r.trials_to_near <= r.trials_to_near_p90 <= 6 and r.best_after_50 <= max(grid.values())
        assert len(r.curve) == 6 and r.curve == sorted(r.curve)  # best so far never falls
    # seeds 1 and 2 differ by 0.1 everywhere: seed std 0.0707, near = 2 * 0.0707 / sqrt(2) = 0.1
    assert replay_search.seed_noise(rec) == pytest.approx(0.1 / math.sqrt(2))
    assert replay_search.near_best(rec) == pytest.approx(0.1)
    assert replay_search.random_expectation(rec) == pytest.approx(7 / 2)  # (N + 1) / (k + 1), N = 6, k = 1


def test_racing_replay_drops_seeds_of_clearly_worse_configurations_and_keeps_the_pick():
    rec = recording()
    # every configuration's seed 2 is seed 1 + 0.1: the paired noise is 0, so after two configurations
    # have both seeds, any configuration below another on a shared seed is raced out
    result = replay_search.replay_racing(rec, orders=6, workers=1)
    assert result.same_pick == 1.0 and result.regret == 0.0
    assert 0 < result.seed_trials_saved < 0.5  # the first configurations must run both seeds
    ran = replay_search.simulate_racing(rec, sorted(replay_search.config_seed_values(rec)), workers=1)
    assert sum(len(v) for v in ran.values()) < len(rec.trials)


def test_replay_command_prints_tables_and_json(tmp_path, capsys):
    from vpsearch.cli import main

    path = recording().save(tmp_path / "rec.json")
    assert main(["replay", str(path), "--pruner", "none", "--pruner", "median", "--orders", "2", "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "pruners (median over 2 random trial orders):" in text and "| median | 2 |" in text
    assert main(["replay", str(path), "--sampler", "random", "--seeds", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pruners"] == [] and data["samplers"][0]["sampler"] == "random" and data["configurations"] == 6
    assert json.loads((tmp_path / "rec.replay.json").read_text()) == data
    assert main(["replay", str(path), "--pruner", "nope"]) == 2
    assert "--pruner 'nope': expected one of" in capsys.readouterr().err


def test_shipped_recordings_replay_and_the_flat_one_refuses_an_unjudgeable_pruner():
    from pathlib import Path
    from vpsearch.reporting.study import ReportError

    folder = Path(__file__).resolve().parent.parent / "studies" / "recorded"
    wide = RecordedStudy.load(folder / "pushing_wide.json")
    assert len(wide.configurations()) == 60 and len(wide.trials) == 180 and wide.epochs == 12
    assert replay.replay_pruners(wide, ["schedule_aware"], orders=1)[0].orders == 1
    assert len(replay_search.replay_sampler(wide, "random", 0)[0]) == 60
    flat = RecordedStudy.load(folder / "pushing_grid.json")
    with pytest.raises(ReportError, match="could never be judged before their last epoch"):
        replay.replay_pruners(flat, ["schedule_aware"], orders=1)
    # by default a refused setup is left out of the replay and said so, the rest goes on
    done = replay.run_replay(flat, ["none", "schedule_aware"], [], orders=1, workers=[2], skip_refused=True)
    assert [p.pruner for p in done.pruners] == ["none"] and "schedule_aware" in done.refused


def test_the_readme_table_is_what_the_shipped_replays_say():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    replays = [json.loads((root / "studies" / "recorded" / f"{n}.replay.json").read_text())
               for n in ("pushing_wide", "dancer_wide")]
    readme = (root / "README.md").read_text()
    shown = readme.split(replay.README_BEGIN)[1].split(replay.README_END)[0].strip()
    assert shown == replay.summary_table(replays).strip(), "run python benchmarks/search_table.py --write"
    # the saved racing figures are what the code computes now (racing replays in seconds)
    rec = RecordedStudy.load(root / "studies" / "recorded" / "pushing_wide.json")
    saved = replays[0]["racing"][0]
    now = replay_search.replay_racing(rec, saved["orders"], saved["workers"])
    assert now.seed_trials_saved == pytest.approx(saved["seed_trials_saved"]) and now.same_pick == saved["same_pick"]


def test_a_study_becomes_a_recording_that_states_its_spread_noise_and_wall_time():
    from datetime import datetime, timedelta

    from vpsearch.search.records import TrialRecord, write_study

    rec = recording()
    study = optuna.create_study(direction="maximize")
    write_study(study, study_config=rec.study_config, base_config=rec.base_config)
    start = datetime(2026, 12, 7, 10, 0, 0)
    for k, t in enumerate(rec.trials):
        study.add_trial(optuna.trial.FrozenTrial(
            number=k, trial_id=k, state=optuna.trial.TrialState.COMPLETE, value=rec.value(t), params={},
            distributions={}, intermediate_values=dict(enumerate(t.curve)), system_attrs={},
            user_attrs=TrialRecord.encode(seed=t.seed, repeat=t.repeat, config_id=t.config_id),
            datetime_start=start + timedelta(seconds=10 * k), datetime_complete=start + timedelta(seconds=10 * k + 8)))
    # a trial evaluated on fewer epochs cannot be replayed and is left out
    study.add_trial(optuna.trial.FrozenTrial(
        number=99, trial_id=99, state=optuna.trial.TrialState.COMPLETE, value=1.0, params={}, distributions={},
        intermediate_values={0: 1.0}, system_attrs={}, user_attrs=TrialRecord.encode(seed=1, repeat=0, config_id=99),
        datetime_start=start, datetime_complete=start + timedelta(seconds=1)))
    back = RecordedStudy.from_study(study)
    assert len(back.trials) == len(rec.trials) and back.epochs == EPOCHS
    p = back.produced_by
    assert p["wall_seconds"] == 10 * (len(rec.trials) - 1) + 8 and p["date"] == "2026-12-07"
    assert p["configurations"] == 6 and p["seeds"] == 2 and p["seed_noise"] == pytest.approx(0.071, abs=1e-3)
    # the slow starter (cyclical, lr 1e-3) starts below all four non-cyclical configurations and ends above them
    assert p["crossing_pairs"] == "4 of 15" and p["decisive"] is True
    assert "machine" in p and p["workers"].startswith("1 x")
