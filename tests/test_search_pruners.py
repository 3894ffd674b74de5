"""Pruners on synthetic learning curves: median pruning kills a cyclical-KL trial at its cycle-reset
dip although it ends best; the schedule-aware pruner keeps it and still prunes a bad trial."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.pruners import (HyperbandPruner, MedianPruner, NopPruner, PatientPruner, SuccessiveHalvingPruner,
                            WilcoxonPruner)

from vpsearch.config import Config, load_config
from vpsearch.search.plan import load_study
from vpsearch.search.pruners import (PRUNERS, ScheduleAwarePruner, best_so_far, judged_epochs, make_pruner,
                                     unjudged_configurations)
from vpsearch.search.records import TrialRecord
from vpsearch.search.spec import PrunerSpec

STUDIES = __import__("pathlib").Path(__file__).resolve().parent.parent / "studies"

EPOCHS = 15


def config(kl: str = "cyclical", cycles: int = 3, ratio: float = 0.5, tf_start: int = 4, tf_step: float = 0.1,
           epochs: int = EPOCHS, every: int = 1) -> Config:
    return load_config("pushing-small", [f"train.epochs={epochs}", f"eval.every={every}", f"schedule.kl_anneal_type={kl}",
                                         f"schedule.kl_anneal_cycle={cycles}", f"schedule.kl_anneal_ratio={ratio}",
                                         f"schedule.tfr_start_decay_epoch={tf_start}",
                                         f"schedule.tfr_decay_step={tf_step}"])


def reference(t: int, k: int) -> float:
    """A smooth curve (monotonic KL): rises to a ~24 dB plateau."""
    return 20 + 4 * (1 - math.exp(-t / 3)) + 0.2 * k


def cyclical(t: int) -> float:
    """A cyclical-KL trial (3 cycles of 5 epochs): level with the references in cycle 1, then PSNR
    dips at each reset (epochs 5 and 10) and recovers past the old best before the next one;
    it ends best of all."""
    after_reset = {5: 21.0, 6: 22.5, 7: 23.3, 8: 23.9, 9: 24.6, 10: 22.0, 11: 23.5, 12: 24.5, 13: 25.2, 14: 26.0}
    return after_reset.get(t, reference(t, 0) + 0.4)


def study_with_references(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for k in range(4):
        curve = {t: reference(t, k) for t in range(EPOCHS)}
        study.add_trial(optuna.trial.create_trial(value=max(curve.values()), intermediate_values=curve,
                                                  user_attrs=TrialRecord(config=config("monotonic").to_dict()).attrs()))
    return study


def run_curve(study: optuna.Study, curve, cfg: Config) -> int | None:
    """Report a curve epoch by epoch as the worker does; the epoch it was pruned at, or None."""
    trial = study.ask()
    trial.set_user_attr("config", cfg.to_dict())  # as TrialRecord.config
    for t in range(EPOCHS):
        trial.report(curve(t), t)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return t
    study.tell(trial, max(curve(t) for t in range(EPOCHS)))
    return None


def test_median_prunes_the_cyclical_trial_that_ends_best():
    study = study_with_references(MedianPruner(n_startup_trials=2, n_warmup_steps=0))
    assert run_curve(study, cyclical, config("cyclical")) == 5  # killed at the first cycle reset
    assert cyclical(EPOCHS - 1) > max(t.value for t in study.trials[:4])


@pytest.mark.parametrize("patience", [1, 2])
def test_schedule_aware_keeps_it_and_it_ends_best(patience):
    study = study_with_references(ScheduleAwarePruner(n_startup_trials=2, patience=patience))
    assert run_curve(study, cyclical, config("cyclical")) is None
    assert study.best_trial.number == 4 and study.best_value == 26.0


def test_schedule_aware_judges_where_the_schedules_have_played_out():
    # 3 cycles of 5 epochs, ramp 2.5: full weight at 3, 4 | 8, 9 | 13, 14; teacher forcing decays after
    # epoch 4. Cycle 0 is judged like a ramp once at full weight, later cycles at their last epoch only
    # (a reset's dip lasts into it); 14 is the last epoch: pruning there would save nothing
    assert judged_epochs(config("cyclical", tf_start=1)) == [3, 4, 9]
    assert judged_epochs(config("cyclical")) == [9]
    assert judged_epochs(config("monotonic")) == list(range(8, EPOCHS - 1))  # full KL weight from epoch 8
    # ratio 1: a cycle never quite reaches 1 at an evaluation; its last evaluation is where it played out
    assert judged_epochs(config("cyclical", ratio=1.0, tf_start=0)) == [4, 9]
    every3 = config("cyclical", tf_start=1, every=3)  # evaluations 2, 5, 8, 11, 14
    # 2 is the last look at cycle 0 (the next comes after a reset), 8 the end of cycle 1; 5 and 11
    # are mid-cycle after a reset
    assert judged_epochs(every3) == [2, 8]
    # never decays in the budget: nothing to wait for; a ramp over all 15 epochs is never judged
    assert judged_epochs(config("none", tf_start=20)) == list(range(EPOCHS - 1))
    assert judged_epochs(config("monotonic", ratio=1.0, tf_start=0)) == []


def test_one_cycle_is_judged_like_the_monotonic_ramp_it_equals():
    assert judged_epochs(config("cyclical", cycles=1)) == judged_epochs(config("monotonic"))


@pytest.mark.parametrize("name", ["quickstart", "bayes_bair", "dance_tpe", "annealing_vs_tfr"])
def test_every_configuration_of_a_shipped_study_can_be_judged(name):
    plan = load_study(STUDIES / f"{name}.yaml")
    checked, never = unjudged_configurations(plan)
    assert checked >= 9 and never == []


def test_a_space_with_unjudgeable_configurations_is_refused_naming_them(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase: pushing-small\nbudget: {n_trials: 4, epochs: 10}\n"
                    "search_space:\n  schedule.kl_anneal_ratio: {type: categorical, choices: [0.3, 1.0]}\n"
                    "overrides: [schedule.kl_anneal_type=monotonic, schedule.tfr_start_decay_epoch=0]\n"
                    "pruner: {name: schedule_aware}\n")
    with pytest.raises(Exception, match=r"field pruner: schedule_aware could never judge the configuration "
                                        r"schedule.kl_anneal_ratio=1.0: .*last of 10 epochs"):
        load_study(path)


def test_patience_is_capped_at_the_epochs_a_trial_can_be_judged_at():
    # 5 cycles of 3 epochs (counted per iteration: a 1.5-epoch ramp is too short per epoch), teacher
    # forcing decays after epoch 10: judged at epoch 11 only. With patience 3 and no cap such a trial
    # could never be pruned, while configurations judged more often lose their bad trials
    cfg = config("cyclical", cycles=5, tf_start=10)
    assert cfg.schedule.kl_anneal_unit == "iteration" and judged_epochs(cfg) == [11]
    study = study_with_references(ScheduleAwarePruner(n_startup_trials=2, patience=3))
    assert run_curve(study, lambda t: 15.0, cfg) == 11


def test_schedule_aware_still_prunes_a_bad_trial():
    bad = lambda t: 15.0  # noqa: E731
    for patience, cfg, expected in [(1, config("cyclical"), 9), (2, config("cyclical"), 9),
                                    (2, config("monotonic"), 9), (3, config("monotonic"), 10)]:
        study = study_with_references(ScheduleAwarePruner(n_startup_trials=2, patience=patience))
        assert run_curve(study, bad, cfg) == expected, (patience, cfg.schedule.kl_anneal_type)


def test_schedule_aware_waits_for_enough_completed_trials():
    study = optuna.create_study(direction="maximize", pruner=ScheduleAwarePruner(n_startup_trials=2, patience=1))
    assert run_curve(study, lambda t: 15.0, config("none", tf_step=0.0)) is None  # nobody to compare with


def test_best_so_far_is_a_running_maximum_that_skips_nan():
    assert best_so_far({0: 1.0, 2: 3.0, 1: 0.5, 3: float("nan"), 4: 2.0}, maximize=True) == {
        0: 1.0, 1: 1.0, 2: 3.0, 3: 3.0, 4: 3.0}


def test_registry_builds_every_pruner():
    kinds = {"none": NopPruner, "median": MedianPruner, "hyperband": HyperbandPruner, "patient": PatientPruner,
             "successive_halving": SuccessiveHalvingPruner, "wilcoxon": WilcoxonPruner,
             "schedule_aware": ScheduleAwarePruner}
    assert set(PRUNERS) == set(kinds)
    for name, cls in kinds.items():
        assert isinstance(make_pruner(PrunerSpec(name=name), 10), cls)  # no warning either


def test_rank_correlation_matches_spearman_with_ties():
    from scipy.stats import spearmanr

    from vpsearch.search.pruners import rank_correlation

    a, b = [1.0, 2.0, 2.0, 5.0, 3.0], [10.0, 30.0, 20.0, 50.0, 40.0]
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert rank_correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert rank_correlation([1.0, 1.0], [1.0, 2.0]) is None


def crossing_study(pruner: optuna.pruners.BasePruner, n: int = 10) -> optuna.Study:
    """n completed trials whose epoch-3 ranking is the reverse of their final one: slow starters
    end best (curves that cross, as learners on more data do)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    cfg = config("none", tf_start=0).to_dict()
    for k in range(n):
        curve = {t: 20 + (n - k) * 0.1 * min(t, 3) + (k * 0.5 if t >= 8 else 0) for t in range(EPOCHS)}
        study.add_trial(optuna.trial.create_trial(value=max(curve.values()), intermediate_values=curve,
                                                  user_attrs=TrialRecord(config=cfg).attrs()))
    return study


def test_the_rank_gate_waits_for_epochs_that_predict_the_end():
    def slow(t):  # the slowest start of all, then the best end
        return 20 + (0.05 * min(t, 3)) + (6.0 if t >= 8 else 0)

    ungated = crossing_study(ScheduleAwarePruner(n_startup_trials=2, patience=2))
    assert run_curve(ungated, slow, config("none", tf_start=0)) == 2  # below the median at 1 and 2: patience 2
    gated = crossing_study(ScheduleAwarePruner(n_startup_trials=2, patience=2, min_rank_correlation=0.7))
    assert run_curve(gated, slow, config("none", tf_start=0)) is None  # epochs 0-7 rank the end backwards
    assert gated.best_trial.number == 10
    # once the epochs rank the end (from epoch 8), a trial below the bar there is still pruned
    assert run_curve(gated, lambda t: 20.0, config("none", tf_start=0)) == 9
    # too few completed trials to measure the ranking: no verdict at all
    few = crossing_study(ScheduleAwarePruner(n_startup_trials=2, min_rank_correlation=0.7), n=4)
    assert run_curve(few, lambda t: 0.0, config("none", tf_start=0)) is None


def test_the_rank_gate_is_a_study_option():
    pruner = make_pruner(PrunerSpec(name="schedule_aware", min_rank_correlation=0.8), 10)
    assert pruner.min_rank_correlation == 0.8
    with pytest.raises(ValueError, match="min_rank_correlation is not an option of pruner median"):
        PrunerSpec(name="median", min_rank_correlation=0.8)
