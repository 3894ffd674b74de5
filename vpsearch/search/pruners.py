"""Pruners by name (a plain registry) and the schedule-aware pruner.

Why a pruner of our own: cyclical KL annealing restarts beta at 0 at every cycle, and
teacher-forcing decay hands the model its own frames step by step; validation PSNR dips
right after both. Optuna's MedianPruner compares the trial's best intermediate value so
far with the median of the other trials' values at the same step, from the first step
after its warm-up, so it kills a cyclical trial at its first reset when the others' curves
are still rising, although that trial may end best. The schedule-aware pruner differs in
three ways:
(1) where it judges: only at epochs where the trial's own schedules have played out,
    read from its config through the schedule objects of schedules.py: from the
    first epoch that ends at full KL weight and trains with a decayed teacher-forcing
    ratio; with cyclical KL, in the first cycle once it holds full weight (like a monotonic
    ramp), and in every later cycle only at its last evaluation (a reset's dip and recovery
    last into the cycle's end and must not count against a trial that is doing what its
    schedule says); never at the last epoch (pruning there saves nothing);
(2) what it compares: the trial's best-so-far value with the median of the completed
    trials' best-so-far values at the same epoch (so a bar set by curves that
    themselves dipped and recovered is not the dip of one epoch);
(3) how sure it is: it prunes after `patience` judged epochs in a row below that median,
    with patience capped per trial at the number of epochs the trial can be judged at,
    so a configuration whose schedules leave few judged epochs is still prunable (a study
    with a configuration that can never be judged is refused, see unjudged_configurations);
(4) one verdict per configuration: a trial whose configuration already completed a seed is
    never pruned (racing decides about its further seeds), and one whose configuration lost a
    seed to pruning is pruned at its first judged epoch, so a configuration's seeds either all
    count or none does. The bar is the `percentile` of the completed trials (50: the median),
    lowered by `noise_margin` seed standard deviations measured at that epoch;
(5) when the early ranking means anything (``min_rank_correlation``): an epoch counts only once
    the completed trials' best-so-far values there rank their final values with a rank
    correlation of at least that much (measured on at least MIN_RANKED completed trials), so
    on curves that cross (a learner that starts low and ends best) the pruner waits for the
    epochs that predict the end, whatever the schedules. Replayed on
    studies/recorded/*.json (README, "What the search buys you").
"""

from __future__ import annotations

import itertools
import math
import statistics
import warnings
from typing import Any, Callable

import optuna
from optuna.pruners import (BasePruner, HyperbandPruner, MedianPruner, NopPruner, PatientPruner,
                            SuccessiveHalvingPruner, WilcoxonPruner)
from optuna.trial import FrozenTrial, TrialState

from vpsearch.config import Config, ConfigError, config_from_dict
from vpsearch.search.records import TrialRecord
from vpsearch.search.spec import CategoricalParam, FloatParam, PrunerSpec
from vpsearch.schedules import KLAnnealing, TeacherForcing, evaluated_epochs


def judged_epochs(cfg: Config) -> list[int]:
    """Epochs at which a trial of this config is compared with the others (module docstring, (1))."""
    epochs, every, steps = cfg.train.epochs, cfg.eval.every, cfg.train.steps_per_epoch or 1
    kl, tf = KLAnnealing.from_config(cfg), TeacherForcing.from_config(cfg.schedule)
    evals = evaluated_epochs(epochs, every)
    tf_ready = tf.first_decayed_epoch(epochs) or 0
    evals = [e for e in evals if tf_ready <= e < epochs - 1]  # pruning at the last epoch saves nothing
    if kl.kind != "cyclical":
        return [e for e in evals if kl.settled(e, steps)]
    # the first cycle starts from 0 like a monotonic ramp: judged once it holds full weight. Every
    # later one starts with a reset whose dip and recovery last into its end: judged at its last
    # evaluation only (also where a ratio of 1 never quite reaches full weight at an evaluation)
    last_in_cycle = {kl.cycle_of(e, steps): e for e in evaluated_epochs(epochs, every)}
    return [e for e in evals if last_in_cycle[kl.cycle_of(e, steps)] == e
            or (kl.cycle_of(e, steps) == 0 and kl.settled(e, steps))]


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


class ScheduleAwarePruner(BasePruner):
    """Percentile pruning on best-so-far values, at schedule-aware epochs only, with patience,
    a margin of seed noise, and one verdict per configuration (module docstring)."""

    def __init__(self, n_startup_trials: int = 2, warmup_epochs: int = 0, patience: int = 2,
                 min_delta: float = 0.0, percentile: float = 50.0, noise_margin: float = 0.0,
                 by_configuration: bool = True, min_rank_correlation: float | None = None):
        if patience < 1 or n_startup_trials < 0 or warmup_epochs < 0 or min_delta < 0 or noise_margin < 0:
            raise ValueError("ScheduleAwarePruner: patience >= 1; n_startup_trials, warmup_epochs, min_delta, "
                             "noise_margin >= 0")
        if not 0 < percentile < 100:
            raise ValueError(f"ScheduleAwarePruner: percentile must lie in (0, 100), got {percentile}")
        self.n_startup_trials = n_startup_trials
        self.warmup_epochs = warmup_epochs
        self.patience = patience
        self.min_delta = min_delta
        self.percentile = percentile
        self.noise_margin = noise_margin
        self.by_configuration = by_configuration
        self.min_rank_correlation = min_rank_correlation
        self._predictive: dict[tuple[int, int], bool] = {}  # (completed trials, epoch) -> verdict
        self._judged: dict[int, list[int] | None] = {}  # trial number -> its judged epochs (config parsed once)
        self._config_ids: dict[int, int | None] = {}  # trial number -> its configuration (record read once)

    def judged(self, trial: FrozenTrial) -> list[int] | None:
        """The trial's judged epochs from its recorded config (None: no readable config, every epoch)."""
        if trial.number not in self._judged:
            raw = TrialRecord.of(trial).config
            try:
                cfg = config_from_dict(raw, f"trial {trial.number}") if raw else None
            except (ConfigError, ValueError):
                cfg = None
            self._judged[trial.number] = judged_epochs(cfg) if cfg else None
        epochs = self._judged[trial.number]
        return None if epochs is None else [e for e in epochs if e >= self.warmup_epochs]

    def config_id(self, trial: FrozenTrial) -> int | None:
        if trial.number not in self._config_ids:
            self._config_ids[trial.number] = TrialRecord.of(trial).config_id
        return self._config_ids[trial.number]

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        judged = self.judged(trial)
        steps = sorted(s for s in trial.intermediate_values
                       if s >= self.warmup_epochs and (judged is None or s in judged))
        if not steps or trial.last_step != steps[-1]:
            return False  # no verdict at an epoch that does not count (warm-up, mid-cycle)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if self.by_configuration:
            # one verdict per configuration (module docstring, (4))
            cid = self.config_id(trial)
            siblings = [t for t in finished if cid is not None and self.config_id(t) == cid]
            if any(t.state == TrialState.COMPLETE for t in siblings):
                return False
            if siblings:
                return True
        completed = [t for t in finished if t.state == TrialState.COMPLETE]
        if len(completed) < max(1, self.n_startup_trials):
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        others = [best_so_far(t.intermediate_values, maximize) for t in completed]
        mine = best_so_far(trial.intermediate_values, maximize)
        noise = seed_noise_at(completed, others, steps[-1], self.config_id) if self.noise_margin else None
        margin = self.min_delta + self.noise_margin * (noise or 0.0)
        # a trial with fewer judged epochs than patience still gets a verdict (module docstring, (3))
        patience = min(self.patience, len(judged)) if judged else self.patience
        q = self.percentile if maximize else 100 - self.percentile
        strikes = 0
        for s in reversed(steps):  # consecutive judged epochs below the bar, most recent first
            if not self.predictive(completed, others, s):
                break  # the completed curves say this epoch does not rank the final values yet
            bars = [_at(o, s) for o in others if o and max(o) >= s]  # completed trials' best up to s
            bars = [b for b in bars if b is not None and math.isfinite(b)]
            if len(bars) < max(1, self.n_startup_trials):
                break
            bar = _percentile(bars, q)
            below = mine[s] < bar - margin if maximize else mine[s] > bar + margin
            if not below:
                break
            strikes += 1
        return strikes >= patience


    def predictive(self, completed: list[FrozenTrial], curves: list[dict[int, float]], step: int) -> bool:
        """Whether `step` ranks the trials as they end, on the completed ones: the rank correlation
        of their best-so-far values at `step` with their final values is at least
        min_rank_correlation (module docstring, (5)). Too few completed trials to tell: not yet."""
        if self.min_rank_correlation is None:
            return True
        key = (len(completed), step)
        if key not in self._predictive:
            pairs = [(c[step], t.value) for t, c in zip(completed, curves)
                     if step in c and t.value is not None and math.isfinite(c[step]) and math.isfinite(t.value)]
            rho = rank_correlation([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= MIN_RANKED else None
            self._predictive[key] = rho is not None and rho >= self.min_rank_correlation
        return self._predictive[key]


MIN_RANKED = 8  # completed trials before a rank correlation is trusted


def rank_correlation(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None where either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    if va == 0 or vb == 0:
        return None
    return sum((x - ma) * (y - mb) for x, y in zip(ra, rb)) / math.sqrt(va * vb)


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _percentile(xs: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default."""
    xs = sorted(xs)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def seed_noise_at(completed: list[FrozenTrial], curves: list[dict[int, float]], step: int,
                  config_id: Callable[[FrozenTrial], int | None]) -> float | None:
    """Seed noise of best-so-far values (`curves`, one per completed trial) at `step`: the median,
    over configurations with two or more completed seeds, of the std across their seeds (None: no
    such one yet)."""
    by_config: dict[int, list[float]] = {}
    for t, curve in zip(completed, curves):
        cid = config_id(t)
        v = _at(curve, step)
        if cid is not None and v is not None and math.isfinite(v):
            by_config.setdefault(cid, []).append(v)
    stds = [statistics.stdev(v) for v in by_config.values() if len(v) >= 2]
    return statistics.median(stds) if stds else None


def _candidate_values(p: Any) -> list[Any]:
    """Values that stand for a parameter's range when checking a space: every value of a
    categorical or a short int range, the ends and middle of anything else."""
    if isinstance(p, CategoricalParam):
        return p.values()
    if isinstance(p, FloatParam):
        return [p.low, (p.low + p.high) / 2, p.high]
    values = p.values()
    return values if len(values) <= 25 else [values[0], values[len(values) // 2], values[-1]]


def unjudged_configurations(plan: Any, limit: int = 20000) -> tuple[int, list[dict[str, Any]]]:
    """(configurations checked, those the schedule-aware pruner could never judge).

    Every combination of the parameters that change a schedule, the epochs or the
    evaluation cadence (the others cannot change when a trial is judged), over
    _candidate_values; a trial with no judged epoch before its last could never be pruned
    while prunable ones lose their bad trials.
    """
    from vpsearch.search.space import is_active, order, trial_config, updates

    relevant = [n for n in order(plan.space) if any(k.split(".")[0] in ("schedule", "train", "eval")
                                                   for v in _candidate_values(plan.space[n])
                                                   for k in updates(n, plan.space[n], v))]
    base_flat = plan.base.flat()
    seen, checked, never = set(), 0, []
    for combo in itertools.islice(itertools.product(*(_candidate_values(plan.space[n]) for n in relevant)), limit):
        params: dict[str, Any] = {}
        for name, value in zip(relevant, combo):
            if is_active(name, plan.space, params, base_flat):
                params[name] = value
        key = repr(sorted(params.items()))
        if key in seen:
            continue
        seen.add(key)
        checked += 1
        try:
            cfg = trial_config(plan.base, plan.space, params, plan.base.train.seed, "check")
        except ConfigError:
            continue  # refused by the training config: such a trial fails on its own
        if not judged_epochs(cfg):
            never.append(params)
    return checked, never


def _median_pruner(p: PrunerSpec, epochs: int) -> BasePruner:
    return MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.warmup_epochs)


# pruner name -> factory(spec, epochs per trial)
PRUNERS: dict[str, Callable[[PrunerSpec, int], BasePruner]] = {
    "none": lambda p, epochs: NopPruner(),
    "median": _median_pruner,
    "hyperband": lambda p, epochs: HyperbandPruner(min_resource=p.min_resource, max_resource=epochs,
                                                   reduction_factor=p.reduction_factor),
    "successive_halving": lambda p, epochs: SuccessiveHalvingPruner(min_resource=p.min_resource,
                                                                    reduction_factor=p.reduction_factor),
    # steps are epochs here: the test pairs the trial's curve with the best trial's, epoch by epoch
    "wilcoxon": lambda p, epochs: WilcoxonPruner(p_threshold=p.p_threshold, n_startup_steps=max(2, p.warmup_epochs)),
    "patient": lambda p, epochs: PatientPruner(_median_pruner(p, epochs), patience=p.patience,
                                               min_delta=p.min_delta),
    "schedule_aware": lambda p, epochs: ScheduleAwarePruner(p.n_startup_trials, p.warmup_epochs, p.patience,
                                                            p.min_delta, p.percentile, p.noise_margin,
                                                            min_rank_correlation=p.min_rank_correlation),
}


def make_pruner(spec: PrunerSpec, epochs: int) -> BasePruner:
    with warnings.catch_warnings():  # PatientPruner is "experimental" in Optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return PRUNERS[spec.name](spec, epochs)
