"""What a trial looks like in MLflow: metric names, tag keys, params within MLflow's limits.

Pure functions and constants only (no mlflow import), so the search and reporting layers
can read runs back by these names without pulling in the tracking machinery.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Iterable

# trainer metrics key (METRIC_COLUMNS) -> MLflow metric name, step = epoch
EPOCH_METRICS: dict[str, str] = {
    "loss": "train/loss",
    "mse": "train/mse",
    "kl": "train/kl",
    "kl_beta": "schedule/kl_beta",
    "tfr": "schedule/tfr",
    "lr": "train/lr",
    "val_psnr": "val/psnr",
    "val_ssim": "val/ssim",
    "seconds": "time/epoch_seconds",
    # not in the list but in metrics.csv; same scheme so nothing is hidden from the UI
    "grad_norm": "train/grad_norm",
    "grad_norm_max": "train/grad_norm_max",
    "val_psnr_best_of_n": "val/psnr_best_of_n",
    "baseline_psnr": "val/baseline_psnr",
    "frames_per_second": "time/frames_per_second",
}
# per-frame curves of the best evaluation, step = predicted frame index (1-based, as frame_psnr.csv)
FRAME_PSNR = "val/psnr_frame"
FRAME_SSIM = "val/ssim_frame"
# summary of a finished trial, step = best epoch; top-k checkpoint retention ranks by it
BEST_PSNR = "val/psnr_best"

# tags (the search layer may add more; these are set by the tracker itself)
TAG_ROLE = "vpsearch.role"  # "study" | "trial"
TAG_STUDY = "vpsearch.study"
TAG_TRIAL = "trial"  # trial number
TAG_STATE = "state"  # COMPLETE | PRUNED | FAIL | RUNNING
TAG_REASON = "reason"  # why a trial was pruned or failed
TAG_SAMPLER = "sampler"
TAG_SEED = "seed"
TAG_CONFIG_HASH = "config_hash"  # repeats of one configuration share it
TAG_DEVICE = "device"
TAG_HOST = "host"
TAG_GIT_COMMIT = "git_commit"
TAG_STORAGE = "storage_url"  # password redacted
TAG_WORKER = "vpsearch.worker."  # + host-pid on the parent run: running | done (see mlflow_tracker)
TAG_CHECKPOINT = "vpsearch.checkpoint"  # kept | not_top_k | deleted | kept_undeletable | none
MLFLOW_PARENT = "mlflow.parentRunId"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_SOURCE = "mlflow.source.name"
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"

# Optuna-style trial states -> MLflow run status
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}

# MLflow limits (mlflow.utils.validation): keys <= 250 chars, param values <= 6000,
# tag values <= 8000, per log_batch call <= 1000 metrics and <= 100 params + tags.
MAX_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
TRUNCATED = "...[truncated]"


def now_ms() -> int:
    return int(time.time() * 1000)


def trial_run_name(number: int) -> str:
    return f"trial-{number}"


def _text(value: Any) -> str:
    # JSON for containers so lists stay readable and parseable ([2, 5]); str for scalars
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def params_from_flat(flat: dict[str, Any]) -> dict[str, str]:
    """Flattened config -> MLflow params: string values, long ones truncated (marked)."""
    return {_clip(k, MAX_KEY): _clip(_text(v), MAX_PARAM_VALUE) for k, v in flat.items()}


def clean_tags(tags: dict[str, Any]) -> dict[str, str]:
    return {_clip(str(k), MAX_KEY): _clip(_text(v), MAX_TAG_VALUE) for k, v in tags.items() if v is not None}


def epoch_metrics(epoch: int, metrics: dict[str, float], timestamp: int) -> list[list]:
    """One epoch of trainer metrics -> [[name, value, timestamp, step], ...] (JSON-ready)."""
    out = []
    for key, value in metrics.items():
        name = EPOCH_METRICS.get(key)
        if name is None or value is None or value == "":
            continue
        out.append([name, float(value), timestamp, int(epoch)])
    return out


def frame_metrics(name: str, values: Iterable[float], timestamp: int) -> list[list]:
    return [[name, float(v), timestamp, i] for i, v in enumerate(values, start=1)]


def score(value: Any) -> float:
    """A ranking score where NaN/missing sort last."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(v) else v


def chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
