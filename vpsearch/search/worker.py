"""A worker: pulls trials of one study from the storage and trains them, until the budget is met.

Workers share nothing but the storage. Under the storage's study lock a worker counts the
budget, pops a queued trial (a configuration's other seed or a re-run) or asks the sampler
for a new configuration (samplers.ConfigSampler) and queues its other seeds; it then trains
outside the lock. The study's YAML, base config and tracking parent come from the study's
record (records.StudyRecord), so ``vpsearch worker --study NAME --storage URL`` is all
another machine needs.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

import optuna

from vpsearch import settings
from vpsearch.provenance import trial_provenance
from vpsearch.config import config_from_dict
from vpsearch.search.after_trial import advance_race, check_stop, queue_seed
from vpsearch.search.checkpoints import short_of_room, sweep, trial_bytes
from vpsearch.search.gpus import FREE, claim_gpu, gpu_uuids
from vpsearch.search.lost import end_lost_runs
from vpsearch.search.objective import Heartbeat, TrialReporter
from vpsearch.search.plan import StudyPlan
from vpsearch.search.pruners import make_pruner
from vpsearch.search.records import (StudyRecord, TrialRecord, get_trial, trial_by_number, trial_id, write_study,
                                      write_trial)
from vpsearch.search.recovery import HOST, RetryStaleTrial, fail_and_requeue, reap_stale, tally, worker_id
from vpsearch.search.samplers import ConfigSampler, SpaceExhausted
from vpsearch.search.space import suggest, trial_config
from vpsearch.search.spec import CheckpointPolicy, StudyError
from vpsearch.search.status import parent_progress
from vpsearch.search.storage import (StorageFull, StorageUnavailable, StudyStorage, disk_full, load_optuna_study,
                                     open_storage)
from vpsearch.tracking import make_tracker
from vpsearch.tracking.base import StudyTracker, TrialTracker
from vpsearch.training import NonFiniteLossError, Reporters, fit
from vpsearch.training.device import select_device, set_threads
from vpsearch.training.precision import resolve_precision
from vpsearch.training.run_dir import wrote


@dataclass
class WorkerOptions:
    study: str
    storage: str
    device: str = "auto"
    threads: int | None = None
    tracking_uri: str | None = None
    root: str | None = None
    slot: int | None = None  # launcher's index of this worker (its log file)
    deadline: float | None = None  # unix time after which no trial starts
    parent_pid: int | None = None  # launcher pid: stop taking trials if it is gone
    storage_wait: float = 60.0
    max_trials: int | None = None  # stop after this many trials (tests, benchmarks)
    trials_per_device: int = 1  # --device cuda:free: workers that may share one GPU


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} {worker_id()}] {msg}", flush=True)


def open_study_storage(url: str, name: str, wait: float) -> tuple[StudyStorage, StudyPlan]:
    """Read the plan from the study's attrs, then reopen RDB storages with its heartbeat settings."""
    store = open_storage(url, wait=wait)
    plan = StudyPlan.from_record(StudyRecord.of(load_optuna_study(store, name)), f"study {name} in {store.shown}")
    if store.kind == "rdb":
        store.close()
        store = open_storage(url, wait=wait, failure=plan.spec.failure)
    else:
        store.failure = plan.spec.failure
    return store, plan


def check_sharing(device: str, trials_per_device: int) -> None:
    """Several workers share a device only through --device cuda:free's claims."""
    if trials_per_device != 1 and device != FREE:
        raise StudyError(f"--trials-per-device needs --device {FREE} (with --device {device} the "
                         "device is fixed: start as many workers on it as you like)")


def make_study_tracker(uri: str | None, root: str | None, name: str, policy: CheckpointPolicy | None = None
                       ) -> StudyTracker:
    """The tracker, or none (with a warning) while the configured backend is not available.
    policy: the study's checkpoint retention, which MLflow's copies follow too."""
    keep = (policy.top_k if policy.keep in ("best", "both") else 0) if policy else 0
    try:
        return make_tracker(uri, settings.runs_root(root), name, keep_checkpoints=keep)
    except NotImplementedError as e:
        print(f"vpsearch: warning: tracking {settings.redact(str(uri))} unavailable ({e}); "
              "continuing without it", file=sys.stderr)
        return StudyTracker()


class Worker:
    def __init__(self, opts: WorkerOptions):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # we run the heartbeat thread ourselves (objective.Heartbeat), so ask/tell is fine
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.opts = opts
        check_sharing(opts.device, opts.trials_per_device)
        self.store, self.plan = open_study_storage(opts.storage, opts.study, opts.storage_wait)
        self.gpu_claim = None  # --device cuda:free: the connection that holds this worker's GPU
        if opts.device == FREE:
            index, self.gpu_claim = claim_gpu(self.store, gpu_uuids(), opts.trials_per_device)
            opts.device = f"cuda:{index}"
        # what the trials run with on this machine, decided once (the probe is cached per machine)
        self.threads = set_threads(opts.threads)
        self.precision = resolve_precision(self.plan.base, select_device(opts.device))
        spec = self.plan.spec
        self.sampler = ConfigSampler(self.plan)
        self.study = load_optuna_study(self.store, opts.study, self.sampler,
                                       make_pruner(spec.pruner, self.plan.base.train.epochs))
        self.retry = RetryStaleTrial(spec.failure.max_retries)
        self.base_flat = self.plan.base.flat()
        self.trial_bytes = trial_bytes(self.plan)
        self.id = worker_id()
        record = StudyRecord.of(self.study)
        uri = settings.study_tracking_uri(opts.tracking_uri, record.mlflow_tracking_uri, opts.root)
        self.tracker = make_study_tracker(uri, opts.root, opts.study, spec.checkpoints)
        self.tracker.ensure_parent(record.study_config or {}, spec.sampler.name, self.store.shown,
                                   parent_run_id=record.mlflow_parent_run_id)
        if opts.deadline is None and spec.budget.timeout:
            opts.deadline = time.time() + spec.budget.timeout

    # --- taking a trial
    def next_trial(self) -> tuple[optuna.trial.Trial, dict[str, Any], int] | None:
        with self.store.lock(self.plan.name):
            # a trial of ours still RUNNING here was created by an attempt that then lost the
            # storage (this worker trains one trial at a time): hand it back before taking another
            for old in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if TrialRecord.of(old).worker == self.id:
                    fail_and_requeue(self.study, trial_id(old), f"worker {self.id} lost the storage while "
                                     "starting it", self.retry)
            # before the worker field: a trial with a worker always has a beat
            beat = (lambda t: self.store.rdb.record_heartbeat(trial_id(t))) if self.store.heartbeats else None
            return take_trial(self.study, self.plan, self.id, beat)

    def should_stop(self) -> str | None:
        if self.opts.deadline is not None and time.time() >= self.opts.deadline:
            return "timeout reached"
        folders = [settings.runs_root(self.opts.root)] + ([self.store.journal.parent] if self.store.journal else [])
        short = short_of_room(folders, self.trial_bytes)
        if short:
            return short
        if self.opts.parent_pid is not None and os.getppid() != self.opts.parent_pid:
            return "launcher is gone"
        return None

    def run(self) -> int:
        """Train trials until none is left; returns how many this worker ran."""
        done = 0
        try:
            while self.opts.max_trials is None or done < self.opts.max_trials:
                why = self.should_stop()
                if why:
                    log(f"stopping: {why}")
                    break
                self.store.call(lambda: reap_stale(self.study, self.store.rdb, self.retry), "checking heartbeats")
                got = self.store.call(self.next_trial, "taking a trial")
                if got is None:
                    running = self.store.call(lambda: tally(self.study.get_trials(deepcopy=False)).running,
                                              "reading trials")
                    if running and self.plan.spec.race:
                        time.sleep(1.0)  # a running seed may still put its configuration's next one in the queue
                        continue
                    if self.store.heartbeats and running:
                        # a running trial elsewhere may still go stale and come back: stay to pick it up
                        time.sleep(min(5.0, self.store.rdb.heartbeat_interval))
                        continue
                    log("no trials left")
                    self._end_lost_runs()
                    break
                with Heartbeat(self.store, trial_id(got[0])):  # from now until told, even if tracking stalls
                    self.run_trial(*got)
                done += 1
        finally:
            self.tracker.close()
        return done

    # --- running one
    def run_trial(self, trial: optuna.trial.Trial, params: dict[str, Any], repeat: int) -> str:
        number, seed, spec = trial.number, self.plan.seed_for(repeat), self.plan.spec
        run_dir, resume_note = self._run_dir(trial)
        reporter = TrialReporter(trial, self.store, spec.objective, prune=spec.pruner.name != "none")
        tt, state, reason, outcome, t0 = TrialTracker(), "COMPLETE", None, None, time.perf_counter()
        recorded_run: str | None = None  # the MLflow run id the trial's record names
        try:  # from here on a Ctrl-C re-queues the trial (below), wherever it lands
            self._record(trial, seed=seed, repeat=repeat, run_dir=settings.relative_to_root(run_dir, self.opts.root),
                         worker=self.id, device=self.opts.device, threads=self.threads, fail_reason=None,
                         outcome=None, config=None, config_hash=None, mlflow_run_id=None, resume_note=resume_note,
                         resumed_from_epoch=None)
            # params that are valid one by one can still clash (tfr below its lower bound): FAIL, not crash
            cfg = trial_config(self.plan.base, self.plan.space, params, seed, f"{self.plan.name}-{number}")
            run = cfg.to_dict()
            amp = self.precision.amp if cfg.train.amp == self.plan.base.train.amp else cfg.train.amp
            run["train"].update(device=self.opts.device, num_threads=self.threads, amp=amp, progress=False)
            run_cfg = config_from_dict(run, f"trial {number}")
            chash = cfg.hash()  # of the machine-free config: seeds on two machines are one configuration
            tags = {"study": self.plan.name, "trial": str(number), "repeat": str(repeat), "seed": str(seed),
                    "config_hash": chash, "worker": self.id, "sampler": spec.sampler.name, "amp": amp}
            tt = self._start_tracking(number, run_cfg, tags, params)
            retry_of = TrialRecord.of(trial).retry_of
            if retry_of is not None:
                self._end_lost_attempt(retry_of)
            recorded_run = tt.run_id
            self._record(trial, config=cfg.to_dict(), config_hash=chash, mlflow_run_id=recorded_run,
                         provenance=trial_provenance(cfg.data.root, self.opts.device, self.threads, amp))
            log(f"trial {number} started (repeat {repeat}, seed {seed}): {params}"
                + (f"; {resume_note}" if resume_note else ""))
            # pictures are drawn while the next trial trains (training/outputs.py)
            fit(run_cfg, run_dir, reporter=Reporters(reporter, tt), resume=resume_note.startswith("resumes"),
                wait_pictures=False)
            if reporter.resumed_from is not None:
                log(f"trial {number} continued at epoch {reporter.resumed_from}")
            if reporter.pruned_epoch is not None:
                state, reason = "PRUNED", (f"pruned at epoch {reporter.pruned_epoch} by the {spec.pruner.name} "
                                           f"pruner ({spec.objective.metric} below the other trials)")
        except NonFiniteLossError as e:
            state, reason, outcome = "FAIL", str(e), "diverged"
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
            reason = f"interrupted (Ctrl-C or SIGTERM) after {len(reporter.rows)} epochs"
            self._record(trial, results=reporter.results(time.perf_counter() - t0))
            fail_and_requeue(self.study, trial_id(trial), reason, RetryStaleTrial(None))  # not the trial's fault
            self._close(tt, "FAIL", reason)
            log(f"trial {number} interrupted; re-queued")
            raise
        except StorageUnavailable:
            raise  # nothing can be recorded; the launcher / a heartbeat re-queues the trial
        except Exception as e:
            if disk_full(e):  # the machine's fault: the trial is re-queued and this worker stops
                self._stopped_by_full_disk(trial, tt, reporter, e, time.perf_counter() - t0)
            # a bug or bad data fails this trial, never the study
            state, outcome = "FAIL", "error"
            reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                wrote(run_dir, "error.txt")
                (run_dir / "error.txt").write_text(traceback.format_exc())
            except OSError as disk:  # a full or read-only disk: the trial still fails with its own reason
                reason += f" (its traceback could not be saved: {disk.strerror or disk})"
        seconds = time.perf_counter() - t0
        values = reporter.values(seconds)
        if state == "COMPLETE" and values is None:
            state, outcome = "FAIL", "error"
            reason = f"no finite {spec.objective.metric} was reported (see {run_dir}/metrics.csv)"
        # a run whose creation a tracking outage delayed has its id by now (or soon): name it
        late_run = {"mlflow_run_id": tt.await_run_id()} if recorded_run is None else {}
        self._record(trial, results=reporter.results(seconds), fail_reason=reason, outcome=outcome, **late_run)
        self._close(tt, state, reason)
        self._tell(trial, state, values)
        self._after_trial()
        self._sweep()
        self._study_progress()
        shown = f" {spec.objective.metric}={values[0]:.3f}" if values and state == "COMPLETE" else ""
        log(f"trial {number} {state}{shown} in {seconds:.1f}s" + (f": {reason}" if reason else ""))
        return state

    def _stopped_by_full_disk(self, trial: optuna.trial.Trial, tt: TrialTracker, reporter: "TrialReporter",
                              e: BaseException, seconds: float) -> NoReturn:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        reason = f"stopped by a full disk after {len(reporter.rows)} epochs: {first}"
        try:
            self._record(trial, results=reporter.results(seconds))
            fail_and_requeue(self.study, trial_id(trial), reason, RetryStaleTrial(None))
        except (OSError, StorageUnavailable):
            pass  # the journal shares the disk: the launcher, or the next `study run`, re-queues it
        self._close(tt, "FAIL", reason)
        log(f"trial {trial.number} {reason}; re-queued")
        raise StorageFull(f"{first}; free space and run the command again: the trial is re-queued and the study "
                          "resumes where it stopped") from None

    def _after_trial(self) -> None:
        """Racing's next seeds and the stop rule (after_trial.py), under the study lock."""
        if not (self.plan.spec.race or self.plan.spec.stop != "none"):
            return

        def decide() -> None:
            with self.store.lock(self.plan.name):
                for line in advance_race(self.study, self.plan):
                    log(line)
                why = check_stop(self.study, self.plan)
                if why:
                    log(f"stop rule: no new configuration from now on: {why}")
        self.store.call(decide, "racing and the stop rule")

    def _run_dir(self, trial: optuna.trial.Trial) -> tuple[Path, str]:
        """(run folder, note). A re-run continues the run of the attempt it re-runs when that
        attempt's last checkpoint is reachable from here (this host, or a shared file system):
        its folder, seed and schedules; otherwise it starts over in a folder of its own, and says why."""
        own = settings.study_dir(self.plan.name, self.opts.root) / "trials" / str(trial.number)
        retry_of = TrialRecord.of(trial).retry_of
        if retry_of is None:
            return own, ""
        old = TrialRecord.of(self.store.call(lambda: trial_by_number(self.study, retry_of), "reading trials"))
        folder = settings.under_root(old.run_dir, self.opts.root) if old.run_dir else None
        if folder is not None and (folder / "checkpoints" / "last.pt").is_file():
            return folder, f"resumes trial {retry_of}'s run in {folder} from its last checkpoint"
        where = folder / "checkpoints" / "last.pt" if folder else "(no run folder was recorded)"
        return own, f"started over: trial {retry_of}'s last checkpoint {where} is not reachable from {HOST}"

    def _sweep(self) -> None:
        """Checkpoint retention after a trial ends (checkpoints.py); never fails the trial."""
        try:
            deleted = self.store.call(lambda: sweep(self.study, self.plan.spec.checkpoints, self.opts.root),
                                      "reading trials")
            if deleted:
                log(f"checkpoints removed by the study's retention ({self.plan.spec.checkpoints.keep}, top "
                    f"{self.plan.spec.checkpoints.top_k}): {len(deleted)} file(s)")
        except OSError as e:
            log(f"warning: checkpoint retention could not delete a file: {e}")

    def _study_progress(self) -> None:
        """The parent run's best-so-far and counts, after each trial (status.parent_progress)."""
        try:
            self.tracker.study_progress(*parent_progress(self.plan, self.study.get_trials(deepcopy=False)))
        except Exception as e:  # tracking trouble must not fail the study
            log(f"warning: could not log the study's progress to its parent run: {e}")

    def _start_tracking(self, number: int, cfg: Any, tags: dict[str, str], params: dict[str, Any]) -> TrialTracker:
        try:
            unused = frozenset(k for k in self.plan.space if k not in params and k in self.base_flat)
            return self.tracker.trial(number, cfg, tags, params, unused)
        except Exception as e:  # a tracking outage must not stop the search: train untracked
            log(f"warning: tracking could not start a run for trial {number}: {e}")
            return TrialTracker()

    def _end_lost_runs(self) -> None:
        """Runs of trials lost for good (no re-run will end them): see search/lost.py."""
        try:
            end_lost_runs(self.tracker, self.study.get_trials(deepcopy=False))
        except Exception as e:  # tracking trouble must not fail a worker that is done
            log(f"warning: could not end the MLflow runs of lost trials: {e}")

    def _end_lost_attempt(self, number: int) -> None:
        """The attempt this trial re-runs lost its worker (killed, cut off), which could not end
        its MLflow run: end it here, whichever process reaped it (a heartbeat, the launcher)."""
        try:
            old = TrialRecord.of(self.store.call(lambda: self.study.get_trials(deepcopy=False)[number],
                                                 "reading trials"))
            self.tracker.lost_trial(number, old.mlflow_run_id,
                                    old.worker if old.worker != self.id else None,  # we are alive: still in the study
                                    old.fail_reason or "its worker died")
        except Exception as e:  # tracking trouble must not cost the re-run
            log(f"warning: could not end the MLflow run of lost trial {number}: {e}")

    def _record(self, trial: optuna.trial.Trial, **fields: Any) -> None:
        self.store.call(lambda: write_trial(self.study, trial, **fields), "writing the trial record")

    def _close(self, tt: Any, state: str, reason: str | None) -> None:
        try:
            tt.close(state, reason)
        except Exception as e:  # tracking trouble must not lose the trial's result in Optuna
            log(f"warning: tracking could not close the trial's run: {e}")

    def _tell(self, trial: optuna.trial.Trial, state: str, values: list[float] | None) -> None:
        st = optuna.trial.TrialState[state]
        vals = values if st == optuna.trial.TrialState.COMPLETE else None
        # skip_if_finished: a retried tell whose first attempt did commit, or a trial reaped as stale
        self.store.call(lambda: self.study.tell(trial, vals, state=st, skip_if_finished=True), "finishing a trial")


def take_trial(study: optuna.Study, plan: StudyPlan, worker: str,
               on_created: Callable[[optuna.trial.Trial], None] | None = None
               ) -> tuple[optuna.trial.Trial, dict[str, Any], int] | None:
    """The next trial to train, as (trial, params, repeat), or None when the budget is met or
    no new configuration is left. Callers hold the study lock (StudyStorage.lock).

    A queued trial (a configuration's other seed, a re-run) comes first; otherwise the
    study's ConfigSampler proposes a new configuration and its other seeds are queued with
    the same params and record (config_id, effective_key, skopt_point).
    """
    t = tally(study.get_trials(deepcopy=False))
    record = StudyRecord.of(study)
    if not t.waiting and (t.counted >= plan.n_trials or record.exhausted or record.stopped):
        return None
    trial = study.ask()  # pops the oldest queued trial first
    if on_created is not None:
        on_created(trial)
    write_trial(study, trial, worker=worker)  # reapable from now
    try:
        params = suggest(trial, plan.space, plan.base.flat())  # a new one: ConfigSampler proposes
    except SpaceExhausted as e:
        write_trial(study, trial, outcome="skipped", fail_reason=str(e))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        write_study(study, exhausted=str(e))
        log(f"no new configuration: {e}")
        return None
    rec = TrialRecord.of(get_trial(study, trial_id(trial)))  # with what the sampler recorded
    if rec.repeat is not None:
        return trial, params, int(rec.repeat)
    write_trial(study, trial, config_id=trial.number, repeat=0)
    for k in range(1, 1 if plan.spec.race else plan.spec.repeats):  # racing queues them one by one
        queue_seed(study, params, trial.number, rec, k)
    return trial, params, 0


def run_worker(opts: WorkerOptions) -> int:
    """`vpsearch worker`: SIGTERM behaves like Ctrl-C (the running trial is re-queued)."""
    def on_term(signum: int, frame: Any) -> None:
        # once: Slurm signals every process of the job and the batch shell forwards its own TERM,
        # so a second one may come while the first is re-queueing the trial
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    worker = Worker(opts)
    log(f"joined study {opts.study} on {worker.store.shown} (device {opts.device}, {worker.precision.shown}, "
        f"threads {worker.threads})")
    n = worker.run()
    log(f"ran {n} trials")
    return n

