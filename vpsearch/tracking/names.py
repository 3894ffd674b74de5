"""What a trial looks like in MLflow: metric names, tag keys, params within MLflow's limits.

Pure functions and constants only (no mlflow import), so the search and reporting layers
can read runs back by these names without pulling in the tracking machinery.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Iterable

from vpsearch.fmt import number
from vpsearch.training import history

# trainer metrics key -> MLflow metric name, step = epoch (the one registry: training/history.py)
EPOCH_METRICS: dict[str, str] = {m.key: m.mlflow for m in history.EPOCH_METRICS}
# per-frame curves of the best evaluation. Their step (MLflow's x axis) is the predicted frame's
# index, not an epoch: 1 = the first frame after the context (as in frame_psnr.csv)
FRAME_PSNR = "val/psnr_frame"
FRAME_SSIM = "val/ssim_frame"
FRAME_COPY = "val/psnr_frame_copy"  # the copy baseline's PSNR per frame on the same sequences: the line to beat


def best_metric(key: str) -> str:
    """The summary a finished trial logs for each objective metric: its best epoch's value
    (step = that epoch), e.g. val/psnr_best. The study's parent run logs the best trial's."""
    return EPOCH_METRICS[key] + "_best"


# top-k checkpoint retention ranks trials by it
BEST_PSNR = best_metric("val_psnr")
# best val PSNR minus the trivial predictor's (copy-last, or copy-first for the dance family) on the
# same sequences at that epoch: how much the model buys, the column that answers "by how much"
GAIN = "val/gain_db"
# the study's parent run: trials by state, step = trials finished so far
TRIALS_COUNTS = {"complete": "trials/complete", "pruned": "trials/pruned", "failed": "trials/failed"}
TAG_BEST_TRIAL = "best_trial"  # the parent run's: the best trial's run name

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
TAG_CHECKPOINT = "vpsearch.checkpoint"  # kept | not_top_k | gone | deleted | kept_undeletable | none
MLFLOW_PARENT = "mlflow.parentRunId"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
MLFLOW_SOURCE = "mlflow.source.name"
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"
MLFLOW_NOTE = "mlflow.note.content"  # a run's description in the UI (markdown)
# a saved view of the runs table (MLflow 3 UI: columns, sort), opened by viewStateShareKey=VIEW_KEY
VIEW_KEY = "vpsearch"
RUN_NAME_COLUMN = "attributes.`Run Name`"
MLFLOW_SHARED_VIEW = "mlflow.sharedViewState."

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


# how a searched parameter is shortened in a run name (by its last dotted part); others by the
# initials of their words (kl_anneal_ratio -> kar); None: the value alone (categorical schedules)
SHORT = {"kl_anneal_type": None, "kl_anneal_cycle": "cycles", "tfr_decay_step": "tfd", "tfr_start_decay_epoch": "tfs",
         "tfr_lower_bound": "tfmin", "lr": "lr", "beta": "beta", "z_dim": "z", "g_dim": "g", "rnn_size": "rnn"}


def short_param(key: str) -> str | None:
    last = key.rsplit(".", 1)[-1]
    if last in SHORT:
        return SHORT[last]
    words = last.split("_")
    return "".join(w[0] for w in words if w) if len(words) > 1 else last


def trial_run_name(n: int, params: dict[str, Any] | None = None) -> str:
    """What tells a trial apart in the runs table: `t2 monotonic lr=1.1e-3 tfd=0.1`."""
    parts = [f"t{n}"]
    for key, value in (params or {}).items():
        short = short_param(key)
        text = number(value, digits=2)
        parts.append(text if short is None and isinstance(value, str) else f"{short or key}={text}")
    return " ".join(parts)


def trial_note() -> str:
    """A trial run's description in the MLflow UI: what its metrics are and what their x axis is
    (the first lines show before "Show more": the two surprises come first)."""
    lines = [f"Step = epoch, except for `{FRAME_PSNR}` and `{FRAME_SSIM}`: there the step is the **predicted "
             "frame index** (1 = the first frame after the context), at the best epoch. "
             f"`{EPOCH_METRICS['log10_lr']}` is the learning rate on a scale the charts show (-3 = 1e-3).", ""]
    lines += [f"- `{m.mlflow}`: {m.label}" for m in history.EPOCH_METRICS]
    lines += [f"- `{best_metric(m.key)}`: best epoch's {m.label} (step = that epoch)"
              for m in history.EPOCH_METRICS if m.objective]
    lines += [f"- `{GAIN}`: `{BEST_PSNR}` minus the copy baseline on the same sequences at that epoch (dB)"]
    lines += [f"- `{FRAME_PSNR}`, `{FRAME_SSIM}`: PSNR / SSIM per predicted frame at the best epoch "
              f"(step = predicted frame index); `{FRAME_COPY}`: copying the last context frame, per frame "
              f"(add it to the `{FRAME_PSNR}` chart to see where the model beats it)",
              "", "Artifacts: `samples/best.gif` and `samples/best_strip.png` (context, ground truth, prediction), "
              "`plots/`, `frame_psnr.csv`."]
    return "\n".join(lines)


def study_view(objective: str, params: list[str], name: str = "vpsearch: objective, baseline, params, state") -> str:
    """The saved runs-table view of a study's experiment (a tag value, MLFLOW_SHARED_VIEW + VIEW_KEY):
    the objective, the copy-last baseline, the searched params and the state, best first.

    The format is the MLflow 3 UI's saved-view envelope ({name, createdAt, state: JSON of the
    runs table's facets and columns}); column keys are `metrics.`name``, `params.`name``, `tags.`name``.
    """
    best = best_metric(objective)
    columns = [f"metrics.`{best}`", f"metrics.`{GAIN}`", f"metrics.`{EPOCH_METRICS['baseline_psnr']}`",
               *(f"params.`{p}`" for p in params), f"tags.`{TAG_STATE}`"]
    # column ids are the keys; widths apply to the columns listed in columnOrder. The run name
    # first (`t2 monotonic lr=1.1e-3 tfd=0.1`), then the columns share what a 1400 px window
    # leaves (~690 px beside the run name and start time), so the state column stays in view
    # with up to 4 params; more scroll.
    per_param = max(80, min(110, (690 - 3 * 90 - 95) // max(1, len(params))))
    widths = {RUN_NAME_COLUMN: 210, **{c: 90 for c in columns[:3]}, **{c: per_param for c in columns[3:-1]},
              f"tags.`{TAG_STATE}`": 95}
    state = {"selectedColumns": columns, "orderByKey": f"metrics.`{best}`",
             "orderByAsc": history.BY_KEY[objective].direction == "minimize",
             "columnOrder": [RUN_NAME_COLUMN, *columns], "columnWidths": widths}
    created = now_ms()
    return json.dumps({"name": name, "createdAt": created, "updatedAt": created, "state": json.dumps(state)})


def runs_url(base: str, experiment_id: str, view: bool = True) -> str:
    """The runs table of an experiment in the model-training workflow (not the GenAI overview),
    with the study's saved view when the experiment has one."""
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={VIEW_KEY}" if view else "")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


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
