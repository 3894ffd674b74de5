"""Small statistics for strategy tables: t-intervals, paired/Welch tests, Holm correction.

Kept apart from the tables so the numbers can be checked against hand computation.
All tests are two-sided at the 5% level; intervals are 95% Student-t intervals over
trials (seeds), never over epochs or frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats as sps

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float  # nan when n < 2: one run says nothing about spread
    high: float
    sd: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """mean +- t_{(1+level)/2, n-1} * s / sqrt(n), with s the sample standard deviation."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, sd, n)


@dataclass(frozen=True)
class Comparison:
    test: str  # "paired" (by matching keys), "welch", or "" when untestable
    n: int  # pairs for a paired test, total trials for Welch
    diff: float  # mean(a) - mean(b) (paired: mean of the differences)
    p: float  # two-sided p-value, nan when untestable


def compare(a: Mapping[Hashable, float], b: Mapping[Hashable, float]) -> Comparison:
    """Compare two groups of trials keyed by their pairing key (the seed, say).

    Paired t-test on the keys both groups share when there are at least 2 of them (a grid
    with repeats runs every strategy on the same seeds, which removes the seed's own
    effect); otherwise Welch's unequal-variance t-test on all values.
    """
    common = sorted(set(a) & set(b), key=str)
    if len(common) >= 2:
        d = np.array([a[k] - b[k] for k in common], dtype=float)
        diff = float(d.mean())
        sd = float(d.std(ddof=1))
        if sd == 0:
            p = 0.0 if diff != 0 else 1.0
        else:
            t = diff / (sd / math.sqrt(len(d)))
            p = float(2 * sps.t.sf(abs(t), len(d) - 1))
        return Comparison("paired", len(d), diff, p)
    xa, xb = np.array(list(a.values()), dtype=float), np.array(list(b.values()), dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        return Comparison("", len(xa) + len(xb), float(xa.mean() - xb.mean()) if len(xa) and len(xb) else math.nan,
                          math.nan)
    return Comparison("welch", len(xa) + len(xb), float(xa.mean() - xb.mean()), welch_p(xa, xb))


def welch_p(xa: np.ndarray, xb: np.ndarray) -> float:
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    diff = xa.mean() - xb.mean()
    if va + vb == 0:
        return 0.0 if diff != 0 else 1.0
    t = diff / math.sqrt(va + vb)
    # Welch-Satterthwaite degrees of freedom
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    return float(2 * sps.t.sf(abs(t), df))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (nan stays nan and does not count as a test)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def mark(p: float) -> str:
    """Stars for an adjusted p-value: * < 0.05, ** < 0.01, *** < 0.001."""
    if math.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
