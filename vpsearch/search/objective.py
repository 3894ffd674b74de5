"""The trial objective: what the trainer reports becomes Optuna values, pruning and attrs.

The trainer knows nothing of Optuna: ``TrialReporter`` is the Reporter the worker hands
to fit(). Every epoch with an evaluation reports its objective metric (validation PSNR by
default) as the trial's intermediate value at step = epoch and asks the pruner; epochs
without evaluation report nothing. The objective value is the best of those values (and,
in a multi-objective study, the secondary metric; Optuna keeps no per-epoch values there).
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import optuna

from vpsearch.search.records import TrialResults, write_trial
from vpsearch.search.spec import Objective
from vpsearch.search.storage import StudyStorage
from vpsearch.training.reporter import Reporter
from vpsearch.training.history import read_frame_psnr


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


class TrialReporter(Reporter):
    def __init__(self, trial: optuna.trial.Trial, store: StudyStorage, objective: Objective, prune: bool):
        self.trial, self.store, self.objective, self.prune = trial, store, objective, prune
        self.rows: list[dict[str, Any]] = []
        self.frames: dict[int, dict[str, list[float]]] = {}
        self.pruned_epoch: int | None = None
        self.resumed_from: int | None = None  # the epoch a re-run continued its dead attempt at
        self.run_dir: Path | None = None

    def started(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)

    def resumed(self, start_epoch: int, history: list[dict[str, float]]) -> None:
        """A re-run continues its dead attempt's run: the epochs before become this trial's
        intermediate values too (no pruning decision: they were judged, or not, when they ran)."""
        self.resumed_from = start_epoch
        write_trial_record(self, resumed_from_epoch=start_epoch)
        for row in history:
            self.rows.append(dict(row))
            v = row.get(self.objective.metric)
            if _finite(v) and self.objective.secondary is None:
                self.store.call(lambda: self.trial.report(float(v), int(row["epoch"])), "reporting an epoch")
        best = self.best_row(self.objective.metric)
        frames = read_frame_psnr(self.run_dir / "frame_psnr.csv") if self.run_dir else None
        if best is not None and frames:  # the run's per-frame curve is its best evaluation's
            self.frames[int(best["epoch"])] = {"psnr": frames["psnr"], "baseline_psnr": frames["baseline"]}

    def report(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.rows.append({"epoch": epoch, **metrics})
        v = metrics.get(self.objective.metric)
        if not _finite(v) or self.objective.secondary is not None:
            # no evaluation this epoch (or a NaN metric): nothing to compare; Optuna keeps no
            # intermediate values for multi-objective studies (and cannot prune them)
            return False
        self.store.call(lambda: self.trial.report(float(v), epoch), "reporting an epoch")
        if self.prune and self.store.call(self.trial.should_prune, "asking the pruner"):
            self.pruned_epoch = epoch
            return True
        return False

    def evaluated(self, epoch: int, frame_metrics: dict[str, list[float]]) -> None:
        self.frames[epoch] = {k: [float(x) for x in v] for k, v in frame_metrics.items()}

    # --- results, from what was reported (also for a trial that failed half way)
    def best_row(self, metric: str) -> dict[str, Any] | None:
        rows = [r for r in self.rows if _finite(r.get(metric))]
        if not rows:
            return None
        pick = max if self.objective.direction == "maximize" or metric != self.objective.metric else min
        return pick(rows, key=lambda r: r[metric])

    def values(self, train_seconds: float) -> list[float] | None:
        """Objective value(s), or None when no finite value was ever reported."""
        best = self.best_row(self.objective.metric)
        if best is None:
            return None
        out = [float(best[self.objective.metric])]
        sec = self.objective.secondary
        if sec is not None:
            if sec.metric == "train_seconds":
                out.append(float(train_seconds))
            else:
                rows = [r[sec.metric] for r in self.rows if _finite(r.get(sec.metric))]
                if not rows:
                    return None
                out.append(float(max(rows) if sec.direction == "maximize" else min(rows)))
        return out

    def results(self, train_seconds: float) -> TrialResults:
        """What was reported; None where the trial never got that far."""
        best = self.best_row(self.objective.metric)
        evaluated = [r for r in self.rows if _finite(r.get("val_psnr"))]
        frames = self.frames.get(int(best["epoch"]), {}) if best else {}

        def at_best(key: str) -> float | None:
            return float(best[key]) if best and _finite(best.get(key)) else None
        return TrialResults(
            epochs_done=len(self.rows), best_epoch=int(best["epoch"]) if best else None,
            val_psnr_best=at_best("val_psnr"),
            val_psnr_final=float(evaluated[-1]["val_psnr"]) if evaluated else None,
            val_ssim_best=at_best("val_ssim"), baseline_psnr=at_best("baseline_psnr"),
            frame_psnr=frames.get("psnr"), baseline_frame_psnr=frames.get("baseline_psnr"),
            train_seconds=round(float(train_seconds), 3))


def write_trial_record(r: TrialReporter, **fields: Any) -> None:
    r.store.call(lambda: write_trial(r.trial.study, r.trial, **fields), "writing the trial record")


class Heartbeat:
    """Records the trial's heartbeat every interval while it trains (RDB storages only).

    Optuna does this inside study.optimize(); ask/tell leaves it to us. The first beat is
    written before training starts: Optuna never counts a trial without beats as stale.
    """

    def __init__(self, store: StudyStorage, trial_id: int):
        self.store, self.trial_id = store, trial_id
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if self.store.heartbeats:
            self.store.call(lambda: self.store.rdb.record_heartbeat(self.trial_id), "recording a heartbeat")
            self.thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")
            self.thread.start()
        return self

    def _beat(self) -> None:
        interval = self.store.rdb.heartbeat_interval
        while not self.stop.wait(interval):
            try:
                self.store.rdb.record_heartbeat(self.trial_id)
            except Exception:  # storage blip: the next beat retries; a long outage makes the trial stale
                self.store.reset_session()  # on a fresh session: this one may be stuck mid-transaction

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
