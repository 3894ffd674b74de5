"""`vpsearch replay`: what pruning and Bayesian search would have saved, on a study's own curves.

Tabular HPO benchmarks (LCBench, YAHPO Gym) and simulator back-ends (Syne Tune) record
full learning curves once and replay a search on them in seconds; this does the same on
a vpsearch study recorded with ``pruner: none`` (recorded.py).

Pruners: the recorded trials are shuffled and run by W simulated workers; a trial's
epoch e ends at the simulated time its worker has spent on it (each epoch takes the
trial's recorded seconds), reports its recorded value to an in-memory Optuna study with
the real pruner object, and is stopped when the pruner says so. A decision therefore
sees only what other trials had reported by then. Per pruner, over N orders (medians):
epochs saved, regret of the best configuration found (its mean over seeds, among the
configurations whose seeds all completed) against the recording's true best, how often
the true best configuration lost a seed to pruning, and how often the report's ranking of
strategies (tables.rank_strategies) would change.

Samplers: the search space is the recording's grid; each sampler (through the study
driver's own ConfigSampler: one observation per configuration, no repeats) proposes
configurations that are looked up (the mean over seeds) until the grid is exhausted.
Per sampler, over N seeds: the median number of trials to come within 0.3 dB of the
grid's best, and the best value after 25% and 50% of the grid. Random sampling without
replacement has a closed form: (N + 1) / (k + 1) trials on average to reach one of k good
configurations of N.
"""

from __future__ import annotations

import heapq
import math
import statistics
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from vpsearch.reporting.recorded import RecordedStudy
from vpsearch.reporting.study import ReportError
from vpsearch.search.pruners import PRUNERS, make_pruner
from vpsearch.search.records import write_trial
from vpsearch.search.spec import PRUNER_NAMES, SAMPLER_NAMES, PrunerSpec, SamplerSpec

DEFAULT_PRUNERS = ["none", "median", "hyperband", "patient", "schedule_aware"]
DEFAULT_SAMPLERS = ["random", "tpe", "gp", "cmaes", "skopt"]
WITHIN_DB = 0.3


@dataclass
class PrunerResult:
    pruner: str
    orders: int
    epochs_saved: float  # median fraction of training epochs not trained
    regret: float  # median dB between the true best configuration and the best one found
    regret_max: float
    best_pruned: float  # share of orders in which the true best configuration lost a seed
    ranking_changed: float  # share of orders in which the report's strategy ranking differs
    top_changed: float  # share of orders in which the report's top strategy differs


@dataclass
class SamplerResult:
    sampler: str
    seeds: int
    grid: int  # distinct configurations
    trials_to_within: float  # median trials to come within WITHIN_DB of the grid's best
    best_after_25: float  # median best value after 25% of the grid
    best_after_50: float


# -- pruners ----------------------------------------------------------------------------------
def _pruner(rec: RecordedStudy, name: str) -> optuna.pruners.BasePruner:
    spec = rec.plan.spec.pruner
    options = spec.model_dump(exclude={"name"}, exclude_unset=True) if spec.name == name else {}
    known = set(PrunerSpec.model_fields) - {"name"}
    from vpsearch.search.spec import PRUNER_OPTIONS

    kept = {k: v for k, v in options.items() if k in known and k in PRUNER_OPTIONS[name]}
    return make_pruner(PrunerSpec(name=name, **kept), rec.epochs)


def simulate_pruning(rec: RecordedStudy, pruner: optuna.pruners.BasePruner, order: list[int],
                     workers: int) -> dict[int, tuple[str, int]]:
    """{trial index: (COMPLETE | PRUNED, epochs trained)} for one order of the recorded trials."""
    direction = "maximize" if rec.maximize else "minimize"
    study = optuna.create_study(direction=direction, pruner=pruner, sampler=optuna.samplers.RandomSampler(0))
    configs = {i: rec.config(t).to_dict() for i, t in enumerate(rec.trials)}
    queue, heap, running, out, seq = list(order), [], {}, {}, 0
    last = rec.epochs - 1

    def start(now: float) -> None:
        nonlocal seq
        if queue:
            i = queue.pop(0)
            running[i] = study.ask()
            write_trial(study, running[i], config=configs[i])  # what the schedule-aware pruner reads
            seq += 1
            heapq.heappush(heap, (now + rec.trials[i].epoch_seconds, seq, i, 0))

    for _ in range(workers):
        start(0.0)
    while heap:
        now, _, i, e = heapq.heappop(heap)
        t, ot = rec.trials[i], running[i]
        ot.report(t.curve[e], e)
        if e == last:
            study.tell(ot, max(t.curve) if rec.maximize else min(t.curve))
            out[i] = ("COMPLETE", e + 1)
            start(now)
        elif ot.should_prune():
            study.tell(ot, state=TrialState.PRUNED)
            out[i] = ("PRUNED", e + 1)
            start(now)
        else:
            seq += 1
            heapq.heappush(heap, (now + t.epoch_seconds, seq, i, e + 1))
    return out


def _config_means(rec: RecordedStudy, outcome: dict[int, tuple[str, int]] | None) -> dict[int, float]:
    """Mean best value over seeds of each configuration whose seeds all completed."""
    index = {t.number: i for i, t in enumerate(rec.trials)}
    means = {}
    for cid, seeds in rec.configurations().items():
        if outcome is None or all(outcome[index[t.number]][0] == "COMPLETE" for t in seeds):
            means[cid] = statistics.fmean(t.final_best if rec.maximize else min(t.curve) for t in seeds)
    return means


def replay_pruners(rec: RecordedStudy, names: list[str], orders: int = 20, workers: int = 2,
                   seed: int = 0) -> list[PrunerResult]:
    from vpsearch.reporting.tables import rank_strategies

    sign = 1 if rec.maximize else -1
    true = _config_means(rec, None)
    true_best_cid = max(true, key=lambda c: sign * true[c])
    true_ranking = rank_strategies(rec_frame(rec, None))
    total = len(rec.trials) * rec.epochs
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # an in-memory study per order: no news
    rng = np.random.default_rng(seed)
    perms = [list(rng.permutation(len(rec.trials))) for _ in range(orders)]
    results = []
    for name in names:
        saved, regrets, best_pruned, changed, top = [], [], 0, 0, 0
        for order in perms:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcome = simulate_pruning(rec, _pruner(rec, name), [int(i) for i in order], workers)
            saved.append(1 - sum(e for _, e in outcome.values()) / total)
            found = _config_means(rec, outcome)
            regrets.append(sign * (true[true_best_cid] - max(found.values(), key=lambda v: sign * v))
                           if found else math.inf)
            best_pruned += true_best_cid not in found
            ranking = rank_strategies(rec_frame(rec, outcome))
            changed += ranking != true_ranking
            top += bool(ranking) and ranking[0] != true_ranking[0]
        results.append(PrunerResult(name, orders, statistics.median(saved), statistics.median(regrets),
                                    max(regrets), best_pruned / orders, changed / orders, top / orders))
    return results


def rec_frame(rec: RecordedStudy, outcome: dict[int, tuple[str, int]] | None):
    """The trial frame the report ranks strategies from, for the recording (outcome None: every
    trial complete) or one replayed order (a pruned trial carries its best value so far)."""
    import pandas as pd

    from vpsearch.reporting.strategies import name_strategies
    from vpsearch.reporting.study import rank_orders

    configs = {t.number: rec.config(t) for t in rec.trials}
    kl, tf = name_strategies(configs)
    rows = []
    for i, t in enumerate(rec.trials):
        state, epochs = outcome[i] if outcome else ("COMPLETE", rec.epochs)
        curve = t.curve[:epochs]
        rows.append({"number": t.number, "state": state, "configuration": t.config_id, "seed": t.seed,
                     "val_psnr": max(curve) if rec.maximize else min(curve), "baseline_psnr": t.baseline,
                     "kl": kl[t.number].label, "tf": tf[t.number].label, "_kl_order": kl[t.number].order,
                     "_tf_order": tf[t.number].order})
    frame = pd.DataFrame(rows)
    rank_orders(frame)
    return frame


# -- samplers -------------------------------------------------------------------------------
def grid_values(rec: RecordedStudy) -> dict[str, float]:
    """Configuration (its params, as a key) -> mean best value over its seeds."""
    out: dict[str, list[float]] = {}
    for t in rec.trials:
        out.setdefault(_key(t.params), []).append(t.final_best if rec.maximize else min(t.curve))
    return {k: statistics.fmean(v) for k, v in out.items()}


def _key(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def replay_sampler(rec: RecordedStudy, name: str, seed: int) -> list[float]:
    """Values of the configurations `name` proposes, in order, until the grid is exhausted."""
    from vpsearch.search.plan import StudyPlan
    from vpsearch.search.samplers import ConfigSampler
    from vpsearch.search.worker import take_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    values = grid_values(rec)
    plan = rec.plan
    spec = plan.spec.model_copy(update={"sampler": SamplerSpec(name=name, seed=seed), "repeats": 1, "seeds": None,
                                        "budget": plan.spec.budget.model_copy(update={"n_trials": len(values)})})
    sim = StudyPlan(spec, plan.base, plan.source)
    study = optuna.create_study(direction=spec.objective.direction, sampler=ConfigSampler(sim))
    seen = []
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
    return seen


def replay_samplers(rec: RecordedStudy, names: list[str], seeds: int = 10) -> list[SamplerResult]:
    values = grid_values(rec)
    sign = 1 if rec.maximize else -1
    best = max(values.values(), key=lambda v: sign * v)
    n = len(values)
    results = []
    for name in names:
        to_within, after25, after50 = [], [], []
        for s in range(seeds):
            seen = replay_sampler(rec, name, s)
            running = list(running_best(seen, sign))
            to_within.append(next(i + 1 for i, v in enumerate(running) if sign * (best - v) <= WITHIN_DB))
            after25.append(running[max(0, math.ceil(n / 4) - 1)])
            after50.append(running[max(0, math.ceil(n / 2) - 1)])
        results.append(SamplerResult(name, seeds, n, statistics.median(to_within), statistics.median(after25),
                                     statistics.median(after50)))
    return results


def running_best(values: list[float], sign: int) -> list[float]:
    out, best = [], -math.inf if sign > 0 else math.inf
    for v in values:
        best = max(best, v) if sign > 0 else min(best, v)
        out.append(best)
    return out


def random_expectation(rec: RecordedStudy) -> float:
    """Expected trials for random sampling without replacement to hit one of the k configurations
    within WITHIN_DB of the best among N: (N + 1) / (k + 1)."""
    values = grid_values(rec)
    sign = 1 if rec.maximize else -1
    best = max(values.values(), key=lambda v: sign * v)
    k = sum(sign * (best - v) <= WITHIN_DB for v in values.values())
    return (len(values) + 1) / (k + 1)


def check_names(pruners: list[str], samplers: list[str]) -> None:
    for p in pruners:
        if p not in PRUNERS or p not in PRUNER_NAMES:
            raise ReportError(f"--pruner {p!r}: expected one of {', '.join(PRUNER_NAMES)}")
    for s in samplers:
        if s not in SAMPLER_NAMES or s == "grid":
            raise ReportError(f"--sampler {s!r}: expected one of {', '.join(x for x in SAMPLER_NAMES if x != 'grid')}")


def as_json(pruners: list[PrunerResult], samplers: list[SamplerResult], rec: RecordedStudy,
            workers: int) -> dict[str, Any]:
    return {"study": rec.name, "trials": len(rec.trials), "configurations": len(rec.configurations()),
            "epochs": rec.epochs, "workers": workers, "within_db": WITHIN_DB,
            "pruners": [asdict(p) for p in pruners], "samplers": [asdict(s) for s in samplers],
            "random_expected_trials_to_within": random_expectation(rec) if samplers else None}


def format_tables(pruners: list[PrunerResult], samplers: list[SamplerResult], rec: RecordedStudy,
                  workers: int) -> str:
    """The replay as terminal tables."""
    from vpsearch.reporting.tables import markdown_table

    lines = [f"replay of {rec.name}: {len(rec.trials)} trials, {len(rec.configurations())} configurations, "
             f"{rec.epochs} epochs each"]
    if pruners:
        lines += ["", f"pruners ({workers} simulated workers, median over {pruners[0].orders} random trial orders):",
                  markdown_table(pd_frame([{
                      "pruner": p.pruner, "epochs saved": f"{100 * p.epochs_saved:.0f}%",
                      "regret (dB)": f"{p.regret:.2f} (max {p.regret_max:.2f})" if math.isfinite(p.regret_max)
                      else f"{p.regret:.2f} (some orders completed no configuration)",
                      "best pruned": f"{100 * p.best_pruned:.0f}%",
                      "ranking changed": f"{100 * p.ranking_changed:.0f}% (top {100 * p.top_changed:.0f}%)"}
                      for p in pruners]))]
    if samplers:
        lines += ["", f"samplers (lookup over the {samplers[0].grid} configurations, median over "
                      f"{samplers[0].seeds} seeds; random's expectation {random_expectation(rec):.1f} trials):",
                  markdown_table(pd_frame([{
                      "sampler": s.sampler, f"trials to within {WITHIN_DB} dB": f"{s.trials_to_within:g}",
                      "best after 25%": f"{s.best_after_25:.2f}", "best after 50%": f"{s.best_after_50:.2f}"}
                      for s in samplers]))]
    return "\n".join(lines)


def pd_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame(rows)
