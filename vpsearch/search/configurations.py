"""One observation per configuration: how a study's trials look to a sampler.

A configuration is a point of the search space; with ``repeats: K`` it is trained K
times with seeds that are the same across configurations. The samplers must learn from
the configuration, not from its seeds: ``SamplerView`` is the study as a sampler sees
it, one trial per configuration. What each sampler is told (docs: README "What the
samplers are told"):

- every seed COMPLETE: one COMPLETE trial whose value is the mean over the seeds;
- a seed still running or queued: one RUNNING trial (TPE's constant liar spreads
  parallel workers away from it);
- a seed PRUNED (a censored result: its curve was below the others somewhere, not what
  it would have ended at) and no seed diverged: TPE sees a PRUNED trial carrying the pruned
  seeds' mean curve (TPE ranks pruned trials below every complete one, by how far they got);
  GP, CMA-ES and skopt, which ignore pruned trials, see a COMPLETE trial with the penalty
  value: the worst completed configuration's value. Never the pruned seed's last value
  as if it were final;
- a seed that diverged (non-finite loss: the region diverges): TPE sees a PRUNED trial
  without a curve (below every pruned and complete one); GP, CMA-ES and skopt the penalty;
- any other failure (a bug, a worker lost for good) tells nothing about the region and is
  left out, as are trials never trained (outcome "skipped").
Until one configuration has completed there is no penalty value; pruned and diverged
configurations are then left out for GP, CMA-ES and skopt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from vpsearch.search.records import TrialRecord, trial_id

Policy = Literal["pruned", "penalty"]  # how pruned/diverged configurations are told (module docstring)


@dataclass
class Configuration:
    id: int  # the number of its first trial
    trials: list[FrozenTrial] = field(default_factory=list)  # the latest attempt of each repeat

    @property
    def first(self) -> FrozenTrial:
        return min(self.trials, key=lambda t: (t.number != self.id, t.number))

    def state(self) -> str:
        """RUNNING, DIVERGED, PRUNED, FAIL or COMPLETE (see the module docstring)."""
        # fewer seeds than repeats with none under way: raced out (or between two seeds of a race),
        # judged by the seeds it ran
        states = [t.state for t in self.trials]
        if not self.trials or any(s in (TrialState.RUNNING, TrialState.WAITING) for s in states):
            return "RUNNING"
        outcomes = [TrialRecord.of(t).outcome for t in self.trials if t.state == TrialState.FAIL]
        if "diverged" in outcomes:
            return "DIVERGED"
        if TrialState.PRUNED in states:
            return "PRUNED"
        return "FAIL" if outcomes else "COMPLETE"

    def mean_values(self) -> list[float]:
        n = len(self.trials[0].values)
        return [sum(t.values[i] for t in self.trials) / len(self.trials) for i in range(n)]

    def pruned_curve(self) -> dict[int, float]:
        """Mean intermediate value per step over the pruned seeds (how far they got, and where)."""
        sums: dict[int, list[float]] = {}
        for t in self.trials:
            if t.state == TrialState.PRUNED:
                for step, v in t.intermediate_values.items():
                    sums.setdefault(step, []).append(v)
        return {s: sum(v) / len(v) for s, v in sums.items()}


def group_configurations(trials: list[FrozenTrial]) -> dict[int, Configuration]:
    """Trials by configuration; a re-run replaces the attempt it re-runs; skipped trials drop out."""
    out: dict[int, Configuration] = {}
    latest: dict[tuple[int, int], FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: t.number):
        rec = TrialRecord.of(t)
        if rec.outcome == "skipped":
            continue
        cid = rec.config_id if rec.config_id is not None else t.number
        latest[(cid, rec.repeat or 0)] = t  # later numbers are re-runs of earlier attempts
    for (cid, _), t in sorted(latest.items()):
        out.setdefault(cid, Configuration(cid)).trials.append(t)
    return out


def _frozen(c: Configuration, state: TrialState, values: list[float] | None,
            curve: dict[int, float]) -> FrozenTrial:
    first = c.first
    return FrozenTrial(number=first.number, state=state, value=None, values=values,
                       datetime_start=first.datetime_start, datetime_complete=first.datetime_complete,
                       params=first.params, distributions=first.distributions, user_attrs=first.user_attrs,
                       system_attrs=first.system_attrs, intermediate_values=curve, trial_id=trial_id(first))


def sampler_trials(trials: list[FrozenTrial], directions: list[StudyDirection],
                   policy: Policy) -> list[FrozenTrial]:
    """The trials a sampler is told about: one per configuration (module docstring)."""
    configs = group_configurations(trials)
    states = {cid: c.state() for cid, c in configs.items()}
    done = [c.mean_values() for cid, c in configs.items() if states[cid] == "COMPLETE"]
    penalty = None
    if done:
        penalty = [min(v[i] for v in done) if d == StudyDirection.MAXIMIZE else max(v[i] for v in done)
                   for i, d in enumerate(directions)]
    out = []
    for cid, c in configs.items():
        st = states[cid]
        if st == "COMPLETE":
            out.append(_frozen(c, TrialState.COMPLETE, c.mean_values(), {}))
        elif st == "RUNNING":
            out.append(_frozen(c, TrialState.RUNNING, None, {}))
        elif st in ("PRUNED", "DIVERGED"):
            if policy == "pruned":
                out.append(_frozen(c, TrialState.PRUNED, None, c.pruned_curve() if st == "PRUNED" else {}))
            elif penalty is not None:
                out.append(_frozen(c, TrialState.COMPLETE, list(penalty), {}))
    return sorted(out, key=lambda t: t.number)


class SamplerView:
    """The study as a sampler sees it: every Study member as is, except the trials.

    Built for one proposal (the trial list is read once); Optuna's samplers read trials
    through ``_get_trials``/``get_trials``/``trials`` and write their bookkeeping for the
    trial being sampled through ``_storage``, which goes to the real study.
    """

    def __init__(self, study: optuna.Study, policy: Policy):
        self._study = study
        self._all = study.get_trials(deepcopy=False)
        self._view = sampler_trials(self._all, list(study.directions), policy)

    @property
    def raw_trials(self) -> list[FrozenTrial]:
        """Every trial of the study (for bookkeeping that needs the seeds)."""
        return self._all

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        return [t for t in self._view if states is None or t.state in states]

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return list(self._view)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
