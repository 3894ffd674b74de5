"""What a study looks like: the live progress line, the end-of-run summary, `study status`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from vpsearch.fmt import duration as _fmt_time
from vpsearch.fmt import number as _short
from vpsearch.search.records import TrialRecord
from vpsearch.search.plan import StudyPlan
from vpsearch.search.recovery import tally


def trial_seconds(t: FrozenTrial) -> float | None:
    """Wall seconds from start to end; None while it has not ended."""
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def best_trial(plan: StudyPlan, trials: list[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if not done:
        return None
    sign = 1 if plan.spec.objective.direction == "maximize" else -1
    return max(done, key=lambda t: sign * t.values[0])


def progress_line(plan: StudyPlan, trials: list[FrozenTrial], workers: int, estimate: float | None = None,
                  now: dt.datetime | None = None) -> str:
    """finished (complete / pruned / failed) / running, best so far, ETA. The ETA counts the
    queued trials and what the running ones have left, at the mean finished trial's time, or at
    `estimate` (seconds per trial, from the probe) until one has finished."""
    t = tally(trials)
    best = best_trial(plan, trials)
    metric = plan.spec.objective.metric
    best_s = f"best {metric} {best.values[0]:.3f} (trial {best.number})" if best else f"best {metric} -"
    times = [d for tr in trials if tr.number not in t.retried and (d := trial_seconds(tr)) is not None]
    per_trial = sum(times) / len(times) if times else estimate
    left = plan.n_trials - t.finished
    eta = "-"
    if left <= 0:
        eta = "0s"
    elif per_trial is not None:
        now = now or dt.datetime.now()
        running = [tr for tr in trials if tr.state == TrialState.RUNNING and tr.datetime_start]
        running_left = sum(max(0.0, per_trial - (now - tr.datetime_start).total_seconds()) for tr in running)
        queued = max(0, left - len(running))
        eta = _fmt_time((running_left + queued * per_trial) / max(1, workers))
    return (f"{plan.name}: {t.finished}/{plan.n_trials} finished (complete {t.complete}, pruned {t.pruned}, "
            f"failed {t.failed}) | running {t.running}{running_epochs(plan, trials)} | {best_s} | ETA {eta}")


def running_epochs(plan: StudyPlan, trials: list[FrozenTrial], most: int = 4) -> str:
    """' (#3 epoch 2/6, #4 epoch 1/6)': how far each running trial is (epochs it has reported)."""
    epochs = plan.base.train.epochs
    shown = [f"#{tr.number} epoch {max(tr.intermediate_values) + 1 if tr.intermediate_values else 0}/{epochs}"
             for tr in sorted(trials, key=lambda tr: tr.number) if tr.state == TrialState.RUNNING]
    if not shown:
        return ""
    more = f", +{len(shown) - most} more" if len(shown) > most else ""
    return f" ({', '.join(shown[:most])}{more})"


def params_text(params: dict[str, Any]) -> str:
    """kl_anneal_type=monotonic lr=1.08e-3: params by their last dotted part."""
    return " ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in params.items())


def summary(plan: StudyPlan, trials: list[FrozenTrial], seconds: float, where: str = "") -> str:
    """The end of `study run`: counts, the best trial against the copy-last baseline, what to run
    next. where: the options the next commands need (--root, --storage), with a leading space."""
    t = tally(trials)
    best = best_trial(plan, trials)
    lines = [f"study {plan.name}: {t.finished}/{plan.n_trials} trials finished ({t.complete} complete, "
             f"{t.pruned} pruned, {t.failed} failed; {len(t.retried)} re-run) in {_fmt_time(seconds)}"]
    if best is not None:
        rec = TrialRecord.of(best)
        lines.append(f"best {plan.spec.objective.metric} {best.values[0]:.3f}: trial {best.number} "
                     f"(seed {rec.seed}) {params_text(best.params)}")
        res = rec.results
        if res is not None and res.val_psnr_best is not None and res.baseline_psnr is not None:
            lines.append(f"copy-last baseline {res.baseline_psnr:.2f} dB on the same sequences: the best trial's "
                         f"{res.val_psnr_best:.2f} dB gains {res.val_psnr_best - res.baseline_psnr:+.2f} dB")
    lines += next_commands([(f"vpsearch report {plan.name}{where}", "strategy tables with 95% intervals, figures"),
                            (f"vpsearch ui {plan.name}{where}", "the trials' curves and GIFs in MLflow"),
                            (f"vpsearch export-best {plan.name}{where}", "best.yaml to retrain, with its report"),
                            (f"vpsearch study status {plan.name}{where}", "every trial, the best marked")])
    return "\n".join(lines)


def next_commands(commands: list[tuple[str, str]]) -> list[str]:
    """'next:' and one line per command, their descriptions lined up."""
    width = max(len(c) for c, _ in commands)
    return ["next:", *(f"  {c.ljust(width)}  # {why}" for c, why in commands)]


def trial_json(t: FrozenTrial, retried: set[int]) -> dict[str, Any]:
    """One trial for `study status --json`."""
    rec = TrialRecord.of(t)
    return {"number": t.number, "state": t.state.name, "value": t.values[0] if t.values else None,
            "values": t.values, "params": t.params, "seed": rec.seed, "repeat": rec.repeat,
            "configuration": rec.config_id, "reason": rec.fail_reason, "outcome": rec.outcome,
            "config_hash": rec.config_hash, "retry_of": rec.retry_of, "re_run": t.number in retried,
            "resumed_from_epoch": rec.resumed_from_epoch, "seconds": trial_seconds(t),
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


def _took(t: FrozenTrial) -> str:
    """How long a trial took (a running one: so far, with '+')."""
    seconds = trial_seconds(t)
    if seconds is not None:
        return _fmt_time(seconds)
    if t.state == TrialState.RUNNING and t.datetime_start:
        return _fmt_time((dt.datetime.now() - t.datetime_start).total_seconds()) + "+"
    return ""


def status_table(plan: StudyPlan, trials: list[FrozenTrial]) -> str:
    """A plain-text table, one row per trial, the best marked *; params by their last dotted part."""
    t = tally(trials)
    best = best_trial(plan, trials)
    rows = [["#", "state", plan.spec.objective.metric, "time", "repeat", "seed", "params", "note"]]
    for tr in trials:
        value = f"{tr.values[0]:.3f}" if tr.values else ""
        rec = TrialRecord.of(tr)
        note = rec.fail_reason or ""
        if rec.retry_of is not None:
            note = f"re-run of {rec.retry_of}" + (f"; {note}" if note else "")
        mark = " *" if best is not None and tr.number == best.number else ""
        rows.append([f"{tr.number}{mark}", tr.state.name, value, _took(tr), _short(rec.repeat), _short(rec.seed),
                     params_text(tr.params), note[:90]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    out.insert(1, "-" * min(120, len(out[0])))
    out.append("")
    out.append(f"{t.finished}/{plan.n_trials} finished: {t.complete} complete, {t.pruned} pruned, {t.failed} failed, "
               f"{t.running} running, {t.waiting} queued, {len(t.retried)} re-run")
    if best is not None:
        out.append(f"* best: trial {best.number}, {plan.spec.objective.metric} {best.values[0]:.3f}")
    return "\n".join(out)


def search_lines(plan: StudyPlan, trials: list[FrozenTrial], raced_out: dict[str, str] | None,
                 stopped: str | None) -> list[str]:
    """What racing and the stop rule decided: seeds run per configuration, and why a configuration
    stopped before its last seed (`study status` under the trial table)."""
    out = []
    if plan.spec.repeats > 1:
        seeds: dict[int, int] = {}
        for tr in trials:
            rec = TrialRecord.of(tr)
            if rec.config_id is not None and rec.outcome != "skipped" and tr.state != TrialState.WAITING:
                seeds[rec.config_id] = seeds.get(rec.config_id, 0) + 1
        full = sum(1 for n in seeds.values() if n >= plan.spec.repeats)
        out.append(f"seeds: {len(seeds)} configuration(s), {full} with all {plan.spec.repeats} seeds"
                   + (f", {len(raced_out)} raced out" if raced_out else ""))
        for cid, why in sorted((raced_out or {}).items(), key=lambda kv: int(kv[0])):
            out.append(f"  configuration {cid}: {seeds.get(int(cid), 0)} of {plan.spec.repeats} seeds run; {why}")
    if stopped:
        out.append(f"stopped: {stopped}")
    return out


def study_rows(store: Any, names: list[str]) -> list[list[str]]:
    """`study list`: one row per stored study: name, trials finished, best value, sampler, started."""
    from vpsearch.search.plan import StudyPlan
    from vpsearch.search.records import StudyRecord
    from vpsearch.search.storage import load_optuna_study

    rows = [["NAME", "TRIALS", "BEST", "SAMPLER", "STARTED"]]
    for name in sorted(names):
        study = store.call(lambda: load_optuna_study(store, name), "reading a study")
        trials = study.get_trials(deepcopy=False)
        record = StudyRecord.of(study)
        if record.study_config is None:  # not a vpsearch study: show what Optuna knows
            rows.append([name, str(len(trials)), "", "", ""])
            continue
        plan = StudyPlan.from_record(record, f"study {name} in {store.shown}")
        t, best = tally(trials), best_trial(plan, trials)
        started = min((tr.datetime_start for tr in trials if tr.datetime_start), default=None)
        rows.append([name, f"{t.finished}/{plan.n_trials}" + (f" ({t.running} running)" if t.running else ""),
                     f"{plan.spec.objective.metric} {best.values[0]:.3f} (trial {best.number})" if best else "-",
                     plan.spec.sampler.name, started.strftime("%Y-%m-%d %H:%M") if started else "-"])
    return rows if len(rows) > 1 else []


def parent_progress(plan: StudyPlan, trials: list[FrozenTrial]) -> tuple[int, dict[str, float], dict[str, str]]:
    """What the study's parent run shows (tracking.study_progress): at step = trials finished,
    the trials by state and the best trial's objective and copy-last baseline, under the names
    its trial runs use, so the parent's row in the runs table reads as the study's best so far."""
    from vpsearch.tracking import names

    t = tally(trials)
    metrics: dict[str, float] = {names.TRIALS_COUNTS["complete"]: t.complete,
                                 names.TRIALS_COUNTS["pruned"]: t.pruned, names.TRIALS_COUNTS["failed"]: t.failed}
    tags: dict[str, str] = {}
    best = best_trial(plan, trials)
    if best is not None:
        metrics[names.best_metric(plan.spec.objective.metric)] = best.values[0]
        res = TrialRecord.of(best).results
        if res is not None and res.baseline_psnr is not None:
            metrics[names.EPOCH_METRICS["baseline_psnr"]] = res.baseline_psnr
            if res.val_psnr_best is not None:
                metrics[names.GAIN] = res.val_psnr_best - res.baseline_psnr
        tags[names.TAG_BEST_TRIAL] = names.trial_run_name(best.number, best.params)
    tags[names.MLFLOW_NOTE] = parent_note(plan, t, best)
    return t.finished, metrics, tags


def parent_note(plan: StudyPlan, t: Any, best: FrozenTrial | None) -> str:
    """The parent run's description: the answer so far (best trial, by how much over copying), then counts."""
    from vpsearch.tracking import names

    counts = (f"{t.finished}/{plan.n_trials} trials finished ({t.complete} complete, {t.pruned} pruned, "
              f"{t.failed} failed), {t.running} running.")
    if best is None:
        return f"Study {plan.name}: no trial has completed yet. {counts}"
    res = TrialRecord.of(best).results
    metric = plan.spec.objective.metric
    text = f"Best so far: **{names.trial_run_name(best.number, best.params)}**, {metric} {best.values[0]:.2f}"
    if res is not None and res.baseline_psnr is not None and res.val_psnr_best is not None:
        gain = res.val_psnr_best - res.baseline_psnr
        text += (f"; val PSNR {res.val_psnr_best:.2f} dB, {gain:+.2f} dB over copying "
                 f"({res.baseline_psnr:.2f} dB on the same sequences)")
    return f"{text}. {counts} `vpsearch report {plan.name}` ranks the strategies with intervals."
