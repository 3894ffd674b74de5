"""Samplers by name (a plain registry), and scikit-optimize's GP driven through ask/tell.

Optuna dropped its skopt integration, so ``SkoptDriver`` runs ``skopt.Optimizer``
itself: for every new configuration it rebuilds the optimizer from the trials already in
the storage (completed ones with their values, pending ones with a "constant liar"),
asks it for a point, and the worker enqueues that point as an ordinary Optuna trial. The
optimizer therefore lives in no process: a restart, a second worker or another machine
replays the same history and continues where the study is.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from optuna.samplers import BaseSampler, CmaEsSampler, GPSampler, GridSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from vpsearch.search import attrs
from vpsearch.search.space import grid, is_active, order
from vpsearch.search.spec import CategoricalParam, FloatParam, SamplerSpec


class StudyGridSampler(GridSampler):
    """GridSampler minus its study.stop(): outside optimize() that call raises, and the budget
    (grid points x repeats) already tells the workers when to stop."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D102
        pass


def _tpe(s: SamplerSpec, space: dict, seed: int) -> BaseSampler:
    conditional = any(p.when for p in space.values())
    # constant_liar: parallel workers see each other's running trials as bad, so they spread out;
    # group: conditional parameters get their own sub-models instead of being sampled at random
    return TPESampler(seed=seed, n_startup_trials=10 if s.n_startup_trials is None else s.n_startup_trials,
                      multivariate=True, group=conditional, constant_liar=True)


# sampler name -> factory(spec, search space, per-worker seed)
SAMPLERS: dict[str, Callable[[SamplerSpec, dict, int], BaseSampler]] = {
    "tpe": _tpe,
    "gp": lambda s, space, seed: GPSampler(seed=seed, n_startup_trials=(
        10 if s.n_startup_trials is None else s.n_startup_trials), warn_independent_sampling=False),
    "cmaes": lambda s, space, seed: CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials or 0,
                                                 warn_independent_sampling=False),
    "random": lambda s, space, seed: RandomSampler(seed=seed),
    # every worker must shuffle the grid the same way: grid ids index that shuffled list
    "grid": lambda s, space, seed: StudyGridSampler(grid(space), seed=s.seed),
    # params come from SkoptDriver through enqueue_trial; this only serves Optuna's bookkeeping
    "skopt": lambda s, space, seed: RandomSampler(seed=seed),
}


def make_sampler(spec: SamplerSpec, space: dict, worker_slot: int) -> BaseSampler:
    """Each worker gets its own seed (else two workers would propose the same random points)."""
    return SAMPLERS[spec.name](spec, space, spec.seed + 7919 * worker_slot)


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


class SkoptDriver:
    """scikit-optimize's GP over the study's space, rebuilt from stored trials on every ask."""

    def __init__(self, space: dict, direction: str, seed: int = 0, n_initial_points: int | None = None,
                 acq_func: str | None = None):
        from skopt.space import Categorical, Integer, Real

        self.space = space
        self.names = order(space)  # fixed order: a stored point is a list in this order
        self.maximize = direction == "maximize"
        self.seed = seed
        self.n_initial = 5 if n_initial_points is None else n_initial_points
        self.acq_func = acq_func or "gp_hedge"
        self.dims = []
        for n in self.names:
            p = space[n]
            if isinstance(p, CategoricalParam):
                self.dims.append(Categorical(p.values(), name=n))
            elif isinstance(p, FloatParam):
                self.dims.append(Real(p.low, p.high, prior="log-uniform" if p.log else "uniform", name=n))
            else:
                self.dims.append(Integer(p.low, p.high, prior="log-uniform" if p.log else "uniform", name=n))

    def params(self, point: list[Any], base_flat: dict[str, Any]) -> dict[str, Any]:
        """Active parameters of a point, snapped to their steps (Optuna stores these)."""
        out: dict[str, Any] = {}
        for n, v in zip(self.names, point):
            if not is_active(n, self.space, out, base_flat):
                continue
            p = self.space[n]
            if not isinstance(p, CategoricalParam) and p.step:
                v = min(p.high, p.low + round((v - p.low) / p.step) * p.step)
                v = int(v) if not isinstance(p, FloatParam) else float(v)
            out[n] = _py(v)
        return out

    def history(self, trials: list[FrozenTrial]) -> tuple[list[list], list[float], list[list]]:
        """(observed points, their losses, pending points); repeats of a point are averaged."""
        observed: dict[str, list[float]] = {}
        points: dict[str, list] = {}
        pending: dict[str, list] = {}
        failed: list[str] = []
        for t in trials:
            x = t.user_attrs.get(attrs.SKOPT_POINT)
            if x is None:
                continue
            key = repr(x)
            points[key] = x
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.value is not None:
                observed.setdefault(key, []).append(-t.value if self.maximize else t.value)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                pending[key] = x
            elif t.state == TrialState.FAIL:
                failed.append(key)
        xs = [points[k] for k in observed]
        ys = [float(np.mean(v)) for v in observed.values()]
        if ys:  # a failed point is told as the worst seen, so the GP steers away from it
            for k in dict.fromkeys(failed):
                if k not in observed and k not in pending:
                    xs.append(points[k])
                    ys.append(max(ys))
        return xs, ys, [x for k, x in pending.items() if k not in observed]

    def propose(self, trials: list[FrozenTrial]) -> list[Any]:
        """The next point: random (seeded by its index) until n_initial points are observed, then GP."""
        from skopt import Optimizer
        from skopt.space import Space

        xs, ys, pending = self.history(trials)
        n_points = len({repr(t.user_attrs[attrs.SKOPT_POINT]) for t in trials if attrs.SKOPT_POINT in t.user_attrs})
        if len(ys) < max(1, self.n_initial):
            # seeded by its index so a restarted driver does not repeat earlier random points
            x = Space(self.dims).rvs(1, random_state=self.seed * 100_003 + n_points)[0]
            return [_py(v) for v in x]
        opt = Optimizer(self.dims, base_estimator="GP", n_initial_points=0, acq_func=self.acq_func,
                        random_state=self.seed + n_points)
        lie = min(ys)  # skopt's "cl_min": pending points count as good, so the next ask moves away
        opt.tell(xs + pending, ys + [lie] * len(pending))
        return [_py(v) for v in opt.ask()]
