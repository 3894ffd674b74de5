"""The tracking interface the search layer talks to; MLflow sits behind it.

The study driver creates one StudyTracker per process (the study creator and every
worker), asks it for a TrialTracker per trial, and hands that to the trainer as a
Reporter. Nothing outside vpsearch/tracking imports mlflow.

Lifecycle:
  tracker = make_tracker(uri, root, study_name)       # vpsearch.tracking.make_tracker
  parent = tracker.ensure_parent(study_yaml, sampler, storage_url, parent_run_id=None)
      (the creator passes None and stores the id in the Optuna study's user attrs;
       workers pass the stored id so every trial nests under one parent run)
  tracker.set_view(objective_key, searched_params)     # the creator: the runs table's columns
  t = tracker.trial(number, config, tags, params)     # a Reporter for fit(), run named by params
  fit(config, run_dir, reporter=Reporters(pruner, t))
  t.close("COMPLETE" | "PRUNED" | "FAIL", reason)     # always, in a finally
  tracker.study_progress(step, metrics, tags)         # best so far, counts: on the parent run
  tracker.lost_trial(number, run_id, worker, reason)  # a trial whose worker died, from its re-run
  tracker.log_study_artifacts([report files])          # reporting layer
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from vpsearch.config import Config
from vpsearch.training.reporter import Reporter

TrialState = Literal["COMPLETE", "PRUNED", "FAIL"]


class TrialTracker(Reporter):
    """A Reporter that also ends the trial's run with its final state."""

    run_id: str | None = None

    def await_run_id(self) -> str | None:
        """The run's id, waiting a bounded time for one whose creation a tracking outage delayed."""
        return self.run_id

    def close(self, state: TrialState, reason: str | None = None) -> None:
        """End the run: COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED (reason as a tag)."""


class StudyTracker:
    """No-op tracker (tracking off); MLflowStudyTracker implements the same methods."""

    uri: str | None = None

    def ensure_parent(self, study_config: dict[str, Any], sampler: str, storage_url: str,
                      parent_run_id: str | None = None) -> str | None:
        return None

    def set_view(self, objective: str, params: list[str]) -> None:
        """The runs table's saved view: the objective (a training/history.py key), the copy-last
        baseline, these searched params and the state."""

    def study_progress(self, step: int, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """The study so far, on its parent run: metrics at step (trials finished) and tags."""

    def trial(self, number: int, config: Config, tags: dict[str, str],
              params: dict[str, Any] | None = None, unused: frozenset[str] = frozenset()) -> TrialTracker:
        """A trial's run, named by its number and searched params (names.trial_run_name). unused: config
        keys of conditional parameters this trial does not use, not logged as if set."""
        return TrialTracker()

    def log_study_artifacts(self, paths: list[Path], artifact_path: str = "report") -> None:
        pass

    def lost_trial(self, number: int, run_id: str | None, worker: str | None, reason: str) -> None:
        """A trial whose worker died ('host:pid', killed or cut off) and that the search layer
        failed and re-queued: its process cannot end its run, so end it FAILED with the reason,
        and count that worker out of the study's parent run."""

    def close(self, end_parent: bool | None = None, timeout: float | None = None) -> None:
        """Wait for the pictures of this process's trials that are still being drawn (outputs.py).
        end_parent: see MLflowStudyTracker.close (no parent run here)."""
        from vpsearch.training.outputs import DRAWER  # here: this module stays light to import
        DRAWER.drain(timeout=300 if timeout is None else timeout)
