"""The per-epoch metrics of a run: one registry, from which everything else is derived.

A metric is listed once, in EPOCH_METRICS. From that list come the columns of
``metrics.csv`` (METRIC_COLUMNS), the MLflow metric names (tracking/names.py), the
metrics a study may optimise (OBJECTIVE_METRICS) and the labels of plots. Adding a
metric means adding one entry here and setting it in the trainer's epoch row.

An epoch row is a plain ``dict`` keyed by these keys (``epoch`` first); an evaluation
metric is absent from the row of an epoch without evaluation.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class EpochMetric:
    key: str  # the row key and metrics.csv column
    mlflow: str  # the MLflow metric name (step = epoch)
    label: str  # for plots and tables
    objective: bool = False  # a study may optimise it (it is reported per evaluated epoch)
    direction: Literal["maximize", "minimize"] = "maximize"  # better is higher / lower


EPOCH_METRICS: tuple[EpochMetric, ...] = (
    EpochMetric("loss", "train/loss", "training loss (mean over steps)", direction="minimize"),
    EpochMetric("mse", "train/mse", "MSE summed over predicted steps", direction="minimize"),
    EpochMetric("kl", "train/kl", "KL summed over predicted steps", direction="minimize"),
    EpochMetric("kl_beta", "schedule/kl_beta", "effective KL weight beta x w(t) (last step)"),
    # w(t) alone: the annealing schedule's shape on a 0..1 axis (beta x w(t) with beta 1e-4 charts as 0)
    EpochMetric("kl_weight", "schedule/kl_weight", "KL annealing weight w(t), 0..1 (last step)"),
    EpochMetric("tfr", "schedule/tfr", "teacher-forcing ratio"),
    EpochMetric("lr", "train/lr", "learning rate"),
    # MLflow's charts draw a small constant (lr 1e-3) as a flat line at 0; its log10 (-3) reads
    EpochMetric("log10_lr", "train/log10_lr", "log10 of the learning rate (-3 = 1e-3)"),
    EpochMetric("grad_norm", "train/grad_norm", "gradient norm before clipping (mean over steps)",
                direction="minimize"),
    EpochMetric("grad_norm_max", "train/grad_norm_max", "gradient norm before clipping (max over steps)",
                direction="minimize"),
    EpochMetric("val_psnr", "val/psnr", "validation PSNR (dB), mean of samples", objective=True),
    EpochMetric("val_ssim", "val/ssim", "validation SSIM, mean of samples", objective=True),
    EpochMetric("val_psnr_best_of_n", "val/psnr_best_of_n", "validation PSNR (dB), best of N samples",
                objective=True),
    EpochMetric("baseline_psnr", "val/baseline_psnr", "copy-last-context-frame PSNR (dB), same sequences"),
    EpochMetric("frames_per_second", "time/frames_per_second", "training frames per second"),
    EpochMetric("seconds", "time/epoch_seconds", "wall seconds of the epoch (training + evaluation)",
                direction="minimize"),
)
BY_KEY: dict[str, EpochMetric] = {m.key: m for m in EPOCH_METRICS}
METRIC_COLUMNS: list[str] = ["epoch", *BY_KEY]
OBJECTIVE_METRICS: tuple[str, ...] = tuple(m.key for m in EPOCH_METRICS if m.objective)


def write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    """metrics.csv: one row per epoch, METRIC_COLUMNS, empty where an epoch lacks a value."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})


def read_frame_psnr(path: Path) -> dict[str, list[float]] | None:
    """frame_psnr.csv (the best evaluation, per predicted frame): {'psnr': [...], 'baseline': [...]}."""
    if not path.is_file():
        return None
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {"psnr": [float(r["psnr"]) for r in rows], "baseline": [float(r["baseline_psnr"]) for r in rows]}
