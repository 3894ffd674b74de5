"""Replay of racing over seeds, the stop rule and the samplers on a recording (vpsearch replay).

Targets follow the recording's own noise: "near the best" means within 2 seed standard
errors of the grid's best configuration mean (``near_best``), where a seed standard error is
the seed noise (the median over configurations of the std of their value over seeds) over
the square root of the seeds a configuration has.

- Racing (search/racing.py): W simulated workers; a free worker continues the oldest
  configuration whose previous seed has finished and that is still in the race, else starts
  the next configuration of the shuffled order. After each seed every unfinished
  configuration is tested again. Per order: the share of seed-trials not run, and whether
  the pick (the best mean among configurations that ran every seed) is the pick of running
  every seed.
- Samplers: the space is the recording's grid; each sampler (through the study driver's own
  ConfigSampler) proposes configurations that are looked up (their mean over seeds). Per
  sampler over N seeds: trials to come near the best (median and 90th percentile) and the
  best-so-far curve; random sampling without replacement has a closed form.
- Stop rule (search/stopping.py): along the default sampler's replays, the study stops at
  the first configuration where the regret bound falls below the seed noise measured on the
  configurations seen so far. Per seed: configurations run and the regret at the stop.
"""

from __future__ import annotations

import heapq
import math
import statistics
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection

from vpsearch.reporting.recorded import RecordedStudy
from vpsearch.reporting.study import ReportError
from vpsearch.search import stopping
from vpsearch.search.racing import final_pick, paired_noise, race_verdict
from vpsearch.search.spec import SamplerSpec

STOP_EVERY = 2  # the stop rule is evaluated after every this many configurations (a GP fit each)


def config_seed_values(rec: RecordedStudy) -> dict[int, dict[int, float]]:
    """Configuration -> seed -> the trial's best value (what the study ranks it by)."""
    out: dict[int, dict[int, float]] = {}
    for t in rec.trials:
        out.setdefault(t.config_id, {})[t.seed] = rec.value(t)
    return out


def seed_noise(rec: RecordedStudy) -> float:
    """The recording's seed noise, measured as a study measures it (stopping.seed_noise)."""
    return stopping.seed_noise([list(v.values()) for v in config_seed_values(rec).values()]) or 0.0


def near_best(rec: RecordedStudy) -> float:
    """2 seed standard errors of a configuration mean: how close to the best counts as reaching it."""
    seeds = statistics.median(len(v) for v in config_seed_values(rec).values())
    return 2 * seed_noise(rec) / math.sqrt(seeds)


# -- racing -------------------------------------------------------------------------------------
@dataclass
class RacingResult:
    orders: int
    workers: int
    seed_trials_saved: float  # median share of seed-trials not run
    same_pick: float  # share of orders whose pick is the pick of running every seed
    regret: float  # median true-mean gap between the full pick and the raced pick


def simulate_racing(rec: RecordedStudy, order: list[int], workers: int) -> dict[int, dict[int, float]]:
    """The seeds each configuration ran, with their values, for one order of configurations."""
    values = config_seed_values(rec)
    seeds_of = {c: sorted(v) for c, v in values.items()}  # repeat order: the study's seeds in order
    seconds = {t.config_id: t.epoch_seconds * rec.epochs for t in rec.trials}
    queue = list(order)
    ran: dict[int, dict[int, float]] = {}
    running: set[int] = set()
    out_of_race: set[int] = set()
    heap: list[tuple[float, int, int, int]] = []
    seq = 0

    def next_job() -> int | None:
        for c in ran:  # configurations in the order they started: the oldest first
            if c not in running and c not in out_of_race and len(ran[c]) < len(seeds_of[c]):
                return c
        if queue:
            c = queue.pop(0)
            ran[c] = {}
            return c
        return None

    def start(now: float) -> bool:
        nonlocal seq
        c = next_job()
        if c is None:
            return False
        running.add(c)
        seq += 1
        heapq.heappush(heap, (now + seconds[c], seq, c, seeds_of[c][len(ran[c])]))
        return True

    for _ in range(workers):
        start(0.0)
    while heap:
        now, _, c, seed = heapq.heappop(heap)
        running.discard(c)
        ran[c][seed] = values[c][seed]
        noise = paired_noise(ran, rec.maximize)  # once per finished seed, for every verdict it allows
        for other in ran:
            if other not in out_of_race and other not in running and len(ran[other]) < len(seeds_of[other]):
                if race_verdict(other, ran, rec.maximize, noise=noise).raced_out:
                    out_of_race.add(other)
        while len(running) < workers and start(now):
            pass
    return ran


def replay_racing(rec: RecordedStudy, orders: int = 20, workers: int = 2, seed: int = 0) -> RacingResult:
    values = config_seed_values(rec)
    repeats = max(len(v) for v in values.values())
    full_pick = final_pick(values, repeats, rec.maximize)
    true_mean = {c: statistics.fmean(v.values()) for c, v in values.items()}
    sign = 1 if rec.maximize else -1
    total = sum(len(v) for v in values.values())
    rng = np.random.default_rng(seed)
    configs = sorted(values)
    saved, same, regret = [], 0, []
    for _ in range(orders):
        order = [configs[i] for i in rng.permutation(len(configs))]
        ran = simulate_racing(rec, order, workers)
        saved.append(1 - sum(len(v) for v in ran.values()) / total)
        pick = final_pick(ran, repeats, rec.maximize)
        same += pick == full_pick
        regret.append(sign * (true_mean[full_pick] - true_mean[pick]) if pick is not None else math.inf)
    return RacingResult(orders, workers, statistics.median(saved), same / orders, statistics.median(regret))


# -- samplers -----------------------------------------------------------------------------------
@dataclass
class SamplerResult:
    sampler: str
    seeds: int
    grid: int  # distinct configurations
    trials_to_near: float  # median trials to come within near_best of the grid's best
    trials_to_near_p90: float
    best_after_25: float  # median best value after 25% of the grid
    best_after_50: float
    curve: list[float] = field(default_factory=list)  # median best-so-far value after each trial


def seed_values_by_params(rec: RecordedStudy) -> dict[str, list[float]]:
    """Configuration (its params, as a key) -> its seeds' values."""
    out: dict[str, list[float]] = {}
    for t in rec.trials:
        out.setdefault(_key(t.params), []).append(rec.value(t))
    return out


def grid_values(rec: RecordedStudy) -> dict[str, float]:
    """Configuration (its params, as a key) -> mean best value over its seeds."""
    return {k: statistics.fmean(v) for k, v in seed_values_by_params(rec).items()}


def _key(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def replay_sampler(rec: RecordedStudy, name: str, seed: int, stop_rule: bool = False
                   ) -> tuple[list[float], int | None]:
    """(values of the configurations `name` proposes, in order, until the grid is exhausted;
    the number of configurations after which the stop rule would have ended the study)."""
    from vpsearch.search.configurations import sampler_trials
    from vpsearch.search.plan import StudyPlan
    from vpsearch.search.samplers import ConfigSampler
    from vpsearch.search.worker import take_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_seed = seed_values_by_params(rec)
    values = {k: statistics.fmean(v) for k, v in per_seed.items()}
    plan = rec.plan
    spec = plan.spec.model_copy(update={"sampler": SamplerSpec(name=name, seed=seed), "repeats": 1, "seeds": None,
                                        "budget": plan.spec.budget.model_copy(update={"n_trials": len(values)})})
    sim = StudyPlan(spec, plan.base, plan.source)
    study = optuna.create_study(direction=spec.objective.direction, sampler=ConfigSampler(sim))
    direction = StudyDirection.MAXIMIZE if rec.maximize else StudyDirection.MINIMIZE
    seen: list[float] = []
    stopped: int | None = None
    seen_keys: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while (got := take_trial(study, sim, "replay:0")) is not None and len(seen) < len(values):
            trial, params, _ = got
            value = values.get(_key(params))
            if value is None:
                raise ReportError(f"replay: sampler {name} proposed {params}, which the recording of {rec.name} "
                                  "does not hold (replay samplers on a grid study)")
            study.tell(trial, value)
            seen.append(value)
            seen_keys.append(_key(params))
            if stop_rule and stopped is None and len(seen) % STOP_EVERY == 0:
                noise = stopping.seed_noise([per_seed[k] for k in seen_keys])
                trials = sampler_trials(study.get_trials(deepcopy=False), [direction], "penalty")
                if stopping.stop_verdict(trials, direction, noise, seed).stop:
                    stopped = len(seen)
    return seen, stopped


def running_best(values: list[float], sign: int) -> list[float]:
    out, best = [], -math.inf if sign > 0 else math.inf
    for v in values:
        best = max(best, v) if sign > 0 else min(best, v)
        out.append(best)
    return out


def replay_samplers(rec: RecordedStudy, names: list[str], seeds: int = 20) -> list[SamplerResult]:
    values = grid_values(rec)
    sign = 1 if rec.maximize else -1
    best = max(values.values(), key=lambda v: sign * v)
    near = near_best(rec)
    n = len(values)
    results = []
    for name in names:
        to_near, after25, after50, curves = [], [], [], []
        for s in range(seeds):
            seen, _ = replay_sampler(rec, name, s)
            running = running_best(seen, sign)
            curves.append(running)
            to_near.append(next(i + 1 for i, v in enumerate(running) if sign * (best - v) <= near))
            after25.append(running[max(0, math.ceil(n / 4) - 1)])
            after50.append(running[max(0, math.ceil(n / 2) - 1)])
        curve = [float(np.median([c[i] for c in curves])) for i in range(n)]
        results.append(SamplerResult(name, seeds, n, statistics.median(to_near), float(np.percentile(to_near, 90)),
                                     statistics.median(after25), statistics.median(after50), curve))
    return results


def random_expectation(rec: RecordedStudy) -> float:
    """Expected trials for random sampling without replacement to hit one of the k configurations
    near the best among N: (N + 1) / (k + 1)."""
    values = grid_values(rec)
    sign = 1 if rec.maximize else -1
    best = max(values.values(), key=lambda v: sign * v)
    near = near_best(rec)
    k = sum(sign * (best - v) <= near for v in values.values())
    return (len(values) + 1) / (k + 1)


# -- the stop rule ------------------------------------------------------------------------------
@dataclass
class StopResult:
    sampler: str
    seeds: int
    grid: int
    stopped: float  # share of replays in which the rule stopped the study before the grid ran out
    configurations: float  # median configurations run (the grid's size where it never stopped)
    regret: float  # median gap between the grid's best and the best found at the stop


def replay_stop_rule(rec: RecordedStudy, sampler: str, seeds: int = 10) -> StopResult:
    values = grid_values(rec)
    sign = 1 if rec.maximize else -1
    best = max(values.values(), key=lambda v: sign * v)
    ran, regrets, stops = [], [], 0
    for s in range(seeds):
        seen, stopped = replay_sampler(rec, sampler, s, stop_rule=True)
        upto = stopped or len(seen)
        stops += stopped is not None
        ran.append(upto)
        regrets.append(sign * (best - max(seen[:upto], key=lambda v: sign * v)))
    return StopResult(sampler, seeds, len(values), stops / seeds, statistics.median(ran), statistics.median(regrets))
