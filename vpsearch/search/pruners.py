"""Pruners by name (a plain registry) and the schedule-aware pruner.

Why a pruner of our own: cyclical KL annealing restarts beta at 0 at every cycle, and
teacher-forcing decay hands the model its own frames step by step; validation PSNR dips
right after both. A median pruner compares the current value at each epoch, so it kills
a cyclical trial at its first dip even when that trial ends best. The schedule-aware
pruner (1) judges a trial only after its first full KL cycle (or monotonic ramp) and its
first teacher-forcing decay step, and with cyclical KL only at the last evaluation of each
cycle; (2) compares best-so-far values with the completed trials' best-so-far at the same
epoch (Optuna's median compares with their current value); (3) prunes only after
`patience` judged epochs in a row below that median.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import optuna
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner, PatientPruner
from optuna.trial import FrozenTrial, TrialState

from vpsearch.search import attrs
from vpsearch.search.spec import PrunerSpec


def schedule_warmup(config: dict[str, Any] | None) -> int:
    """First epoch at which a trial may be judged, from its training config (a dict).

    cyclical KL: the last epoch of the first cycle; monotonic KL: the first epoch at full
    weight (end of the ramp); teacher forcing: the first epoch trained with a decayed ratio.
    """
    if not config:
        return 0
    s, epochs = config["schedule"], int(config["train"]["epochs"])
    kl = 0
    if s["kl_anneal_type"] == "cyclical":
        kl = math.ceil(epochs / s["kl_anneal_cycle"] - 1e-9) - 1
    elif s["kl_anneal_type"] == "monotonic":
        kl = math.ceil(s["kl_anneal_ratio"] * epochs - 1e-9)
    tf = 0
    if s["tfr_decay_step"] > 0 and s["tfr"] > s["tfr_lower_bound"] and s["tfr_start_decay_epoch"] + 1 < epochs:
        tf = s["tfr_start_decay_epoch"] + 1
    return min(epochs - 1, max(kl, tf))


def judged_epochs(config: dict[str, Any] | None) -> set[int] | None:
    """Epochs at which a trial is compared with the others (None: every reported epoch).

    Evaluated epochs from the warm-up on, except the last (pruning there saves nothing and
    would lose a finished result); with cyclical KL only the last evaluation of each cycle,
    where the cycle has played out: in between, a reset's dip and recovery would count
    against a trial that is doing what its schedule says.
    """
    if not config:
        return None
    epochs, every = int(config["train"]["epochs"]), int(config["eval"]["every"])
    evals = [e for e in range(epochs) if (e + 1) % every == 0 or e == epochs - 1]
    s = config["schedule"]
    if s["kl_anneal_type"] == "cyclical":
        period = epochs / s["kl_anneal_cycle"]

        def cycle(e: int) -> int:
            return math.floor(e / period + 1e-9)
        evals = [e for i, e in enumerate(evals) if i == len(evals) - 1 or cycle(evals[i + 1]) != cycle(e)]
    warm = schedule_warmup(config)
    return {e for e in evals if e >= warm and e < epochs - 1}  # pruning at the last epoch saves nothing


def best_so_far(values: dict[int, float], maximize: bool) -> dict[int, float]:
    """Running best of a learning curve, step by step."""
    out, best = {}, -math.inf if maximize else math.inf
    for step in sorted(values):
        v = values[step]
        if math.isfinite(v):
            best = max(best, v) if maximize else min(best, v)
        out[step] = best
    return out


def _at(curve: dict[int, float], step: int) -> float | None:
    """A best-so-far curve's value at `step` (its last report at or before it)."""
    keys = [k for k in curve if k <= step]
    return curve[max(keys)] if keys else None


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else 0.5 * (xs[mid - 1] + xs[mid])


class ScheduleAwarePruner(BasePruner):
    """Median pruning on best-so-far values, at schedule-aware epochs only, with patience."""

    def __init__(self, n_startup_trials: int = 2, warmup_epochs: int = 0, patience: int = 2,
                 min_delta: float = 0.0):
        self.n_startup_trials = n_startup_trials
        self.warmup_epochs = warmup_epochs
        self.patience = patience
        self.min_delta = min_delta

    def judged(self, trial: FrozenTrial) -> list[int]:
        """The trial's reported epochs that count, oldest first."""
        judged = judged_epochs(trial.user_attrs.get(attrs.CONFIG))
        return sorted(s for s in trial.intermediate_values
                      if s >= self.warmup_epochs and (judged is None or s in judged))

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        steps = self.judged(trial)
        if not steps or trial.last_step != steps[-1]:
            return False  # no verdict at an epoch that does not count (warm-up, mid-cycle)
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(completed) < max(1, self.n_startup_trials):
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        others = [best_so_far(t.intermediate_values, maximize) for t in completed]
        mine = best_so_far(trial.intermediate_values, maximize)
        strikes = 0
        for s in reversed(steps):  # consecutive judged epochs below the bar, most recent first
            bars = [_at(o, s) for o in others if o and max(o) >= s]  # completed trials' best up to s
            bars = [b for b in bars if b is not None and math.isfinite(b)]
            if len(bars) < max(1, self.n_startup_trials):
                break
            bar = _median(bars)
            below = mine[s] < bar - self.min_delta if maximize else mine[s] > bar + self.min_delta
            if not below:
                break
            strikes += 1
        return strikes >= self.patience


def _median_pruner(p: PrunerSpec, epochs: int) -> BasePruner:
    return MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.warmup_epochs)


# pruner name -> factory(spec, epochs per trial)
PRUNERS: dict[str, Callable[[PrunerSpec, int], BasePruner]] = {
    "none": lambda p, epochs: NopPruner(),
    "median": _median_pruner,
    "hyperband": lambda p, epochs: HyperbandPruner(min_resource=p.min_resource, max_resource=epochs,
                                                   reduction_factor=p.reduction_factor),
    "patient": lambda p, epochs: PatientPruner(_median_pruner(p, epochs), patience=p.patience,
                                               min_delta=p.min_delta),
    "schedule_aware": lambda p, epochs: ScheduleAwarePruner(p.n_startup_trials, p.warmup_epochs, p.patience,
                                                            p.min_delta),
}


def make_pruner(spec: PrunerSpec, epochs: int) -> BasePruner:
    with warnings.catch_warnings():  # PatientPruner is "experimental" in Optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return PRUNERS[spec.name](spec, epochs)
