"""What a study looks like: the live progress line, the end-of-run summary, `study status`."""

from __future__ import annotations

import json
import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from vpsearch.search.records import TrialRecord
from vpsearch.search.plan import StudyPlan
from vpsearch.search.recovery import tally


def _duration(t: FrozenTrial) -> float | None:
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def best_trial(plan: StudyPlan, trials: list[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not done:
        return None
    sign = 1 if plan.spec.objective.direction == "maximize" else -1
    return max(done, key=lambda t: sign * t.values[0])


def progress_line(plan: StudyPlan, trials: list[FrozenTrial], workers: int) -> str:
    """done / running / pruned / failed, best so far, ETA (mean trial time x remaining / workers)."""
    t = tally(trials)
    best = best_trial(plan, trials)
    metric = plan.spec.objective.metric
    best_s = f"best {metric} {best.values[0]:.3f} (trial {best.number})" if best else f"best {metric} -"
    times = [d for tr in trials if tr.number not in t.retried and (d := _duration(tr)) is not None]
    left = plan.n_trials - t.finished
    eta = "-"
    if times and left > 0:
        eta = _fmt_time(sum(times) / len(times) * math.ceil(left / max(1, workers)))
    elif left <= 0:
        eta = "0s"
    return (f"{plan.name}: done {t.finished}/{plan.n_trials} | running {t.running} | pruned {t.pruned} | "
            f"failed {t.failed} | {best_s} | ETA {eta}")


def summary(plan: StudyPlan, trials: list[FrozenTrial], seconds: float) -> str:
    t = tally(trials)
    best = best_trial(plan, trials)
    lines = [f"study {plan.name}: {t.finished}/{plan.n_trials} trials finished ({t.complete} complete, "
             f"{t.pruned} pruned, {t.failed} failed; {len(t.retried)} re-run) in {_fmt_time(seconds)}"]
    if best is not None:
        lines.append(f"best {plan.spec.objective.metric} {best.values[0]:.4f}: trial {best.number} "
                     f"(seed {TrialRecord.of(best).seed}) {json.dumps(best.params)}")
    lines.append(f"table: vpsearch study status {plan.name}")
    return "\n".join(lines)


def trial_json(t: FrozenTrial, retried: set[int]) -> dict[str, Any]:
    """One trial for `study status --json`."""
    rec = TrialRecord.of(t)
    return {"number": t.number, "state": t.state.name, "value": t.values[0] if t.values else None,
            "values": t.values, "params": t.params, "seed": rec.seed, "repeat": rec.repeat,
            "configuration": rec.config_id, "reason": rec.fail_reason, "outcome": rec.outcome,
            "config_hash": rec.config_hash, "retry_of": rec.retry_of, "re_run": t.number in retried,
            "resumed_from_epoch": rec.resumed_from_epoch, "seconds": _duration(t),
            "best_epoch": rec.results.best_epoch if rec.results else None, "run_dir": rec.run_dir}


def status_json(plan: StudyPlan, trials: list[FrozenTrial]) -> dict[str, Any]:
    t = tally(trials)
    best = best_trial(plan, trials)
    return {"study": plan.name, "n_trials": plan.n_trials, "directions": plan.spec.directions,
            "metric": plan.spec.objective.metric, "sampler": plan.spec.sampler.name,
            "pruner": plan.spec.pruner.name,
            "counts": {"complete": t.complete, "pruned": t.pruned, "failed": t.failed, "running": t.running,
                       "waiting": t.waiting, "re_run": len(t.retried)},
            "best": trial_json(best, t.retried) if best else None,
            "trials": [trial_json(tr, t.retried) for tr in trials]}


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def status_table(plan: StudyPlan, trials: list[FrozenTrial]) -> str:
    """A plain-text table, one row per trial; params abbreviated to their last dotted part."""
    t = tally(trials)
    rows = [["#", "state", plan.spec.objective.metric, "repeat", "seed", "params", "note"]]
    for tr in trials:
        value = _short(tr.values[0]) if tr.values else ""
        params = " ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in tr.params.items())
        rec = TrialRecord.of(tr)
        note = rec.fail_reason or ""
        if rec.retry_of is not None:
            note = f"re-run of {rec.retry_of}" + (f"; {note}" if note else "")
        rows.append([str(tr.number), tr.state.name, value, _short("" if rec.repeat is None else rec.repeat),
                     _short("" if rec.seed is None else rec.seed), params, note[:90]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    out.insert(1, "-" * min(120, len(out[0])))
    out.append("")
    out.append(f"{t.finished}/{plan.n_trials} finished: {t.complete} complete, {t.pruned} pruned, {t.failed} failed, "
               f"{t.running} running, {t.waiting} queued, {len(t.retried)} re-run")
    return "\n".join(out)
