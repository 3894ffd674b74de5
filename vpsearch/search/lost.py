"""MLflow runs of trials lost for good, and the study's parent run at the end.

A trial whose worker died is failed and re-run (recovery.py); the re-run ends the dead
attempt's MLflow run and counts the dead worker out of the parent run
(Worker._end_lost_attempt -> StudyTracker.lost_trial). A trial whose retries are spent has
no re-run, so nobody would: its run stayed RUNNING, and the parent run with it, since the
dead worker never said it left. Whoever sees the study end does both here: each worker
that finds no trial left, and `study run` when its workers are done.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from vpsearch.search.records import TrialRecord
from vpsearch.search.recovery import tally
from vpsearch.tracking.base import StudyTracker

# recovery.fail_and_requeue / reap_stale end the fail_reason with "not re-run: retries spent"
SPENT = "retries spent"


def lost_for_good(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """FAIL trials that lost their worker and will not be re-run, with an MLflow run to end."""
    return [t for t in trials if t.state == TrialState.FAIL and SPENT in str(TrialRecord.of(t).fail_reason)
            and TrialRecord.of(t).mlflow_run_id]


def end_lost_runs(tracker: StudyTracker, trials: list[FrozenTrial]) -> list[int]:
    """End each such run FAILED with the trial's reason and count its dead worker out of the
    parent run (both journaled; a run that ended after all is left alone by the sender)."""
    lost = lost_for_good(trials)
    for t in lost:
        rec = TrialRecord.of(t)
        tracker.lost_trial(t.number, rec.mlflow_run_id, rec.worker, rec.fail_reason or "its worker died")
    return [t.number for t in lost]


def finish_study_tracking(study: optuna.Study, tracker: StudyTracker, n_trials: int) -> bool:
    """At the end of `study run`: end the runs lost for good, and the parent run when the study is
    over (every requested trial finished, none running or queued). Returns whether it ended."""
    trials = study.get_trials(deepcopy=False)
    end_lost_runs(tracker, trials)
    t = tally(trials)
    over = not t.running and not t.waiting and t.counted >= n_trials
    tracker.close(end_parent=True if over else False)
    return over
