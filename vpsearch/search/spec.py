"""Study YAML: the typed description of a search, validated before anything runs.

A study names a base training config, a search space over its dotted fields, the
objective, the sampler and pruner, the budget and the seeds. Everything that can be
checked without training is checked here (unknown keys, wrong types, a grid over a
float range, conditions that can never hold, values the training config refuses), and
every error is one line naming the file and the field.

Search-space entries are keyed by the dotted config field they set
(``optim.lr: {type: float, low: 1e-4, high: 1e-2, log: true}``), except categorical
"presets", whose choices are named groups of settings
(``tf: {type: categorical, choices: {slow: {schedule.tfr_decay_step: 0.05}, ...}}``).
``when: {schedule.kl_anneal_type: cyclical}`` makes a parameter conditional.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError,
                      field_validator, model_validator)

from vpsearch.config import ConfigError
from vpsearch.training.history import OBJECTIVE_METRICS

Scalar = Union[StrictBool, StrictInt, StrictFloat, str]
SAMPLER_NAMES = ("tpe", "gp", "cmaes", "random", "grid", "skopt")
PRUNER_NAMES = ("none", "median", "hyperband", "successive_halving", "wilcoxon", "patient", "schedule_aware")
# Options each sampler / pruner accepts besides its name; anything else set is a mistake.
SAMPLER_OPTIONS = {"tpe": {"seed", "n_startup_trials"}, "gp": {"seed", "n_startup_trials"},
                   "cmaes": {"seed", "n_startup_trials"}, "random": {"seed"}, "grid": {"seed"},
                   "skopt": {"seed", "n_startup_trials", "acq_func"}}
PRUNER_OPTIONS = {"none": set(), "median": {"n_startup_trials", "warmup_epochs"},
                  "hyperband": {"min_resource", "reduction_factor"},
                  "successive_halving": {"min_resource", "reduction_factor"},
                  "wilcoxon": {"p_threshold", "warmup_epochs"},
                  "patient": {"n_startup_trials", "warmup_epochs", "patience", "min_delta"},
                  "schedule_aware": {"n_startup_trials", "warmup_epochs", "patience", "min_delta", "percentile",
                                     "noise_margin", "min_rank_correlation"}}
# Set by the study driver for every trial, so a search space must not own them.
RESERVED = {"name", "train.seed", "train.device", "train.num_threads", "train.progress"}


class StudyError(ConfigError):
    """A study file, stored study or storage is unusable; the message says which and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Conditional(Strict):
    # parameter (or fixed config field) -> the value(s) under which this parameter exists
    when: dict[str, Union[Scalar, list[Scalar]]] | None = None

    def conditions(self) -> dict[str, list[Any]]:
        return {k: v if isinstance(v, list) else [v] for k, v in (self.when or {}).items()}


class FloatParam(_Conditional):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "FloatParam":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined")
        return self


class IntParam(_Conditional):
    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    log: bool = False
    step: StrictInt = Field(1, ge=1)

    @model_validator(mode="after")
    def _range(self) -> "IntParam":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log scale needs low >= 1 and step 1")
        return self

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


class CategoricalParam(_Conditional):
    type: Literal["categorical"]
    # plain values of one config field, or named presets: name -> {dotted field: value}
    choices: Union[list[Scalar], dict[str, dict[str, Any]]]

    @field_validator("choices")
    @classmethod
    def _two_or_more(cls, v: Any) -> Any:
        if len(v) < 2:
            raise ValueError("needs at least 2 choices (a single value belongs in overrides)")
        if isinstance(v, list) and len(set(map(repr, v))) != len(v):
            raise ValueError("choices repeat a value")
        return v

    @property
    def is_preset(self) -> bool:
        return isinstance(self.choices, dict)

    def values(self) -> list[Any]:
        return list(self.choices) if isinstance(self.choices, dict) else list(self.choices)


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


def _objective_metric(v: str, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise ValueError(f"unknown metric {v!r} (choices: {', '.join(allowed)})")
    return v


class Secondary(Strict):
    metric: str = "train_seconds"
    direction: Literal["maximize", "minimize"] = "minimize"

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        return _objective_metric(v, ("train_seconds", *OBJECTIVE_METRICS))


class Objective(Strict):
    # best value over evaluated epochs; each epoch's value is reported for pruning.
    # Choices: the per-epoch metrics marked objective in training/history.py.
    metric: str = "val_psnr"
    direction: Literal["maximize", "minimize"] = "maximize"
    secondary: Secondary | None = None

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        return _objective_metric(v, OBJECTIVE_METRICS)

    @property
    def directions(self) -> list[str]:
        return [self.direction] + ([self.secondary.direction] if self.secondary else [])


class SamplerSpec(Strict):
    name: Literal["tpe", "gp", "cmaes", "random", "grid", "skopt"] = "tpe"
    seed: int = 0
    n_startup_trials: int | None = Field(None, ge=0, description="random trials before the model")
    acq_func: Literal["gp_hedge", "EI", "PI", "LCB"] | None = Field(None, description="skopt only")

    @model_validator(mode="after")
    def _options(self) -> "SamplerSpec":
        _check_options(self, SAMPLER_OPTIONS[self.name], "sampler")
        return self


class PrunerSpec(Strict):
    name: Literal["none", "median", "hyperband", "successive_halving", "wilcoxon", "patient",
                  "schedule_aware"] = "none"
    n_startup_trials: int = Field(2, ge=0, description="trials that must finish before pruning")
    warmup_epochs: int = Field(0, ge=0, description="epochs never pruned")
    patience: int = Field(2, ge=1, description="evaluations in a row below the bar before pruning")
    min_delta: float = Field(0.0, ge=0)
    percentile: float = Field(50.0, gt=0, lt=100, description="schedule_aware: the bar is this percentile of the "
                              "completed trials (50: the median; higher prunes more)")
    noise_margin: float = Field(0.0, ge=0, description="schedule_aware: the bar is lowered by this many seed "
                                "standard deviations (measured on the completed seeds at that epoch)")
    min_rank_correlation: float | None = Field(None, ge=-1, le=1, description="schedule_aware: judge an epoch "
                                               "only once the completed trials' values there rank their final "
                                               "values with at least this Spearman correlation")
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    p_threshold: float = Field(0.1, gt=0, lt=1, description="wilcoxon: prune when the paired test against the "
                               "best trial on the epochs both reported gives p below this")

    @model_validator(mode="after")
    def _options(self) -> "PrunerSpec":
        _check_options(self, PRUNER_OPTIONS[self.name], "pruner")
        return self


def _check_options(model: BaseModel, allowed: set[str], what: str) -> None:
    extra = sorted(model.model_fields_set - allowed - {"name"})
    if extra:
        name = getattr(model, "name")
        raise ValueError(f"{extra[0]} is not an option of {what} {name} "
                         f"(options: {', '.join(sorted(allowed)) or 'none'})")


class Budget(Strict):
    n_trials: int | None = Field(None, ge=1, description="training runs, repeats included; grid: default all")
    timeout: float | None = Field(None, gt=0, description="seconds per `study run`; no trial starts after it")
    epochs: int | None = Field(None, ge=1, description="train.epochs of every trial")
    steps_per_epoch: int | None = Field(None, ge=1, description="train.steps_per_epoch of every trial")


class Failure(Strict):
    max_retries: int = Field(2, ge=0, description="re-runs of a trial whose worker died")
    heartbeat_seconds: int = Field(30, ge=1, description="RDB storages: heartbeat interval")
    grace_seconds: int | None = Field(None, ge=1, description="stale after this; default 3 heartbeats")

    @property
    def grace(self) -> int:
        return self.grace_seconds or 3 * self.heartbeat_seconds


class CheckpointPolicy(Strict):
    """Which checkpoint files a study keeps once its trials end (trial folders and MLflow alike).

    best.pt holds weights only, last.pt everything to resume. A running trial keeps both, and a
    trial whose worker died keeps last.pt until its re-run continues from it.
    """

    keep: Literal["best", "last", "both", "none"] = Field(
        "best", description="best: best.pt of the top_k trials; last: every completed trial's last.pt; both; none")
    top_k: int = Field(3, ge=0, description="trials whose best.pt is kept (ranked by the objective)")


class StudySpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    base: str = Field(description="shipped training config name or a path (relative to the study file)")
    overrides: list[str] = Field(default_factory=list, description="dotted settings applied to base")
    objective: Objective = Field(default_factory=Objective)
    search_space: dict[str, Param]
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    budget: Budget = Field(default_factory=Budget)
    repeats: int = Field(1, ge=1, description="seeds per configuration (with race: at most this many)")
    race: bool = Field(False, description="racing over seeds: a configuration's next seed runs only while a paired "
                                          "test cannot show it worse than another configuration (search/racing.py)")
    stop: Literal["none", "regret_bound"] = Field("none", description="regret_bound: end the study once the best "
                                                  "can no longer improve by more than the seed noise "
                                                  "(search/stopping.py; needs repeats >= 2)")
    seeds: list[int] | None = Field(None, description="explicit seeds, one per repeat")
    workers: int = Field(1, ge=1)
    devices: str = Field("cpu", description="cpu, auto, cuda, or cuda:0,cuda:1,...")
    threads_per_worker: int | None = Field(None, ge=1, description="CPU threads; default cores / workers")
    failure: Failure = Field(default_factory=Failure)
    checkpoints: CheckpointPolicy = Field(default_factory=CheckpointPolicy)

    @model_validator(mode="before")
    @classmethod
    def _repeats_form(cls, data: Any) -> Any:
        # `repeats: {max: 3, race: true}` == `repeats: 3` + `race: true`
        if isinstance(data, dict) and isinstance(data.get("repeats"), dict):
            r = dict(data["repeats"])
            unknown = sorted(set(r) - {"max", "race"})
            if unknown:
                raise ValueError(f"repeats.{unknown[0]}: unknown key (expected max and race)")
            data = {**data, "repeats": r.get("max", 1)}
            if "race" in r:
                data["race"] = r["race"]
        return data

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v  # `sampler: tpe` == `sampler: {name: tpe}`

    @field_validator("search_space")
    @classmethod
    def _not_empty(cls, v: dict) -> dict:
        if not v:
            raise ValueError("empty: list at least one parameter to search")
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|auto|cuda|cuda:\d+(,cuda:\d+)*", v.replace(" ", "")):
            raise ValueError("expected cpu, auto, cuda or cuda:0,cuda:1,...")
        return v.replace(" ", "")

    @model_validator(mode="after")
    def _consistent(self) -> "StudySpec":
        if self.race and self.repeats < 2:
            raise ValueError("race: racing over seeds needs repeats of at least 2")
        if self.stop != "none" and self.repeats < 2:
            raise ValueError("stop: the stop rule measures the seed noise, which needs repeats of at least 2")
        if self.seeds is not None and len(self.seeds) != self.repeats:
            raise ValueError(f"seeds: {len(self.seeds)} given but repeats is {self.repeats}")
        if self.objective.secondary is not None:
            if self.pruner.name != "none":
                raise ValueError("pruner: Optuna cannot prune multi-objective studies; use pruner none")
            if self.sampler.name in ("cmaes", "skopt"):
                raise ValueError(f"sampler: {self.sampler.name} is single-objective; use tpe, gp, random or grid")
        return self

    @property
    def directions(self) -> list[str]:
        return self.objective.directions


def _location(loc: tuple) -> str:
    parts = [str(x) for x in loc]
    # the discriminated union puts the tag (float/int/categorical) after the parameter name
    if len(parts) > 2 and parts[0] == "search_space" and parts[2] in ("float", "int", "categorical"):
        del parts[2]
    parts = [p for p in parts if not p.startswith(("function-", "union[", "list[", "dict["))
             and p not in ("str", "int", "float", "bool")]
    return ".".join(parts) or "<top>"


def format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    show = first["type"] not in ("extra_forbidden", "missing") and not isinstance(got, (dict, list))
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    loc = _location(first["loc"])
    named = re.match(r"([\w.]+): (.*)", msg)
    if loc == "<top>" and named:  # a cross-field check names its own field first
        loc, msg, show = named.group(1), named.group(2), False
    return f"{source}: field {loc}: {msg}{f', got {got!r}' if show else ''}{more}"


def parse_spec(data: Any, source: str) -> StudySpec:
    """pydantic validation of the YAML mapping; errors become one-line StudyErrors."""
    if not isinstance(data, dict):
        raise StudyError(f"{source}: expected a mapping of study settings, got {type(data).__name__}")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as e:
        raise StudyError(format_error(e, source)) from None


def base_path_for(spec: StudySpec, study_file: Path | None) -> str:
    """The base config as load_config understands it: a relative path is relative to the study file."""
    p = Path(spec.base).expanduser()
    if study_file is not None and not p.is_absolute() and (study_file.parent / p).is_file():
        return str(study_file.parent / p)
    return spec.base
