"""Trials whose worker died: fail them with the reason, queue them again, count the budget.

Ways a RUNNING trial loses its worker, one code path (fail_and_requeue) for all:
- a local child of `study run` exits without finishing (SIGKILL, OOM): the launcher sees it
  and calls ``reap_worker`` at once (journal and PostgreSQL alike);
- a worker on another machine vanishes (PostgreSQL): its heartbeat goes stale and any
  live worker's ``reap_stale`` fails it (Optuna's fail_stale_trials + RetryStaleTrial);
- a worker on this machine died while nobody watched: ``reap_dead_local`` at the next
  `study run` finds its pid gone;
- a worker died between creating its trial and its first write: ``reap_orphans`` (a
  RUNNING trial with no WORKER attr, older than the grace period);
- the storage filled between failing a trial and queueing its copy: ``requeue_missing`` at
  the next `study run` queues the copy.
The failed trial keeps its reason (TrialRecord.fail_reason, outcome "lost"); its re-run is a
WAITING copy with the same params, seed and repeat (retry_of names the original) that the
next worker pops first.
"""

from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass, field
from datetime import datetime

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from vpsearch.search.records import (TrialRecord, fail_running, get_trial, stale_trial_ids, trial_id,
                                      write_trial)

HOST = socket.gethostname()


def worker_id(pid: int | None = None) -> str:
    return f"{HOST}:{pid or os.getpid()}"


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's stale-trial retry (same system attrs: failed_trial, retry_history), plus retry_of
    and a cleared outcome on the copy's record so reports can follow a trial to its re-run."""

    def __init__(self, max_retry: int | None = None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)

    @property
    def max_retry(self) -> int | None:
        return self._max_retry

    def will_retry(self, trial: FrozenTrial) -> bool:
        return self._max_retry is None or len(trial.system_attrs.get("retry_history", [])) < self._max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not self.will_retry(trial):
            return
        system = {**trial.system_attrs, "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
                  "retry_history": list(trial.system_attrs.get("retry_history", [])) + [trial.number]}
        user = {**trial.user_attrs, **TrialRecord.encode(retry_of=trial.number, fail_reason=None, outcome=None,
                                                         results=None, mlflow_run_id=None)}
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=trial.params,
                                                  distributions=trial.distributions, user_attrs=user,
                                                  system_attrs=system))


def fail_and_requeue(study: optuna.Study, tid: int, reason: str, retry: RetryStaleTrial) -> bool:
    """RUNNING -> FAIL with the reason, then a WAITING copy (unless retries are spent).
    Returns False when another process finished or reaped the trial first."""
    trial = get_trial(study, tid)
    if trial.state != TrialState.RUNNING:
        return False
    tail = "re-queued" if retry.will_retry(trial) else f"not re-run: retries spent ({retry.max_retry})"
    try:  # only a running trial takes attrs
        write_trial(study, tid, fail_reason=f"{reason}; {tail}", outcome="lost")
    except UpdateFinishedTrialError:
        return False
    if not fail_running(study, tid):
        return False
    retry(study, get_trial(study, tid))
    return True


def reap_worker(study: optuna.Study, worker: str, reason: str, retry: RetryStaleTrial) -> list[int]:
    """Fail and re-queue the RUNNING trials of one dead worker ('host:pid'); returns their numbers."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if TrialRecord.of(t).worker == worker and fail_and_requeue(study, trial_id(t), reason, retry):
            out.append(t.number)
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_dead_local(study: optuna.Study, retry: RetryStaleTrial) -> list[int]:
    """RUNNING trials of this host whose worker process no longer exists (a crash nobody watched)."""
    out = reap_orphans(study, 60.0, retry)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(TrialRecord.of(t).worker or "").rpartition(":")
        if host == HOST and pid.isdigit() and not pid_alive(int(pid)):
            if fail_and_requeue(study, trial_id(t), f"worker {host}:{pid} died mid-trial", retry):
                out.append(t.number)
    return out + requeue_missing(study, retry)


def requeue_missing(study: optuna.Study, retry: RetryStaleTrial) -> list[int]:
    """Trials failed as lost and due a re-run whose WAITING copy was never written (the storage
    filled or went away between the two writes of fail_and_requeue): queue their copy now."""
    trials = study.get_trials(deepcopy=False)
    copied = {TrialRecord.of(t).retry_of for t in trials}
    out = []
    for t in trials:
        rec = TrialRecord.of(t)
        if (t.state == TrialState.FAIL and rec.outcome == "lost" and t.number not in copied
                and str(rec.fail_reason or "").endswith("re-queued") and retry.will_retry(t)):
            retry(study, t)
            out.append(t.number)
    return out


def reap_orphans(study: optuna.Study, older_than: float, retry: RetryStaleTrial) -> list[int]:
    """RUNNING trials that never got a WORKER attr: their worker died between creating the trial
    and its first write (it writes WORKER right after; with heartbeats, right after the first
    beat, so Optuna, which ignores trials without beats, would never call them stale)."""
    out, now = [], datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        age = (now - t.datetime_start).total_seconds() if t.datetime_start else 0.0
        if TrialRecord.of(t).worker is None and age > older_than:
            if fail_and_requeue(study, trial_id(t), "its worker died before its first heartbeat/write", retry):
                out.append(t.number)
    return out


def reap_stale(study: optuna.Study, rdb: optuna.storages.RDBStorage | None,
               retry: RetryStaleTrial | None = None) -> list[int]:
    """Heartbeat storages: trials whose worker stopped beating get a reason, then Optuna's
    fail_stale_trials fails them and calls the storage's RetryStaleTrial."""
    if rdb is None or rdb.heartbeat_interval is None:
        return []
    orphans = reap_orphans(study, rdb.grace_period or 2 * rdb.heartbeat_interval, retry) if retry else []
    stale = stale_trial_ids(study, rdb)  # the public call gives no hook to record why
    if not stale:
        return orphans
    retry = rdb.get_heartbeat_stale_trial_callback()
    for tid in stale:
        t = get_trial(study, tid)
        tail = "re-queued" if retry is None or retry.will_retry(t) else "not re-run: retries spent"
        try:
            write_trial(study, tid, outcome="lost", fail_reason=f"no heartbeat for over {rdb.grace_period}s from "
                        f"worker {TrialRecord.of(t).worker or '?'} (killed or cut off); {tail}")
        except UpdateFinishedTrialError:
            continue
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return orphans + [get_trial(study, t).number for t in stale]


@dataclass
class Tally:
    """Where a study stands against its budget; re-run trials replace the ones they retry."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    retried: set[int] = field(default_factory=set)

    @property
    def counted(self) -> int:
        """Trials that use up budget: every trial except those replaced by a re-run."""
        return self.complete + self.pruned + self.failed + self.running + self.waiting

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


def tally(trials: list[FrozenTrial]) -> Tally:
    t = Tally()
    for tr in trials:
        t.retried.update(tr.system_attrs.get("retry_history") or [])
    for tr in trials:
        if (tr.number in t.retried and tr.state == TrialState.FAIL) or TrialRecord.of(tr).outcome == "skipped":
            continue  # replaced by its re-run, or never trained (nothing new was left to propose)
        if tr.state == TrialState.COMPLETE:
            t.complete += 1
        elif tr.state == TrialState.PRUNED:
            t.pruned += 1
        elif tr.state == TrialState.FAIL:
            t.failed += 1
        elif tr.state == TrialState.RUNNING:
            t.running += 1
        elif tr.state == TrialState.WAITING:
            t.waiting += 1
    return t
