"""`vpsearch replay`: what pruning, racing, a stop rule and Bayesian search would have saved,
on a study's own recorded curves.

Tabular HPO benchmarks (LCBench, YAHPO Gym) and simulator back-ends (Syne Tune) record
full learning curves once and replay a search on them in seconds; this does the same on
a vpsearch study recorded with ``pruner: none`` (recorded.py).

Pruners (here): the recorded trials are shuffled and run by W simulated workers; a trial's
epoch e ends at the simulated time its worker has spent on it (each epoch takes the
trial's recorded seconds), reports its recorded value to an in-memory Optuna study with
the real pruner object, and is stopped when the pruner says so. A decision therefore
sees only what other trials had reported by then. Per pruner, over N orders (medians):
epochs saved, regret of the pick (the configuration with the best mean over its completed
seeds, scored by its true mean over all seeds) against the recording's true best, how often
the true best configuration lost a seed to pruning, and how often the report's top
strategy (tables.rank_strategies) left the winner's interval (the strategies the full
recording cannot tell from the top one). A pruner setup that `study check` would refuse
(schedule_aware on a space with configurations it can never judge) is refused here too.

Racing, the stop rule and the samplers: replay_search.py.
"""

from __future__ import annotations

import heapq
import math
import statistics
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from vpsearch.reporting import replay_search
from vpsearch.reporting.recorded import RecordedStudy
from vpsearch.reporting.replay_search import RacingResult, SamplerResult, StopResult
from vpsearch.reporting.study import ReportError
from vpsearch.search.pruners import PRUNERS, make_pruner, unjudged_configurations
from vpsearch.search.records import write_trial
from vpsearch.search.spec import PRUNER_NAMES, SAMPLER_NAMES, PrunerSpec

DEFAULT_PRUNERS = ["none", "median", "successive_halving", "hyperband", "patient", "schedule_aware"]
DEFAULT_SAMPLERS = ["random", "tpe", "gp", "cmaes", "skopt"]
DEFAULT_STOP_SAMPLER = "tpe"


@dataclass
class PrunerResult:
    pruner: str
    orders: int
    workers: int
    epochs_saved: float  # median fraction of training epochs not trained
    regret: float  # median dB between the true best configuration and the best one found
    regret_max: float
    best_pruned: float  # share of orders in which the true best configuration lost a seed
    top_changed: float  # share of orders whose top strategy left the winner's interval


# -- pruners ----------------------------------------------------------------------------------
Pruner = str | PrunerSpec  # a pruner by name (with the options a study would give it), or set up in full


def kind(p: Pruner) -> str:
    return p if isinstance(p, str) else p.name


def label(p: Pruner) -> str:
    """'median', or 'schedule_aware(min_rank_correlation=0.7)' for a set-up pruner."""
    if isinstance(p, str):
        return p
    options = p.model_dump(exclude_unset=True, exclude={"name"})
    return f"{p.name}({', '.join(f'{k}={v}' for k, v in options.items())})" if options else p.name


def _pruner(rec: RecordedStudy, name: Pruner) -> optuna.pruners.BasePruner:
    """The pruner as a study would build it: the recording's own options where it used `name`,
    else the defaults a study gets; a PrunerSpec as it is."""
    from vpsearch.search.spec import PRUNER_OPTIONS

    if isinstance(name, PrunerSpec):
        return make_pruner(name, rec.epochs)
    spec = rec.plan.spec.pruner
    options = spec.model_dump(exclude={"name"}, exclude_unset=True) if spec.name == name else {}
    known = set(PrunerSpec.model_fields) - {"name"}
    kept = {k: v for k, v in options.items() if k in known and k in PRUNER_OPTIONS[name]}
    return make_pruner(PrunerSpec(name=name, **kept), rec.epochs)


def refused_pruners(rec: RecordedStudy, names: list[Pruner]) -> dict[str, str]:
    """{pruner: why} for the setups `study check` would refuse on this recording's space."""
    out = {}
    if any(kind(p) == "schedule_aware" for p in names):
        checked, never = unjudged_configurations(rec.plan)
        if never:
            out["schedule_aware"] = (f"{len(never)} of {checked} configurations could never be judged before their "
                                     "last epoch (`vpsearch study check` refuses this setup)")
    return out


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
            # what the schedule-aware pruner reads: the config and the configuration its seeds share
            write_trial(study, running[i], config=configs[i], config_id=rec.trials[i].config_id,
                        repeat=rec.trials[i].repeat)
            seq += 1
            heapq.heappush(heap, (now + rec.trials[i].epoch_seconds, seq, i, 0))

    for _ in range(workers):
        start(0.0)
    while heap:
        now, _, i, e = heapq.heappop(heap)
        t, ot = rec.trials[i], running[i]
        ot.report(t.curve[e], e)
        if e == last:
            study.tell(ot, rec.value(t))
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
    """Mean best value over the completed seeds of each configuration with at least one (outcome
    None: over every seed): what a study would pick its winner by."""
    index = {t.number: i for i, t in enumerate(rec.trials)}
    means = {}
    for cid, seeds in rec.configurations().items():
        done = [t for t in seeds if outcome is None or outcome[index[t.number]][0] == "COMPLETE"]
        if done:
            means[cid] = statistics.fmean(rec.value(t) for t in done)
    return means


def winners(frame) -> set[str]:
    """The strategies the report cannot tell from its top one: the top and those not significantly
    worse (Holm-adjusted p >= 0.05 or untested)."""
    from vpsearch.reporting.tables import strategy_table

    table = strategy_table(frame, ["kl", "tf"], ["seed"])
    if not len(table):
        return set()
    return {f"{r.kl} | {r.tf}" for r in table.itertuples() if r.rank == 1 or r.sig == ""}


def replay_pruners(rec: RecordedStudy, names: list[Pruner], orders: int = 20, workers: int = 2,
                   seed: int = 0) -> list[PrunerResult]:
    from vpsearch.reporting.tables import rank_strategies

    refused = refused_pruners(rec, names)
    if refused:
        name, why = next(iter(refused.items()))
        raise ReportError(f"replay: pruner {name} on {rec.name}: {why}")
    sign = 1 if rec.maximize else -1
    true = _config_means(rec, None)
    true_best_cid = max(true, key=lambda c: sign * true[c])
    tied = winners(rec_frame(rec, None))
    total = len(rec.trials) * rec.epochs
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # an in-memory study per order: no news
    rng = np.random.default_rng(seed)
    perms = [list(rng.permutation(len(rec.trials))) for _ in range(orders)]
    results = []
    for name in names:
        saved, regrets, best_pruned, top = [], [], 0, 0
        for order in perms:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outcome = simulate_pruning(rec, _pruner(rec, name), [int(i) for i in order], workers)
            saved.append(1 - sum(e for _, e in outcome.values()) / total)
            found = _config_means(rec, outcome)
            # the pick is scored by its true mean: a configuration picked on one lucky completed seed
            # pays for it
            pick = max(found, key=lambda c: sign * found[c]) if found else None
            regrets.append(sign * (true[true_best_cid] - true[pick]) if pick is not None else math.inf)
            best_pruned += any(outcome[i][0] == "PRUNED" for i, t in enumerate(rec.trials)
                               if t.config_id == true_best_cid)
            ranking = rank_strategies(rec_frame(rec, outcome))
            top += not ranking or ranking[0] not in tied
        results.append(PrunerResult(label(name), orders, workers, statistics.median(saved), statistics.median(regrets),
                                    max(regrets), best_pruned / orders, top / orders))
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


def check_names(pruners: list[Pruner], samplers: list[str]) -> None:
    for p in map(kind, pruners):
        if p not in PRUNERS or p not in PRUNER_NAMES:
            raise ReportError(f"--pruner {p!r}: expected one of {', '.join(PRUNER_NAMES)}")
    for s in samplers:
        if s not in SAMPLER_NAMES or s == "grid":
            raise ReportError(f"--sampler {s!r}: expected one of {', '.join(x for x in SAMPLER_NAMES if x != 'grid')}")


@dataclass
class Replay:
    """Everything one `vpsearch replay` measured on one recording."""
    pruners: list[PrunerResult]
    racing: list[RacingResult]
    samplers: list[SamplerResult]
    stop: StopResult | None
    refused: dict[str, str] = field(default_factory=dict)  # pruner -> why `study check` refuses it here


def run_replay(rec: RecordedStudy, pruners: list[str], samplers: list[str], orders: int = 20,
               workers: list[int] = (2,), seeds: int = 20, racing: bool = True,
               stop_sampler: str | None = DEFAULT_STOP_SAMPLER, skip_refused: bool = False) -> Replay:
    """Every replay asked for; skip_refused leaves out (and names) pruner setups `study check`
    refuses instead of failing on them."""
    check_names(pruners, samplers)
    refused = refused_pruners(rec, pruners) if skip_refused else {}
    pruners = [p for p in pruners if kind(p) not in refused]
    p = [r for w in workers for r in replay_pruners(rec, pruners, orders, w)] if pruners else []
    repeated = max(len(v) for v in replay_search.config_seed_values(rec).values()) > 1
    race = [replay_search.replay_racing(rec, orders, w) for w in workers] if racing and repeated else []
    s = replay_search.replay_samplers(rec, samplers, seeds) if samplers else []
    stop = replay_search.replay_stop_rule(rec, stop_sampler, max(1, seeds // 2)) if samplers and stop_sampler else None
    return Replay(p, race, s, stop, refused)


def as_json(r: Replay, rec: RecordedStudy) -> dict[str, Any]:
    return {"study": rec.name, "trials": len(rec.trials), "configurations": len(rec.configurations()),
            "epochs": rec.epochs, "seed_noise": replay_search.seed_noise(rec),
            "near_best": replay_search.near_best(rec),
            "pruners": [asdict(p) for p in r.pruners], "racing": [asdict(x) for x in r.racing],
            "samplers": [asdict(s) for s in r.samplers], "stop_rule": asdict(r.stop) if r.stop else None,
            "random_expected_trials_to_near": replay_search.random_expectation(rec) if r.samplers else None}


def format_tables(r: Replay, rec: RecordedStudy) -> str:
    """The replay as terminal (Markdown) tables."""
    from vpsearch.reporting.tables import markdown_table

    near = replay_search.near_best(rec)
    lines = [f"replay of {rec.name}: {len(rec.trials)} trials, {len(rec.configurations())} configurations, "
             f"{rec.epochs} epochs each; seed noise {replay_search.seed_noise(rec):.3f}, near the best = within "
             f"{near:.3f} (2 seed standard errors)"]
    if r.pruners:
        lines += ["", f"pruners (median over {r.pruners[0].orders} random trial orders):",
                  markdown_table(pd_frame([{
                      "pruner": p.pruner, "workers": p.workers, "epochs saved": f"{100 * p.epochs_saved:.0f}%",
                      "regret": f"{p.regret:.2f} (max {p.regret_max:.2f})" if math.isfinite(p.regret_max)
                      else f"{p.regret:.2f} (some orders completed no configuration)",
                      "best pruned": f"{100 * p.best_pruned:.0f}%",
                      "top strategy left the winners": f"{100 * p.top_changed:.0f}%"} for p in r.pruners]))]
    for name, why in r.refused.items():
        lines += [f"(pruner {name} left out: {why})"]
    if r.racing:
        lines += ["", f"racing over seeds (paired test against every configuration, over {r.racing[0].orders} "
                      "random orders of configurations):",
                  markdown_table(pd_frame([{
                      "workers": x.workers, "seed-trials saved": f"{100 * x.seed_trials_saved:.0f}%",
                      "same pick as every seed": f"{100 * x.same_pick:.0f}%",
                      "regret": f"{x.regret:.2f}"} for x in r.racing]))]
    if r.stop:
        st = r.stop
        lines += ["", f"stop rule ({st.sampler}, {st.seeds} seeds): stopped in {100 * st.stopped:.0f}% of replays, "
                      f"after {st.configurations:g} of {st.grid} configurations (median), regret {st.regret:.2f}"]
    if r.samplers:
        lines += ["", f"samplers (lookup over the {r.samplers[0].grid} configurations, over {r.samplers[0].seeds} "
                      f"seeds; random's expectation {replay_search.random_expectation(rec):.1f} trials):",
                  markdown_table(pd_frame([{
                      "sampler": s.sampler, "trials to near the best (median)": f"{s.trials_to_near:g}",
                      "90th percentile": f"{s.trials_to_near_p90:g}",
                      "best after 25%": f"{s.best_after_25:.2f}", "best after 50%": f"{s.best_after_50:.2f}"}
                      for s in r.samplers]))]
    return "\n".join(lines)


def pd_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame(rows)


# -- the README's "what the search buys you" table ----------------------------------------------
README_BEGIN = "<!-- search-table: generated by `python benchmarks/search_table.py`; do not edit by hand -->"
README_END = "<!-- /search-table -->"


def summary_table(replays: list[dict[str, Any]], pruner: str = "schedule_aware") -> str:
    """One Markdown table over saved replays (as_json): per recording the shipped pruner at each
    simulated worker count, racing, the stop rule, and the samplers' trials to near the best."""
    from vpsearch.reporting.tables import markdown_table

    rows = []
    for r in replays:
        where = f"{r['study']} ({r['configurations']} configurations x {r['trials'] // r['configurations']} seeds)"
        for p in r["pruners"]:
            if p["pruner"] == pruner:
                rows.append({"recording": where, "method": f"pruner {pruner}, {p['workers']} workers",
                             "saves": f"{100 * p['epochs_saved']:.0f}% of epochs",
                             "cost": f"regret {p['regret']:.3f}, best pruned in {100 * p['best_pruned']:.0f}% of orders"})
        for x in r["racing"]:
            rows.append({"recording": where, "method": f"racing over seeds, {x['workers']} workers",
                         "saves": f"{100 * x['seed_trials_saved']:.0f}% of seed-trials",
                         "cost": f"same pick as every seed in {100 * x['same_pick']:.0f}% of orders"})
        if r.get("stop_rule"):
            s = r["stop_rule"]
            rows.append({"recording": where, "method": f"stop rule ({s['sampler']})",
                         "saves": f"{100 * (1 - s['configurations'] / s['grid']):.0f}% of configurations",
                         "cost": f"regret {s['regret']:.3f} (stopped in {100 * s['stopped']:.0f}% of replays)"})
        if r["samplers"]:
            rand = r.get("random_expected_trials_to_near")
            best = min(r["samplers"], key=lambda s: s["trials_to_near"])
            rows.append({"recording": where, "method": "samplers: trials to near the best (median / p90)",
                         "saves": ", ".join(f"{s['sampler']} {s['trials_to_near']:g}/{s['trials_to_near_p90']:g}"
                                            for s in r["samplers"]),
                         "cost": f"random expects {rand:.1f}; best model-based: {best['sampler']}"
                         if rand else ""})
    return markdown_table(pd_frame(rows))
