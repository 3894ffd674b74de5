"""How long a study will take here: per trial and for what is left of its budget.

From the study's own finished trials when it has some (a resumed study), else from a probe
of its base config at the precision and threads its workers will use (training/estimate.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from vpsearch import fmt
from vpsearch.search.plan import StudyPlan
from vpsearch.search.status import trial_seconds


@dataclass(frozen=True)
class StudyEstimate:
    per_trial: float  # seconds
    source: str  # where the figure comes from, for people

    def line(self, trials_left: int, workers: int) -> str:
        rounds = math.ceil(trials_left / max(1, workers))
        return (f"time: {self.source}; at most {fmt.duration(rounds * self.per_trial)} for the {trials_left} "
                f"trial(s) left on {workers} worker(s) (pruned trials end sooner)")


def finished_durations(trials: list[FrozenTrial]) -> list[float]:
    """Wall seconds of the trials that ran every epoch (pruned and failed ones stopped early)."""
    return [d for t in trials if t.state == TrialState.COMPLETE and (d := trial_seconds(t)) is not None]


def estimate_study(plan: StudyPlan, device: str, threads: int, trials: list[FrozenTrial] = ()) -> StudyEstimate:
    done = finished_durations(list(trials))
    if done:
        return StudyEstimate(statistics.median(done), f"{fmt.duration(statistics.median(done))} per trial, the "
                                                      f"median of {len(done)} complete trial(s) of this study")
    from vpsearch.training.estimate import probe

    cfg = plan.base.model_copy(deep=True)
    cfg.train.device, cfg.train.num_threads, cfg.train.progress = device, threads, False
    e = probe(cfg)
    return StudyEstimate(e.trial_seconds, e.describe().replace(" per run ", " per trial ", 1))
