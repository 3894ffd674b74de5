"""How the outside world hears from the trainer (and may ask it to stop).

The trainer imports neither Optuna nor MLflow: the search layer hands it a Reporter
(pruning decisions), the tracking layer another (logging), and Reporters.combine
fans calls out to several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Reporter:
    """Base reporter: every hook is optional (no-op)."""

    def started(self, run_dir: Path, config: dict[str, Any]) -> None:
        """The run directory exists and holds config.yaml."""

    def resumed(self, start_epoch: int, history: list[dict[str, float]]) -> None:
        """Training continues a run from its last checkpoint at start_epoch; history holds the
        rows of the epochs before (as report() received them), for reporters that start afresh."""

    def report(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Per-epoch metrics (keys of training/history.py EPOCH_METRICS). Return True to stop training now."""
        return False

    def evaluated(self, epoch: int, frame_metrics: dict[str, list[float]]) -> None:
        """Per-frame validation curves of an evaluation: {'psnr': [...], 'ssim': [...],
        'baseline_psnr': [...]} (the copy-last baseline on the same sequences)."""

    def finished(self, result: Any) -> None:
        """Training ended (completed or stopped early); result is a FitResult."""


class Reporters(Reporter):
    def __init__(self, *reporters: Reporter | None):
        self.items = [r for r in reporters if r is not None]

    def started(self, run_dir, config):
        for r in self.items:
            r.started(run_dir, config)

    def resumed(self, start_epoch, history):
        for r in self.items:
            r.resumed(start_epoch, history)

    def report(self, epoch, metrics):
        stop = False
        for r in self.items:  # every reporter hears every epoch, even after one asks to stop
            stop = bool(r.report(epoch, metrics)) or stop
        return stop

    def evaluated(self, epoch, frame_metrics):
        for r in self.items:
            r.evaluated(epoch, frame_metrics)

    def finished(self, result):
        for r in self.items:
            r.finished(result)
