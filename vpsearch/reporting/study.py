"""Open a study by name and flatten its trials into one pandas frame.

Everything a report shows comes from the Optuna study alone (the trial user attrs of
``vpsearch.search.attrs`` and the intermediate values), so reports work without MLflow.
Strategies are read from each trial's resolved config (``attrs.CONFIG``), not from the
search-space parameter names, so a grid study and a Bayesian study label them alike.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from vpsearch.errors import UserError
from vpsearch.search import attrs

KL_ORDER = {"none": 0, "monotonic": 1, "cyclical": 2}
COLUMNS = ["number", "state", "value", "val_psnr", "val_psnr_final", "val_ssim", "baseline_psnr", "kl", "tf", "seed",
           "repeat", "config_hash", "epochs", "best_epoch", "duration_s", "train_seconds", "reason", "worker",
           "device", "mlflow_run_id", "run_dir", "_kl_order", "_tf_order"]
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
    configs: dict[int, dict[str, Any]] = field(default_factory=dict)  # trial number -> resolved config
    curves: dict[int, dict[int, float]] = field(default_factory=dict)  # number -> epoch -> val PSNR
    frame_psnr: dict[int, list[float]] = field(default_factory=dict)  # number -> per-frame PSNR
    param_names: list[str] = field(default_factory=list)

    @property
    def completed(self) -> pd.DataFrame:
        return self.frame[self.frame["state"] == "COMPLETE"]

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
        cfg = self.study.user_attrs.get(attrs.STUDY_CONFIG)
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
    v = _float(t.user_attrs.get(attrs.VAL_PSNR_BEST))
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


def _varying(schedules: list[dict[str, Any]], kind: str, key: str) -> bool:
    vals = {s.get(key) for s in schedules if s.get("kl_anneal_type") == kind}
    return len(vals) > 1


def kl_label(s: dict[str, Any], all_s: list[dict[str, Any]]) -> str:
    """'none', 'monotonic', 'cyclical', with cycle/ratio/unit only where the study varies them."""
    kind = s.get("kl_anneal_type", "?")
    parts = [kind]
    if kind == "cyclical" and _varying(all_s, kind, "kl_anneal_cycle"):
        parts.append(f"M={s.get('kl_anneal_cycle')}")
    if kind in ("cyclical", "monotonic") and _varying(all_s, kind, "kl_anneal_ratio"):
        parts.append(f"r={s.get('kl_anneal_ratio'):g}")
    if kind != "none" and _varying(all_s, kind, "kl_anneal_unit"):
        parts.append(f"per {s.get('kl_anneal_unit')}")
    return " ".join(parts)


def tf_label(s: dict[str, Any], all_s: list[dict[str, Any]]) -> str:
    """Teacher forcing as users name it: initial ratio, decay start, decay step."""
    tfr, step, start = s.get("tfr", 1.0), s.get("tfr_decay_step", 0.0), s.get("tfr_start_decay_epoch", 0)
    lower = s.get("tfr_lower_bound", 0.0)
    if step == 0 or lower >= tfr:
        label = f"tfr {tfr:g} fixed"
    else:
        label = f"tfr {tfr:g} -{step:g}/ep after ep {start}"
        if len({x.get("tfr_lower_bound") for x in all_s}) > 1:
            label += f" floor {lower:g}"
    if len({x.get("tfr_mode") for x in all_s}) > 1:
        label += f" ({s.get('tfr_mode')})"
    return label


def tf_sort_key(s: dict[str, Any]) -> tuple:
    return (-s.get("tfr", 1.0), s.get("tfr_decay_step", 0.0), s.get("tfr_start_decay_epoch", 0),
            s.get("tfr_lower_bound", 0.0))


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


def study_data(study: optuna.Study, storage_url: str) -> StudyData:
    trials = study.get_trials(deepcopy=False)
    presets = preset_params(study.user_attrs.get(attrs.STUDY_CONFIG))
    now = dt.datetime.now()
    configs = {t.number: t.user_attrs[attrs.CONFIG] for t in trials if isinstance(t.user_attrs.get(attrs.CONFIG), dict)}
    schedules = [c.get("schedule", {}) for c in configs.values()]
    param_names = sorted({p for t in trials for p in t.params})
    rows = []
    for t in trials:
        ua = t.user_attrs
        sched = configs.get(t.number, {}).get("schedule")
        row: dict[str, Any] = {
            "number": t.number, "state": t.state.name, "value": objective_value(t),
            "val_psnr": trial_psnr(t), "val_psnr_final": _float(ua.get(attrs.VAL_PSNR_FINAL)),
            "val_ssim": _float(ua.get(attrs.VAL_SSIM_BEST)), "baseline_psnr": _float(ua.get(attrs.BASELINE_PSNR)),
            "kl": _named(kl_label(sched, schedules), t.params, presets, "kl") if sched else "unknown",
            "tf": _named(tf_label(sched, schedules), t.params, presets, "tf") if sched else "unknown",
            "seed": ua.get(attrs.SEED), "repeat": ua.get(attrs.REPEAT), "config_hash": ua.get(attrs.CONFIG_HASH),
            "epochs": len(t.intermediate_values), "best_epoch": ua.get(attrs.BEST_EPOCH),
            "duration_s": _duration(t, now), "train_seconds": _float(ua.get(attrs.TRAIN_SECONDS)),
            "reason": ua.get(attrs.FAIL_REASON) or "", "worker": ua.get(attrs.WORKER) or "",
            "device": ua.get(attrs.DEVICE) or "", "mlflow_run_id": ua.get(attrs.MLFLOW_RUN_ID) or "",
            "run_dir": ua.get(attrs.RUN_DIR) or "",
            "_kl_order": (KL_ORDER.get(sched.get("kl_anneal_type"), 9),) if sched else (9,),
            "_tf_order": tf_sort_key(sched) if sched else (9,),
        }
        if math.isnan(row["val_psnr_final"]) and t.intermediate_values:
            row["val_psnr_final"] = t.intermediate_values[max(t.intermediate_values)]
        for p in param_names:
            row[f"param:{p}"] = t.params.get(p)
        rows.append(row)
    # columns fixed even for a study without trials, so every table and figure can ask for them
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *(f"param:{p}" for p in param_names)])
    # the order strategies are listed in: KL none < monotonic < cyclical, then TF by schedule
    for col in ("_kl_order", "_tf_order"):
        label = col[1:3]
        keys = dict(zip(frame[label], frame[col].map(_tuple_key)))
        rank = {lab: i for i, lab in enumerate(sorted(keys, key=lambda lab: (keys[lab], lab)))}
        frame[col] = frame[label].map(rank)
    frame["strategy"] = frame["kl"] + " | " + frame["tf"]
    for col in ("number", "seed", "repeat", "epochs", "best_epoch"):
        # integers stay integers where some trials lack them (a waiting trial has no seed yet)
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    return StudyData(
        name=study.study_name, storage_url=storage_url, study=study, frame=frame, configs=configs,
        curves={t.number: dict(sorted(t.intermediate_values.items())) for t in trials if t.intermediate_values},
        frame_psnr={t.number: [float(x) for x in t.user_attrs[attrs.FRAME_PSNR]] for t in trials
                    if isinstance(t.user_attrs.get(attrs.FRAME_PSNR), list) and t.user_attrs[attrs.FRAME_PSNR]},
        param_names=param_names)


def _tuple_key(t: tuple) -> tuple:
    # tuples of numbers compare directly; the (9,) of unknown strategies sorts last
    return tuple(float(x) if isinstance(x, (int, float)) else math.inf for x in t)


def open_study_data(name: str, storage_url: str) -> StudyData:
    return study_data(load_study(name, storage_url), storage_url)


def resolve_run_dir(run_dir: str, root: Path | None = None) -> Path | None:
    """A trial's run directory on this machine: as recorded, or under the study folder."""
    if not run_dir:
        return None
    p = Path(run_dir).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p]
    if root is not None:
        candidates.append(root / p.name)
    return next((c for c in candidates if c.is_dir()), None)
