"""The typed record of a study and of a trial, and the only code that reads or writes them.

Optuna keeps a study's and each trial's "user attrs" (a JSON dict); vpsearch keeps its own
bookkeeping there so that reports, resumes and other machines need nothing but the
storage. Every field is one user attr named like the field, written on its own, so two
processes updating different fields of one trial (a worker its results, a reaper the
failure) never overwrite each other. Nothing outside this module reads ``user_attrs``
by a string key, and Optuna's private members (``_trial_id``, ``_storage``) are used
here only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

# why a trial did not complete; "diverged" is information about the region of the space
# (the samplers learn to avoid it), the others are not (see samplers.py)
Outcome = Literal["diverged", "error", "lost", "interrupted", "duplicate"]


@dataclass
class TrialResults:
    """What a trial's training reported (also for a trial stopped half way)."""

    epochs_done: int = 0
    best_epoch: int | None = None
    val_psnr_best: float | None = None  # best validation PSNR over epochs (mean of samples)
    val_psnr_final: float | None = None  # at the last evaluated epoch
    val_ssim_best: float | None = None  # SSIM at the best-PSNR epoch
    baseline_psnr: float | None = None  # copy-last-context-frame PSNR on the same sequences
    frame_psnr: list[float] | None = None  # per predicted frame, at the best epoch
    baseline_frame_psnr: list[float] | None = None  # copy-last per predicted frame, same sequences
    train_seconds: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "TrialResults | None":
        if not isinstance(d, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class _Record:
    """Fields <-> user attrs of the same names; None means "not recorded"."""

    NESTED: ClassVar[dict[str, Any]] = {}

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]):
        kw = {}
        for name in cls.field_names():
            if name in attrs and attrs[name] is not None:
                value = attrs[name]
                kw[name] = cls.NESTED[name].from_dict(value) if name in cls.NESTED else value
        return cls(**kw)  # type: ignore[call-arg]

    @classmethod
    def encode(cls, **values: Any) -> dict[str, Any]:
        """Field values as user attrs (checks the names: a typo fails here, not in a report)."""
        unknown = set(values) - cls.field_names()
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
        return {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in values.items()}

    def attrs(self) -> dict[str, Any]:
        """Every recorded (non-None) field as user attrs."""
        present = {f: getattr(self, f) for f in self.field_names() if getattr(self, f) is not None}
        return self.encode(**present)


@dataclass
class TrialRecord(_Record):
    """vpsearch's view of one trial."""

    NESTED: ClassVar[dict[str, Any]] = {"results": TrialResults}

    config_id: int | None = None  # number of the configuration's first trial (its repeats share it)
    repeat: int | None = None  # 0..repeats-1: which of the configuration's seeds
    seed: int | None = None  # the training seed (repeat k of every configuration shares it)
    config: dict[str, Any] | None = None  # the resolved training config (device left to the worker)
    config_hash: str | None = None  # Config.hash(): seed excluded, so repeats share it
    effective_key: str | None = None  # hash of the effective config (same schedules -> same key)
    run_dir: str | None = None  # the trial's run folder, relative to the runs root when inside it
    worker: str | None = None  # host:pid of the worker that runs / ran it
    device: str | None = None
    threads: int | None = None
    retry_of: int | None = None  # the trial this one re-runs (its worker died or was interrupted)
    resumed_from_epoch: int | None = None  # a re-run that continued a dead attempt's last.pt at this epoch
    resume_note: str | None = None  # a re-run: whose run it continues, or why it started over
    skopt_point: list[Any] | None = None  # the full scikit-optimize point (sampler skopt)
    mlflow_run_id: str | None = None
    provenance: dict[str, Any] | None = None  # git commit, packages, dataset fingerprint (at training)
    outcome: str | None = None  # Outcome of a trial that did not complete
    fail_reason: str | None = None  # why it failed or was pruned, in words
    results: TrialResults | None = None

    @classmethod
    def of(cls, trial: FrozenTrial | optuna.trial.Trial) -> "TrialRecord":
        return cls.from_attrs(trial.user_attrs)


@dataclass
class StudyRecord(_Record):
    """vpsearch's view of one study."""

    study_config: dict[str, Any] | None = None  # the validated study YAML, as written
    base_config: dict[str, Any] | None = None  # the resolved base training config
    mlflow_parent_run_id: str | None = None
    mlflow_tracking_uri: str | None = None  # password redacted
    exhausted: str | None = None  # why no new configuration can be proposed (finite space run out)
    stopped: str | None = None  # why the stop rule ended the study (search/after_trial.py)
    raced_out: dict[str, str] | None = None  # configuration id -> why racing stopped its seeds
    slurm_jobs: list[dict[str, Any]] | None = None  # sbatch submissions of workers

    @classmethod
    def of(cls, study: optuna.Study) -> "StudyRecord":
        return cls.from_attrs(study.user_attrs)


# --- writing ---------------------------------------------------------------------------
def write_study(study: optuna.Study, **values: Any) -> None:
    for k, v in StudyRecord.encode(**values).items():
        study.set_user_attr(k, v)


def write_trial(study: optuna.Study, trial: FrozenTrial | optuna.trial.Trial | int, **values: Any) -> None:
    """Set fields of a RUNNING trial (by Trial, FrozenTrial or trial id)."""
    tid = trial if isinstance(trial, int) else trial_id(trial)
    for k, v in TrialRecord.encode(**values).items():
        study._storage.set_trial_user_attr(tid, k, v)
    if isinstance(trial, optuna.trial.Trial):  # keep the Trial's cached view in step
        trial._cached_frozen_trial.user_attrs.update(TrialRecord.encode(**values))


# --- Optuna internals, in one place --------------------------------------------------------
def trial_id(trial: FrozenTrial | optuna.trial.Trial) -> int:
    return trial._trial_id


def get_trial(study: optuna.Study, tid: int) -> FrozenTrial:
    return study._storage.get_trial(tid)


def trial_by_number(study: optuna.Study, number: int) -> FrozenTrial:
    return study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number))


def fail_running(study: optuna.Study, tid: int) -> bool:
    """RUNNING -> FAIL; False when another process finished it first."""
    try:
        return bool(study._storage.set_trial_state_values(tid, state=TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def stale_trial_ids(study: optuna.Study, rdb: optuna.storages.RDBStorage) -> list[int]:
    """Trials whose heartbeat went stale (Optuna's public fail_stale_trials gives no hook to say why)."""
    return rdb._get_stale_trial_ids(study._study_id)


__all__ = ["Outcome", "StudyRecord", "TrialRecord", "TrialResults", "fail_running", "get_trial", "stale_trial_ids",
           "trial_by_number", "trial_id", "write_study", "write_trial"]
