"""Racing over seeds: a configuration's further seeds are spent only while it can still be the best.

F-Race and irace race configurations over problem instances, SMAC intensifies its incumbent
seed by seed; here the instances are the study's seeds, which are shared by every
configuration (seed k of each one has the same initialisation and data order), so two
configurations are compared *paired*, seed by seed, and what the seed does to every
configuration alike cancels.

The rule, after each finished seed of a configuration c (``race_verdict``):
  for every other configuration b that shares at least one seed with c, the paired
  differences d_s = v_c(s) - v_b(s) (signed so that larger is better) over the n seeds both
  have give the mean d and a one-sided bound  d + z * sigma_d / sqrt(n).  If that bound is
  below 0 for some b, c is *raced out*: even its optimistic value is below b's, so its
  remaining seeds are not run.
sigma_d, the standard deviation of a paired difference, is pooled over the whole study:
the spread around their mean of the paired differences of every pair of configurations
with at least two shared seeds (``paired_noise``). Pooling is what makes a verdict possible
after one seed (an F-Race test needs several per configuration); until two configurations
share two seeds there is no estimate and nothing is raced out.

A raced-out configuration is ranked only among configurations that ran as many seeds (the
report shows its seeds and why it stopped); the study's pick is the best configuration
that ran every seed (``final_pick``).
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

RACE_Z = 2.0  # one-sided bound in paired standard errors; replay: docs/search.md


@dataclass(frozen=True)
class Verdict:
    raced_out: bool
    by: int | None = None  # the configuration it lost to
    seeds: int = 0  # seeds it ran
    margin: float = 0.0  # the optimistic bound (value units, < 0 when raced out)

    @property
    def reason(self) -> str:
        if not self.raced_out:
            return ""
        return (f"raced out after {self.seeds} seed(s): paired with configuration {self.by} on the seeds both ran, "
                f"even {RACE_Z:g} standard errors up it stays {-self.margin:.3g} below")


Values = dict[int, dict[int, float]]  # configuration -> seed -> value (finite, finished seeds)


def _signed(values: Values, maximize: bool) -> Values:
    sign = 1.0 if maximize else -1.0
    return {c: {s: sign * v for s, v in seeds.items() if math.isfinite(v)} for c, seeds in values.items()}


def paired_noise(values: Values, maximize: bool = True) -> float | None:
    """Pooled standard deviation of a paired difference between two configurations on one seed
    (None until some pair shares two seeds)."""
    signed = _signed(values, maximize)
    squares, dof = 0.0, 0
    for a, b in itertools.combinations(sorted(signed), 2):
        shared = sorted(signed[a].keys() & signed[b].keys())
        if len(shared) < 2:
            continue
        d = [signed[a][s] - signed[b][s] for s in shared]
        mean = statistics.fmean(d)
        squares += sum((x - mean) ** 2 for x in d)
        dof += len(d) - 1
    return math.sqrt(squares / dof) if dof else None


def race_verdict(config: int, values: Values, maximize: bool = True, z: float = RACE_Z,
                 noise: float | None = None) -> Verdict:
    """Whether `config` is raced out given every configuration's finished seeds (module docstring)."""
    signed = _signed(values, maximize)
    mine = signed.get(config, {})
    sigma = paired_noise(values, maximize) if noise is None else noise
    if not mine or sigma is None:
        return Verdict(False, seeds=len(mine))
    worst: tuple[float, int] | None = None
    for other, theirs in signed.items():
        shared = mine.keys() & theirs.keys()
        if other == config or not shared:
            continue
        d = statistics.fmean(mine[s] - theirs[s] for s in shared)
        bound = d + z * sigma / math.sqrt(len(shared))
        if worst is None or bound < worst[0]:
            worst = (bound, other)
    if worst is not None and worst[0] < 0:
        return Verdict(True, worst[1], len(mine), worst[0])
    return Verdict(False, seeds=len(mine), margin=worst[0] if worst else 0.0)


def final_pick(values: Values, repeats: int, maximize: bool = True) -> int | None:
    """The best configuration by its mean over seeds, among those that ran all `repeats` seeds."""
    full = {c: statistics.fmean(s.values()) for c, s in values.items() if len(s) >= repeats}
    if not full:
        return None
    return max(full, key=lambda c: full[c] if maximize else -full[c])
