"""What a study decides when a trial ends: racing's next seed and the stop rule.

Called by the worker that told the trial's result, under the study lock, so two workers
never queue the same seed or both write a verdict.

- Racing (``race: true``, or ``repeats: {max: K, race: true}``): a configuration's seeds are
  queued one at a time. When a seed of a configuration completes, every configuration that
  has no seed queued or running and fewer than K seeds either gets its next seed queued or is
  raced out (racing.race_verdict); a configuration whose seed was pruned or failed stops
  there too (a re-run of a lost seed is queued by the recovery code, not here); the verdict is kept in the study record
  (``raced_out``: configuration -> reason), which `study status` and the report read.
- The stop rule (``stop: regret_bound``): once enough configurations have completed, the
  study stops (``stopped``: why) when stopping.stop_verdict says the best can no longer
  improve by more than the seed noise; no new configuration is proposed after that, queued
  seeds still run.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from vpsearch.search.configurations import group_configurations, sampler_trials
from vpsearch.search.racing import paired_noise, race_verdict
from vpsearch.search.records import StudyRecord, TrialRecord, write_study
from vpsearch.search.stopping import seed_noise, stop_verdict


def seed_values(trials: list[optuna.trial.FrozenTrial]) -> dict[int, dict[int, float]]:
    """Configuration -> repeat -> the objective of its completed seeds."""
    out: dict[int, dict[int, float]] = {}
    for cid, c in group_configurations(trials).items():
        done = {int(TrialRecord.of(t).repeat or 0): float(t.values[0]) for t in c.trials
                if t.state == TrialState.COMPLETE and t.values}
        out[cid] = done
    return out


def queue_seed(study: optuna.Study, params: dict[str, Any], config_id: int, first: TrialRecord, repeat: int) -> None:
    """Queue seed `repeat` of a configuration with its first trial's params and shared record."""
    same = TrialRecord(config_id=config_id, effective_key=first.effective_key, skopt_point=first.skopt_point)
    study.enqueue_trial(params, user_attrs={**same.attrs(), **TrialRecord.encode(repeat=repeat)})


def advance_race(study: optuna.Study, plan: Any) -> list[str]:
    """Queue the next seed of every configuration still in the race; returns what it decided, in words."""
    if not plan.spec.race:
        return []
    trials = study.get_trials(deepcopy=False)
    configs = group_configurations(trials)
    values = seed_values(trials)
    maximize = plan.spec.objective.direction == "maximize"
    noise = paired_noise(values, maximize)  # once for every verdict below
    raced = dict(StudyRecord.of(study).raced_out or {})
    said = []
    for cid, c in sorted(configs.items()):
        states = [t.state for t in c.trials]
        if str(cid) in raced or len(c.trials) >= plan.spec.repeats or TrialState.RUNNING in states \
                or TrialState.WAITING in states:
            continue  # decided already, every seed run, or a seed under way
        ended = [s.name for s in states if s != TrialState.COMPLETE]
        verdict = race_verdict(cid, values, maximize, noise=noise)
        if ended:  # a pruned or failed seed ends the race: the other seeds would not be ranked anyway
            why = f"stopped after {len(c.trials)} seed(s): a seed ended {ended[0]}"
        elif verdict.raced_out:
            why = verdict.reason
        else:
            queue_seed(study, dict(c.first.params), cid, TrialRecord.of(c.first), len(c.trials))
            continue
        raced[str(cid)] = why
        said.append(f"configuration {cid} {why}")
    if said:
        write_study(study, raced_out=raced)
    return said


def raced_seeds_skipped(trials: list[optuna.trial.FrozenTrial], record: StudyRecord, repeats: int) -> int:
    """Seed-trials the race saved: the seeds raced-out configurations will never run."""
    raced = record.raced_out or {}
    configs = group_configurations(trials)
    return sum(repeats - len(configs[int(cid)].trials) for cid in raced if int(cid) in configs)


def check_stop(study: optuna.Study, plan: Any) -> str | None:
    """The stop rule's reason to stop, written to the study record once; None to go on."""
    if plan.spec.stop != "regret_bound" or StudyRecord.of(study).stopped:
        return None
    trials = study.get_trials(deepcopy=False)
    per_config = [list(v.values()) for v in seed_values(trials).values()]
    config_trials = sampler_trials(trials, list(study.directions), "penalty")
    verdict = stop_verdict(config_trials, study.directions[0], seed_noise(per_config), plan.spec.sampler.seed)
    if not verdict.stop:
        return None
    write_study(study, stopped=f"stop rule: {verdict.reason}")
    return verdict.reason
