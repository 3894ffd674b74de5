"""The stop rule: a study ends early once the best can no longer improve by more than the seed noise.

Optuna's Terminator compares a Gaussian-process bound on the regret (how much better than
the best seen the unseen rest of the space can still be, RegretBoundEvaluator) with the
noise of the objective (there, the cross-validation error). Here the noise is measured by
the study itself: the standard deviation of one configuration's value over its seeds
(median over the configurations with at least two finished seeds, ``seed_noise``), and the
GP sees one observation per configuration (its mean over seeds; configurations.py), as the
samplers do. ``stop_verdict`` says whether to stop and why, in the words `study run`
prints; the replay measures the trials it saves and the regret it costs
(reporting/replay_search.py).
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

MIN_CONFIGURATIONS = 20  # Optuna's RegretBoundEvaluator default: fewer and the GP bound means little


@dataclass(frozen=True)
class StopVerdict:
    stop: bool
    regret_bound: float | None
    noise: float | None
    configurations: int

    @property
    def reason(self) -> str:
        if self.regret_bound is None or self.noise is None:
            return ""
        rel = "below" if self.stop else "above"
        return (f"the regret bound over the rest of the space ({self.regret_bound:.3g}) is {rel} the seed noise "
                f"({self.noise:.3g}) after {self.configurations} configurations")


def seed_noise(per_config: list[list[float]]) -> float | None:
    """Median over configurations (two or more finite seeds) of the std of their values over seeds."""
    stds = [statistics.stdev(v) for v in ([x for x in c if math.isfinite(x)] for c in per_config) if len(v) >= 2]
    return statistics.median(stds) if stds else None


def regret_bound(config_trials: list[FrozenTrial], direction: StudyDirection, seed: int = 0) -> float | None:
    """Optuna's GP regret bound on one trial per configuration (None below MIN_CONFIGURATIONS)."""
    from optuna.terminator import RegretBoundEvaluator

    complete = [t for t in config_trials if t.state == TrialState.COMPLETE]
    if len(complete) < MIN_CONFIGURATIONS:
        return None
    with warnings.catch_warnings():  # the terminator is "experimental" in Optuna
        warnings.simplefilter("ignore")
        return float(RegretBoundEvaluator(min_n_trials=MIN_CONFIGURATIONS, seed=seed).evaluate(complete, direction))


def stop_verdict(config_trials: list[FrozenTrial], direction: StudyDirection, noise: float | None,
                 seed: int = 0) -> StopVerdict:
    """Stop when the regret bound is below the seed noise (module docstring)."""
    n = sum(t.state == TrialState.COMPLETE for t in config_trials)
    if noise is None or n < MIN_CONFIGURATIONS:
        return StopVerdict(False, None, noise, n)
    bound = regret_bound(config_trials, direction, seed)
    return StopVerdict(bound is not None and bound < noise, bound, noise, n)
