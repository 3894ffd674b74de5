"""Samplers by name (a plain registry), behind one wrapper that makes every trial new information.

``ConfigSampler`` is the sampler every worker hands to Optuna. For a queued trial (a
configuration's other seeds, a re-run) it proposes nothing: its params are fixed. For a
new configuration it asks the study's sampler (the registry below) on a ``SamplerView``
(one observation per configuration: configurations.py), then:

- seeds that sampler per trial from the study seed and the trial's number (and the
  attempt), so a resumed, interrupted or concurrently started study never replays the
  proposals of the first run, and a run is reproducible from the storage;
- refuses a proposal whose *effective* configuration (the config with its schedules
  reduced to the values they take at every step: space.effective_key) was already
  proposed, asks again with the next seed, then falls back to random proposals and,
  in a finite space, to an unvisited configuration; a space with none left raises
  SpaceExhausted (the study cannot grow).

scikit-optimize's GP (Optuna dropped its integration) is driven here too: it is rebuilt
from the study's configurations on every proposal, so it lives in no process and a
restart or another machine replays the same history.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any, Callable, Protocol

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, CmaEsSampler, GPSampler, RandomSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from vpsearch.search.configurations import Policy, SamplerView, group_configurations
from vpsearch.search.records import TrialRecord, write_trial
from vpsearch.search.space import distribution, effective_key, grid_points, is_active, order
from vpsearch.search.spec import CategoricalParam, FloatParam, SamplerSpec, StudyError

ATTEMPTS = 4  # proposals of the study's sampler before random ones take over
RANDOM_ATTEMPTS = 64
MAX_ENUMERATED = 200_000  # a discrete space up to this size is enumerated when proposals keep repeating


class SpaceExhausted(StudyError):
    """Every distinct configuration of a finite space has been proposed."""


def mix_seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


class Proposer(Protocol):
    policy: Policy

    def propose(self, view: SamplerView, trial: FrozenTrial, seed: int,
                seen: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, Any], dict[str, Any]]:
        """-> (active params, extra record fields of the trial)."""


class OptunaProposer:
    """An Optuna sampler, made afresh with the given seed for each proposal."""

    def __init__(self, make: Callable[[int], BaseSampler], space: dict, base_flat: dict, policy: Policy):
        self.make, self.space, self.base_flat, self.policy = make, space, base_flat, policy

    def propose(self, view, trial, seed, seen):
        inner = self.make(seed)
        relative_space = inner.infer_relative_search_space(view, trial)  # type: ignore[arg-type]
        relative = inner.sample_relative(view, trial, relative_space) if relative_space else {}  # type: ignore
        params: dict[str, Any] = {}
        for name in order(self.space):
            if not is_active(name, self.space, params, self.base_flat):
                continue
            dist = distribution(self.space[name])
            if name in relative and name in relative_space and relative_space[name] == dist:
                params[name] = relative[name]
            else:
                params[name] = inner.sample_independent(view, trial, name, dist)  # type: ignore[arg-type]
        return params, {}


class GridProposer:
    """The grid in one order shuffled by the study seed; the first point not yet run."""

    policy: Policy = "penalty"

    def __init__(self, space: dict, seed: int):
        points = grid_points(space)
        np.random.default_rng(seed).shuffle(points)  # type: ignore[arg-type]
        self.points = points

    def propose(self, view, trial, seed, seen):
        for p in self.points:
            if not seen(p):
                return p, {}
        raise SpaceExhausted(f"every one of the {len(self.points)} grid points has been run")


class SkoptProposer:
    """scikit-optimize's GP over the space, rebuilt from the configurations on every proposal."""

    policy: Policy = "penalty"

    def __init__(self, space: dict, base_flat: dict, direction: str, n_initial_points: int | None,
                 acq_func: str | None):
        from skopt.space import Categorical, Integer, Real

        self.space, self.base_flat = space, base_flat
        self.names = order(space)  # fixed order: a stored point is a list in this order
        self.maximize = direction == "maximize"
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

    def params(self, point: list[Any]) -> dict[str, Any]:
        """Active parameters of a point, snapped to their steps (Optuna stores these)."""
        out: dict[str, Any] = {}
        for n, v in zip(self.names, point):
            if not is_active(n, self.space, out, self.base_flat):
                continue
            p = self.space[n]
            if not isinstance(p, CategoricalParam) and p.step:
                v = min(p.high, p.low + round((v - p.low) / p.step) * p.step)
                v = int(v) if not isinstance(p, FloatParam) else float(v)
            out[n] = _py(v)
        return out

    def history(self, view: SamplerView) -> tuple[list[list], list[float], list[list]]:
        """(observed points, their losses, pending points) from the configurations skopt proposed."""
        xs, ys, pending = [], [], []
        for t in view.trials:
            x = TrialRecord.of(t).skopt_point
            if x is None:
                continue
            if t.state == TrialState.COMPLETE:
                xs.append(x)
                ys.append(-t.values[0] if self.maximize else t.values[0])
            elif t.state == TrialState.RUNNING:
                pending.append(x)
        return xs, ys, pending

    def propose(self, view, trial, seed, seen):
        from skopt import Optimizer
        from skopt.space import Space

        xs, ys, pending = self.history(view)
        if len(ys) < max(1, self.n_initial):
            x = Space(self.dims).rvs(1, random_state=seed)[0]
        else:
            # a space of categories has few points: 1000 candidates cover it at a third of the cost
            discrete = {"n_points": 1000} if all(isinstance(p, CategoricalParam) for p in self.space.values()) else {}
            opt = Optimizer(self.dims, base_estimator="GP", n_initial_points=0, acq_func=self.acq_func,
                            random_state=seed, acq_optimizer_kwargs=discrete or None)
            lie = min(ys)  # skopt's "cl_min": pending points count as good, so the next ask moves away
            opt.tell(xs + pending, ys + [lie] * len(pending))
            x = opt.ask()
        point = [_py(v) for v in x]
        return self.params(point), {"skopt_point": point}


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _tpe(s: SamplerSpec, space: dict, seed: int) -> BaseSampler:
    conditional = any(p.when for p in space.values())
    # constant_liar: parallel workers see each other's running configurations as bad, so they
    # spread out; group: conditional parameters get their own sub-models, not random sampling
    return TPESampler(seed=seed, n_startup_trials=10 if s.n_startup_trials is None else s.n_startup_trials,
                      multivariate=True, group=conditional, constant_liar=True)


# sampler name -> factory(spec, search space, seed) of the Optuna sampler behind it
SAMPLERS: dict[str, Callable[[SamplerSpec, dict, int], BaseSampler]] = {
    "tpe": _tpe,
    "gp": lambda s, space, seed: GPSampler(seed=seed, n_startup_trials=(
        10 if s.n_startup_trials is None else s.n_startup_trials), warn_independent_sampling=False),
    "cmaes": lambda s, space, seed: CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials or 0,
                                                 warn_independent_sampling=False),
    "random": lambda s, space, seed: RandomSampler(seed=seed),
}
POLICY: dict[str, Policy] = {"tpe": "pruned"}  # TPE ranks pruned trials itself; the others get a penalty


def _optuna(spec: SamplerSpec, space: dict, base_flat: dict, direction: str) -> Proposer:
    return OptunaProposer(lambda seed: SAMPLERS[spec.name](spec, space, seed), space, base_flat,
                          POLICY.get(spec.name, "penalty"))


# every sampler a study can name -> factory(spec, space, base config flat, direction) of its proposer:
# Optuna's samplers (SAMPLERS) through ask/tell, the grid, and scikit-optimize
PROPOSERS: dict[str, Callable[[SamplerSpec, dict, dict, str], Proposer]] = {
    **{name: _optuna for name in SAMPLERS},
    "grid": lambda spec, space, base_flat, direction: GridProposer(space, spec.seed),
    "skopt": lambda spec, space, base_flat, direction: SkoptProposer(space, base_flat, direction,
                                                                     spec.n_startup_trials, spec.acq_func),
}


def make_proposer(spec: SamplerSpec, space: dict, base_flat: dict, direction: str) -> Proposer:
    return PROPOSERS[spec.name](spec, space, base_flat, direction)


class ConfigSampler(BaseSampler):
    """The wrapper of the module docstring; `key(params)` gives a configuration's effective key."""

    def __init__(self, plan: Any):
        spec = plan.spec
        self.plan, self.space, self.seed = plan, plan.space, spec.sampler.seed
        self.base_flat = plan.base.flat()
        self.proposer = make_proposer(spec.sampler, self.space, self.base_flat, spec.objective.direction)

    def key(self, params: dict[str, Any]) -> str:
        return effective_key(self.plan.base, self.space, params)

    # -- the BaseSampler interface -------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: distribution(p) for name, p in self.space.items()}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if trial.system_attrs.get("fixed_params"):
            return {}  # a configuration's other seed or a re-run: its params are fixed
        params, extra = self.propose(study, trial)
        write_trial(study, trial, effective_key=self.key(params), **extra)
        return params

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        # every parameter is proposed at once by sample_relative; Optuna asks here only for a
        # parameter outside the study's space, which the worker never suggests
        return RandomSampler(seed=mix_seed(self.seed, trial.number)).sample_independent(
            study, trial, param_name, param_distribution)

    # -- proposing ----------------------------------------------------------------------
    def propose(self, study: optuna.Study, trial: FrozenTrial) -> tuple[dict[str, Any], dict[str, Any]]:
        view = SamplerView(study, self.proposer.policy)
        keys = set()
        for c in group_configurations(view.raw_trials).values():
            rec = TrialRecord.of(c.first)
            if c.id != trial.number:
                keys.add(rec.effective_key or self.key(c.first.params))

        def seen(params: dict[str, Any]) -> bool:
            return self.key(params) in keys

        for attempt in range(ATTEMPTS):
            params, extra = self.proposer.propose(view, trial, mix_seed(self.seed, trial.number, attempt), seen)
            if not seen(params):
                return params, extra
        fallback = OptunaProposer(lambda seed: RandomSampler(seed=seed), self.space, self.base_flat, "penalty")
        for attempt in range(ATTEMPTS, ATTEMPTS + RANDOM_ATTEMPTS):
            params, _ = fallback.propose(view, trial, mix_seed(self.seed, trial.number, attempt), seen)
            if not seen(params):
                return params, {}
        unvisited = [p for p in enumerate_space(self.space, self.base_flat) if not seen(p)]
        if not unvisited:
            raise SpaceExhausted(f"study {study.study_name}: every distinct configuration of its search space "
                                 f"({len(keys)}) has been proposed; nothing new is left to try")
        rng = np.random.default_rng(mix_seed(self.seed, trial.number, -1))
        return unvisited[int(rng.integers(len(unvisited)))], {}


def enumerate_space(space: dict, base_flat: dict) -> list[dict[str, Any]]:
    """Every active-parameter combination of a discrete space (empty when it has a float range
    or more than MAX_ENUMERATED points: then random proposals are as good as it gets)."""
    if any(isinstance(p, FloatParam) for p in space.values()):
        return []
    names = order(space)
    choices = [p.values() for p in (space[n] for n in names)]
    if np.prod([len(c) for c in choices], dtype=float) > MAX_ENUMERATED:
        return []
    out, keys = [], set()
    for combo in itertools.product(*choices):
        params: dict[str, Any] = {}
        for name, value in zip(names, combo):
            if is_active(name, space, params, base_flat):
                params[name] = value
        k = repr(sorted(params.items()))
        if k not in keys:
            keys.add(k)
            out.append(params)
    return out
