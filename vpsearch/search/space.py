"""The search space: Optuna distributions, conditional suggestion, trial configs, grids.

One function turns sampled parameters into a training config (``trial_config``), so the
worker, the skopt driver and the tests build configs the same way. Parameter values are
what Optuna stores; preset names expand to their settings only here.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from vpsearch.config import Config, ConfigError, config_from_dict
from vpsearch.search.spec import RESERVED, CategoricalParam, FloatParam, IntParam, StudyError
from vpsearch.schedules import kl_signature, tf_signature

Space = dict[str, Any]  # name -> FloatParam | IntParam | CategoricalParam


def distribution(p: Any) -> BaseDistribution:
    if isinstance(p, FloatParam):
        return FloatDistribution(p.low, p.high, log=p.log, step=p.step)
    if isinstance(p, IntParam):
        return IntDistribution(p.low, p.high, log=p.log, step=p.step)
    return CategoricalDistribution(p.values())


def order(space: Space) -> list[str]:
    """Parameters with the ones their conditions test first (a topological order)."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: list[str]) -> None:
        if name in done:
            return
        if name in visiting:
            raise ValueError(f"conditions form a cycle: {' -> '.join(chain + [name])}")
        visiting.add(name)
        for dep in space[name].conditions():
            if dep in space:
                visit(dep, chain + [name])
        visiting.discard(name)
        done.append(name)

    for n in space:
        visit(n, [])
    return done


def updates(name: str, p: Any, value: Any) -> dict[str, Any]:
    """Dotted config settings one parameter value stands for."""
    if isinstance(p, CategoricalParam) and p.is_preset:
        return dict(p.choices[value])
    return {name: value}


def is_active(name: str, space: Space, params: dict[str, Any], base_flat: dict[str, Any]) -> bool:
    for dep, allowed in space[name].conditions().items():
        if dep in space:
            if dep not in params or params[dep] not in allowed:
                return False
        elif base_flat.get(dep) not in allowed:
            return False
    return True


def suggest(trial: optuna.trial.Trial, space: Space, base_flat: dict[str, Any]) -> dict[str, Any]:
    """Ask Optuna for every active parameter, parents before the parameters they condition."""
    params: dict[str, Any] = {}
    for name in order(space):
        if not is_active(name, space, params, base_flat):
            continue
        p = space[name]
        if isinstance(p, FloatParam):
            params[name] = trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            params[name] = trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step)
        else:
            params[name] = trial.suggest_categorical(name, p.values())
    return params


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        d = d.setdefault(key, {})
    d[leaf] = value


def trial_config(base: Config, space: Space, params: dict[str, Any], seed: int, name: str) -> Config:
    """base + parameter settings + seed: the portable config of one trial (device left to the worker)."""
    d = copy.deepcopy(base.to_dict())
    for pname, value in params.items():
        for dotted, v in updates(pname, space[pname], value).items():
            set_dotted(d, dotted, v)
    d["train"]["seed"] = int(seed)
    d["name"] = name
    return config_from_dict(d, f"trial {name}")


def effective_key(base: Config, space: Space, params: dict[str, Any]) -> str:
    """Identity of the training a configuration would run, seed aside.

    The config with its schedules replaced by the values they take at every training
    step (schedules.py signatures): `cyclical` with one cycle and `monotonic` with
    the same ratio, or a teacher-forcing decay that starts after the last epoch and none at
    all, are the same configuration. Params the training config refuses key by themselves.
    """
    try:
        cfg = trial_config(base, space, params, 0, "key")
    except ConfigError:
        return "invalid:" + repr(sorted(params.items()))
    d = cfg.to_dict()
    d.pop("name", None)
    for k in ("seed", "device", "num_threads", "progress"):  # set per trial or per worker
        d["train"].pop(k, None)
    d["schedule"] = {"kl": kl_signature(cfg), "tf": tf_signature(cfg)}
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def grid(space: Space) -> dict[str, list[Any]]:
    """Values per parameter for GridSampler; the spec check guarantees every one is discrete."""
    return {n: (p.values() if not isinstance(p, FloatParam) else []) for n, p in space.items()}


def grid_points(space: Space) -> list[dict[str, Any]]:
    """Every point of a grid study's space, in the order of its YAML."""
    names = list(space)
    return [dict(zip(names, values)) for values in itertools.product(*grid(space).values())]


def distinct_grid_size(base: Config, space: Space) -> int:
    """Grid points that train differently (points whose schedules coincide over the budget are one)."""
    return len({effective_key(base, space, p) for p in grid_points(space)})


def check_space(space: Space, base: Config, source: str, sampler: str) -> None:
    """Cross checks against the base config: fields exist, values are accepted, conditions can hold."""
    flat = base.flat()

    def fail(name: str, msg: str) -> None:
        raise StudyError(f"{source}: field search_space.{name}: {msg}")

    def check_setting(name: str, dotted: str, value: Any) -> None:
        if dotted in RESERVED:
            fail(name, f"{dotted} is set by the study driver (seeds come from repeats/seeds)")
        if dotted not in flat:
            near = difflib.get_close_matches(dotted, list(flat), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            fail(name, f"{dotted} is not a setting of the base config {base.name!r}{hint}")
        d = copy.deepcopy(base.to_dict())
        set_dotted(d, dotted, value)
        try:
            config_from_dict(d, "base")
        except ConfigError as e:
            inner = str(e).split(": ", 1)[-1].replace("field <top>: ", "").replace("Value error, ", "")
            fail(name, f"value {value!r} is refused by the training config ({inner})")

    for name, p in space.items():
        if isinstance(p, CategoricalParam) and p.is_preset:
            for choice, settings in p.choices.items():
                if not settings:
                    fail(f"{name}.choices.{choice}", "empty preset: give at least one setting")
                for dotted, v in settings.items():
                    check_setting(f"{name}.choices.{choice}", dotted, v)
        else:
            ends = [p.low, p.high] if isinstance(p, (FloatParam, IntParam)) else p.values()
            for v in ends:
                check_setting(name, name, v)
        if sampler == "grid" and isinstance(p, FloatParam):
            fail(name, "grid needs discrete values but this is a float range; "
                       "use type categorical with the values to try")
        if sampler == "grid" and p.when:
            fail(f"{name}.when", "grid does not support conditional parameters (every point sets every "
                                 "parameter); drop the condition or use another sampler")
        for dep, allowed in p.conditions().items():
            where = f"{name}.when.{dep}"
            if dep == name:
                fail(where, "a parameter cannot depend on itself")
            if dep in space:
                q = space[dep]
                if not isinstance(q, CategoricalParam):
                    fail(where, f"conditions may only test categorical parameters; {dep} is a {q.type} range")
                never = [a for a in allowed if a not in q.values()]
                if never:
                    fail(where, f"impossible condition: {dep} never takes {never[0]!r} "
                                f"(choices: {', '.join(map(str, q.values()))})")
            elif dep in flat:
                if flat[dep] not in allowed:
                    fail(where, f"impossible condition: {dep} is fixed at {flat[dep]!r} in the base config "
                                "and not searched")
            else:
                fail(where, f"{dep} is neither a search-space parameter nor a setting of the base config")
    try:
        order(space)
    except ValueError as e:
        raise StudyError(f"{source}: field search_space: {e}") from None
