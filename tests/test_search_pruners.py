"""Pruners on synthetic learning curves: median pruning kills a cyclical-KL trial at its cycle-reset
dip although it ends best; the schedule-aware pruner keeps it and still prunes a bad trial."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.pruners import HyperbandPruner, MedianPruner, NopPruner, PatientPruner

from vpsearch.config import load_config
from vpsearch.search import attrs
from vpsearch.search.pruners import (PRUNERS, ScheduleAwarePruner, best_so_far, judged_epochs, make_pruner,
                                     schedule_warmup)
from vpsearch.search.spec import PrunerSpec

EPOCHS = 15


def config(kl: str = "cyclical", cycles: int = 3, ratio: float = 0.5, tf_start: int = 4, tf_step: float = 0.1,
           epochs: int = EPOCHS) -> dict:
    return load_config("pushing-small", [f"train.epochs={epochs}", "eval.every=1", f"schedule.kl_anneal_type={kl}",
                                         f"schedule.kl_anneal_cycle={cycles}", f"schedule.kl_anneal_ratio={ratio}",
                                         f"schedule.tfr_start_decay_epoch={tf_start}",
                                         f"schedule.tfr_decay_step={tf_step}"]).to_dict()


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
                                                  user_attrs={attrs.CONFIG: config("monotonic")}))
    return study


def run_curve(study: optuna.Study, curve, cfg: dict) -> int | None:
    """Report a curve epoch by epoch as the worker does; the epoch it was pruned at, or None."""
    trial = study.ask()
    trial.set_user_attr(attrs.CONFIG, cfg)
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


def test_schedule_aware_judges_cycle_ends_after_warmup():
    cyc = config("cyclical")  # warm-up 5 (teacher forcing decays after epoch 4); cycle ends 4, 9, 14
    assert judged_epochs(cyc) == {9}  # 14 is the last epoch: pruning there would save nothing
    assert judged_epochs(config("monotonic")) == set(range(8, EPOCHS - 1))  # full KL weight from epoch 8
    every3 = load_config("pushing-small", ["train.epochs=15", "eval.every=3", "schedule.tfr_start_decay_epoch=1"])
    # evaluations 2, 5, 8, 11, 14: the last of each cycle is 2, 8, 14; 2 comes before cycle 1 is over
    assert judged_epochs(every3.to_dict()) == {8}


def test_schedule_aware_still_prunes_a_bad_trial():
    bad = lambda t: 15.0  # noqa: E731
    for patience, cfg, expected in [(1, config("cyclical"), 9), (2, config("cyclical"), None),
                                    (2, config("monotonic"), 9), (3, config("monotonic"), 10)]:
        study = study_with_references(ScheduleAwarePruner(n_startup_trials=2, patience=patience))
        assert run_curve(study, bad, cfg) == expected, (patience, cfg["schedule"]["kl_anneal_type"])


def test_schedule_aware_waits_for_enough_completed_trials():
    study = optuna.create_study(direction="maximize", pruner=ScheduleAwarePruner(n_startup_trials=2, patience=1))
    assert run_curve(study, lambda t: 15.0, config("none", tf_step=0.0)) is None  # nobody to compare with


@pytest.mark.parametrize("cfg, expected", [
    (dict(kl="cyclical", cycles=3, tf_start=20), 4),   # 15 epochs / 3 cycles: the first ends after epoch 4
    (dict(kl="cyclical", cycles=3, tf_start=20, epochs=10), 3),  # ceil(10 / 3) - 1
    (dict(kl="monotonic", ratio=0.5, tf_start=20), 8),  # weight reaches 1 at 7.5
    (dict(kl="none", tf_start=4), 5),                   # first epoch with a decayed teacher-forcing ratio
    (dict(kl="none", tf_step=0.0), 0),                  # nothing to wait for
    (dict(kl="cyclical", cycles=5, tf_start=6), 7),     # the later of 2 and 7
])
def test_schedule_warmup_known_values(cfg, expected):
    assert schedule_warmup(config(**cfg)) == expected


def test_best_so_far_is_a_running_maximum_that_skips_nan():
    assert best_so_far({0: 1.0, 2: 3.0, 1: 0.5, 3: float("nan"), 4: 2.0}, maximize=True) == {
        0: 1.0, 1: 1.0, 2: 3.0, 3: 3.0, 4: 3.0}


def test_registry_builds_every_pruner():
    kinds = {"none": NopPruner, "median": MedianPruner, "hyperband": HyperbandPruner, "patient": PatientPruner,
             "schedule_aware": ScheduleAwarePruner}
    assert set(PRUNERS) == set(kinds)
    for name, cls in kinds.items():
        assert isinstance(make_pruner(PrunerSpec(name=name), 10), cls)  # no warning either
