"""Open a study by name and flatten its trials into one pandas frame.

Everything a report shows comes from the Optuna study alone (the typed trial records of
``vpsearch.search.records`` and the intermediate values), so reports work without MLflow.
Strategies are read from each trial's resolved config through its effective schedules
(strategies.py), not from the search-space parameter names, so a grid study and a
Bayesian study label them alike, and settings that train identically are one strategy.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from vpsearch.config import Config, ConfigError, config_from_dict
from vpsearch.errors import UserError
from vpsearch.reporting.strategies import name_strategies
from vpsearch.search.records import StudyRecord, TrialRecord
from vpsearch.settings import under_root

COLUMNS = ["number", "state", "value", "val_psnr", "val_psnr_final", "val_ssim", "baseline_psnr", "kl", "tf", "seed",
           "repeat", "config_hash", "configuration", "epochs", "best_epoch", "duration_s", "train_seconds",
           "reason", "outcome", "replaced", "worker", "device", "mlflow_run_id", "run_dir", "_kl_order",
           "_tf_order"]
STATES = ["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]


class ReportError(UserError):
    """A user-facing problem (no such study, nothing completed); the CLI prints one line."""


def load_study(name: str, storage_url: str, wait: float = 10.0) -> optuna.Study:
    """The study NAME from a storage URL ('journal:PATH', sqlite:///PATH or an RDB URL).

    Opened through the search layer's storage (its journal lock, retries, and "not found"
    message naming the studies there), except that reading never creates anything: a
    missing journal or sqlite file is an error, not a new empty store.
    """
    from vpsearch.search.storage import load_optuna_study, open_storage, parse_url

    kind, target = parse_url(storage_url)
    if kind == "journal" and not Path(target).expanduser().is_file():
        raise ReportError(f"storage {storage_url}: no such journal file (run a study first, or pass --storage)")
    db = target[len("sqlite:///"):] if kind == "sqlite" and target.startswith("sqlite:///") else ""
    if db and db != ":memory:" and not Path(db).expanduser().is_file():
        raise ReportError(f"storage {storage_url}: no such sqlite file")
    return load_optuna_study(open_storage(storage_url, wait=wait), name)


@dataclass
class StudyData:
    """A study's trials as a frame (one row per trial) plus the per-trial series."""

    name: str
    storage_url: str
    study: optuna.Study
    frame: pd.DataFrame
    root: Path | None = None  # the runs root recorded run folders are relative to
    configs: dict[int, dict[str, Any]] = field(default_factory=dict)  # trial number -> resolved config
    curves: dict[int, dict[int, float]] = field(default_factory=dict)  # number -> epoch -> val PSNR
    frame_psnr: dict[int, list[float]] = field(default_factory=dict)  # number -> per-frame PSNR
    param_names: list[str] = field(default_factory=list)

    @property
    def completed(self) -> pd.DataFrame:
        return self.frame[self.frame["state"] == "COMPLETE"]

    @property
    def counted(self) -> pd.DataFrame:
        """Every trial that counts: not an attempt replaced by its re-run, not a trial never trained."""
        return self.frame[~self.frame["replaced"] & (self.frame["outcome"] != "skipped")]

    @property
    def repeats(self) -> int:
        """Seeds per configuration (the study's `repeats`)."""
        cfg = StudyRecord.of(self.study).study_config or {}
        return int(cfg.get("repeats", 1)) if isinstance(cfg, dict) else 1

    @property
    def baseline_name(self) -> str:
        """The trivial predictor the study's numbers are compared with: with one context frame
        (the dance protocol) copying it is copying the first frame."""
        base = StudyRecord.of(self.study).base_config or {}
        n_past = base.get("data", {}).get("n_past", 2) if isinstance(base, dict) else 2
        return "copy-first" if n_past == 1 else "copy-last"

    def counts(self) -> dict[str, int]:
        vc = self.frame["state"].value_counts() if len(self.frame) else {}
        return {s: int(vc.get(s, 0)) for s in STATES}

    def counts_line(self) -> str:
        c = self.counts()
        return ", ".join(f"{v} {k.lower()}" for k, v in c.items() if v or k in ("COMPLETE", "RUNNING"))

    def require_completed(self) -> pd.DataFrame:
        done = self.completed
        if done.empty:
            raise ReportError(f"study {self.name!r} has no completed trial yet ({len(self.frame)} trials: "
                              f"{self.counts_line()}); nothing to report")
        return done

    def objective_name(self) -> str:
        """The study's objective metric (the study YAML leaves it out when it is the default)."""
        cfg = StudyRecord.of(self.study).study_config
        if not isinstance(cfg, dict):
            return "objective"
        obj = cfg.get("objective") or {}
        return str(obj.get("metric", "val_psnr")) if isinstance(obj, dict) else "val_psnr"

    def curve_label(self) -> str:
        """What the intermediate values (the learning curves) measure."""
        return {"val_psnr": "val PSNR (dB)", "val_ssim": "val SSIM"}.get(self.objective_name(), self.objective_name())


def objective_value(t: optuna.trial.FrozenTrial) -> float:
    """The first objective (multi-objective studies put val PSNR or its like first); nan if none."""
    return float(t.values[0]) if t.values else math.nan


def _float(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def trial_psnr(t: optuna.trial.FrozenTrial) -> float:
    """Best validation PSNR: the recorded attr, else the objective, else the best epoch."""
    results = TrialRecord.of(t).results
    v = _float(results.val_psnr_best if results else None)
    if math.isnan(v) and t.values:
        v = float(t.values[0])
    if math.isnan(v) and t.intermediate_values:
        v = max(t.intermediate_values.values())
    return v


def _duration(t: optuna.trial.FrozenTrial, now: dt.datetime) -> float:
    if t.datetime_start is None:
        return math.nan
    end = t.datetime_complete or now
    return (end - t.datetime_start).total_seconds()


def preset_params(study_config: Any) -> dict[str, str]:
    """Categorical presets of the study YAML that set a schedule: param name -> 'kl' or 'tf'.

    Users name their strategies there (teacher_forcing: {always: ..., early_decay: ...});
    tables then show those names next to the settings they stand for.
    """
    space = study_config.get("search_space", {}) if isinstance(study_config, dict) else {}
    out = {}
    for name, spec in space.items():
        choices = spec.get("choices") if isinstance(spec, dict) else None
        if isinstance(choices, dict):
            keys = {k for c in choices.values() if isinstance(c, dict) for k in c}
            if any(k.startswith("schedule.kl_anneal") for k in keys):
                out[name] = "kl"
            elif any(k.startswith("schedule.tfr") for k in keys):
                out[name] = "tf"
    return out


def _named(label: str, params: dict[str, Any], presets: dict[str, str], kind: str) -> str:
    names = [str(params[p]) for p, k in presets.items() if k == kind and p in params]
    return f"{names[0]} ({label})" if names else label


def _config(raw: Any, number: int) -> Config | None:
    """A trial's stored config, or None when it does not validate (written by another version)."""
    try:
        return config_from_dict(raw, f"trial {number} config") if isinstance(raw, dict) else None
    except (ConfigError, ValueError):
        return None


def study_data(study: optuna.Study, storage_url: str, root: Path | None = None) -> StudyData:
    trials = study.get_trials(deepcopy=False)
    records = {t.number: TrialRecord.of(t) for t in trials}
    presets = preset_params(StudyRecord.of(study).study_config)
    now = dt.datetime.now()
    configs = {n: r.config for n, r in records.items() if isinstance(r.config, dict)}
    typed = {n: c for n, raw in configs.items() if (c := _config(raw, n)) is not None}
    kl_names, tf_names = name_strategies(typed)
    param_names = sorted({p for t in trials for p in t.params})
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history") or []}
    # a trial's configuration: as the driver recorded it, else (older studies) the first trial of its config hash
    first_of_hash: dict[str, int] = {}
    for n, r in sorted(records.items()):
        if r.config_hash:
            first_of_hash.setdefault(r.config_hash, n)
    rows = []
    for t in trials:
        rec, res = records[t.number], records[t.number].results
        kl, tf = kl_names.get(t.number), tf_names.get(t.number)
        row: dict[str, Any] = {
            "number": t.number, "state": t.state.name, "value": objective_value(t),
            "val_psnr": trial_psnr(t), "val_psnr_final": _float(res.val_psnr_final if res else None),
            "val_ssim": _float(res.val_ssim_best if res else None),
            "baseline_psnr": _float(res.baseline_psnr if res else None),
            "kl": _named(kl.label, t.params, presets, "kl") if kl else "unknown",
            "tf": _named(tf.label, t.params, presets, "tf") if tf else "unknown",
            "seed": rec.seed, "repeat": rec.repeat, "config_hash": rec.config_hash,
            "configuration": rec.config_id if rec.config_id is not None else first_of_hash.get(rec.config_hash or "",
                                                                                               t.number),
            "epochs": len(t.intermediate_values), "best_epoch": res.best_epoch if res else None,
            "duration_s": _duration(t, now), "train_seconds": _float(res.train_seconds if res else None),
            "reason": rec.fail_reason or "", "outcome": rec.outcome or "",
            "replaced": t.number in replaced and t.state.name == "FAIL", "worker": rec.worker or "",
            "device": rec.device or "", "mlflow_run_id": rec.mlflow_run_id or "", "run_dir": rec.run_dir or "",
            "_kl_order": kl.order if kl else (9,), "_tf_order": tf.order if tf else (9,),
        }
        if math.isnan(row["val_psnr_final"]) and t.intermediate_values:
            row["val_psnr_final"] = t.intermediate_values[max(t.intermediate_values)]
        for p in param_names:
            row[f"param:{p}"] = t.params.get(p)
        rows.append(row)
    # columns fixed even for a study without trials, so every table and figure can ask for them
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *(f"param:{p}" for p in param_names)])
    rank_orders(frame)
    frame["strategy"] = frame["kl"] + " | " + frame["tf"]
    frame["replaced"] = frame["replaced"].astype(bool)
    for col in ("number", "seed", "repeat", "epochs", "best_epoch", "configuration"):
        # integers stay integers where some trials lack them (a waiting trial has no seed yet)
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    return StudyData(
        name=study.study_name, storage_url=storage_url, study=study, frame=frame, root=root, configs=configs,
        curves={t.number: dict(sorted(t.intermediate_values.items())) for t in trials if t.intermediate_values},
        frame_psnr={n: [float(x) for x in r.results.frame_psnr] for n, r in records.items()
                    if r.results and r.results.frame_psnr},
        param_names=param_names)


def rank_orders(frame: pd.DataFrame) -> None:
    """Turn the strategies' order tuples (_kl_order, _tf_order) into ranks: the order strategies are
    listed in (KL none < monotonic < cyclical, then teacher forcing by schedule)."""
    for col in ("_kl_order", "_tf_order"):
        label = col[1:3]
        keys = dict(zip(frame[label], frame[col].map(_tuple_key)))
        rank = {lab: i for i, lab in enumerate(sorted(keys, key=lambda lab: (keys[lab], lab)))}
        frame[col] = frame[label].map(rank)


def _tuple_key(t: tuple) -> tuple:
    # tuples of numbers compare directly; the (9,) of unknown strategies sorts last
    return tuple(float(x) if isinstance(x, (int, float)) else math.inf for x in t)


def open_study_data(name: str, storage_url: str, root: Path | str | None = None) -> StudyData:
    return study_data(load_study(name, storage_url), storage_url, Path(root) if root else None)


def resolve_run_dir(run_dir: str, root: Path | None = None) -> Path | None:
    """A trial's run directory on this machine (recorded relative to the runs root), or None."""
    if not run_dir:
        return None
    p = under_root(run_dir, root)
    return p if p.is_dir() else None
