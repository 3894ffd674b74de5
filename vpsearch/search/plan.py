"""A study file resolved against its base training config: what every worker runs from.

``load_study(path)`` validates the YAML (spec.py), builds the base config (base file +
overrides + budget), checks the search space against it (space.py) and derives the
trial count. The plan round-trips through the Optuna study's user attrs, so
``vpsearch worker`` needs only the study name and the storage.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpsearch.config import Config, ConfigError, config_from_dict, load_config, read_yaml, resolve_config_path
from vpsearch.search.records import StudyRecord
from vpsearch.search.space import check_space, distinct_grid_size
from vpsearch.search.spec import StudyError, StudySpec, base_path_for, parse_spec

# Fields a re-run may change without making old and new trials incomparable.
RESUMABLE_CHANGES = {"description", "workers", "devices", "threads_per_worker", "failure", "checkpoints"}
RESUMABLE_BUDGET = {"n_trials", "timeout"}


@dataclass
class StudyPlan:
    spec: StudySpec
    base: Config  # the base config after overrides and budget: trials differ from it only by params + seed
    source: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def space(self) -> dict[str, Any]:
        return self.spec.search_space

    @property
    def n_trials(self) -> int:
        if self.spec.budget.n_trials is not None:
            return self.spec.budget.n_trials
        return self.grid_configurations * self.spec.repeats  # only grid may leave it out

    @functools.cached_property
    def grid_configurations(self) -> int:
        """Distinct configurations of a grid (grid points whose schedules coincide count once)."""
        return distinct_grid_size(self.base, self.space)

    def seed_for(self, repeat: int) -> int:
        """Repeat k of every configuration gets the same seed, so strategies are compared paired."""
        return self.spec.seeds[repeat] if self.spec.seeds else self.base.train.seed + repeat

    def record(self) -> dict[str, Any]:
        """The StudyRecord fields that describe the search."""
        # exclude_unset: the YAML as written (validated), so options stay where the user put them
        return {"study_config": self.spec.model_dump(mode="json", exclude_unset=True),
                "base_config": self.base.to_dict()}

    @classmethod
    def from_record(cls, rec: StudyRecord, source: str) -> "StudyPlan":
        if rec.study_config is None or rec.base_config is None:
            raise StudyError(f"{source}: not a vpsearch study (no stored study config); "
                             "create it with `vpsearch study run STUDY.yaml`")
        spec = parse_spec(rec.study_config, source)
        return cls(spec, config_from_dict(rec.base_config, source), source)

    def differences(self, other: "StudyPlan") -> list[str]:
        """Fields whose change would mix trials of two different searches in one study."""
        a, b = self.spec.model_dump(mode="json"), other.spec.model_dump(mode="json")
        out = [k for k in a if k not in RESUMABLE_CHANGES and k != "budget" and a[k] != b[k]]
        out += [f"budget.{k}" for k in a["budget"] if k not in RESUMABLE_BUDGET and a["budget"][k] != b["budget"][k]]
        if self.base.to_dict() != other.base.to_dict():
            out.append("base (the resolved training config)")
        return out


def build_base(spec: StudySpec, source: str, study_file: Path | None) -> Config:
    overrides = list(spec.overrides)
    if spec.budget.epochs is not None:
        overrides.append(f"train.epochs={spec.budget.epochs}")
    if spec.budget.steps_per_epoch is not None:
        overrides.append(f"train.steps_per_epoch={spec.budget.steps_per_epoch}")
    # the objective decides what a trial's best epoch is: its checkpoint, pictures and best_epoch
    overrides += [f"eval.best_metric={spec.objective.metric}", f"eval.best_direction={spec.objective.direction}"]
    try:
        base = resolve_config_path(base_path_for(spec, study_file))
    except ConfigError as e:
        raise StudyError(f"{source}: field base: {e}") from None
    try:
        return load_config(base, overrides)
    except ConfigError as e:
        raise StudyError(f"{source}: field overrides: {e}") from None


def plan_from_spec(spec: StudySpec, source: str, study_file: Path | None = None) -> StudyPlan:
    base = build_base(spec, source, study_file)
    check_space(spec.search_space, base, source, spec.sampler.name)
    plan = StudyPlan(spec, base, source)
    n, r = spec.budget.n_trials, spec.repeats
    if spec.sampler.name == "grid":
        full = plan.grid_configurations * r
        if n is not None and n > full:
            raise StudyError(f"{source}: field budget.n_trials: {n} exceeds the grid "
                             f"({full // r} distinct points x {r} repeats = {full})")
    elif n is None:
        raise StudyError(f"{source}: field budget.n_trials: required for sampler {spec.sampler.name} "
                         "(only grid derives it from the space)")
    if plan.n_trials % r:
        raise StudyError(f"{source}: field budget.n_trials: {plan.n_trials} is not a multiple of "
                         f"repeats ({r}), so some configuration would miss seeds")
    if spec.pruner.name in ("hyperband", "successive_halving") and spec.pruner.min_resource >= base.train.epochs:
        raise StudyError(f"{source}: field pruner.min_resource: {spec.pruner.min_resource} leaves nothing to "
                         f"prune in {base.train.epochs} epochs")
    check_prunable(plan, source)
    return plan


def check_prunable(plan: StudyPlan, source: str) -> None:
    """Refuse a schedule-aware study in which some configuration could never be pruned
    (its schedules play out only at the last epoch): prunable strategies would lose their
    bad trials while immune ones keep theirs."""
    if plan.spec.pruner.name != "schedule_aware":
        return
    from vpsearch.search.pruners import unjudged_configurations

    checked, never = unjudged_configurations(plan)
    if never:
        shown = ", ".join(f"{k}={v}" for k, v in never[0].items()) or "the base config"
        more = f" (and {len(never) - 1} more of {checked})" if len(never) > 1 else ""
        raise StudyError(f"{source}: field pruner: schedule_aware could never judge the configuration "
                         f"{shown}{more}: its schedules play out only at the last of {plan.base.train.epochs} "
                         "epochs (or after it); shorten those schedules, evaluate more often (eval.every), "
                         "raise budget.epochs, or use pruner none")


def load_study(path: str | Path) -> StudyPlan:
    """Read and fully validate a study YAML; raises StudyError/ConfigError with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no such study file")
    spec = parse_spec(read_yaml(path), str(path))
    return plan_from_spec(spec, str(path), path)
