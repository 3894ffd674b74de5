"""`vpsearch study run`: create or resume a study, spawn local workers, watch them, show progress.

The launcher trains nothing itself. It validates the study, creates it in the storage
(or checks that a stored study of that name is the same search and resumes it), makes
built-in data once, and starts one `vpsearch worker` process per device / CPU slot, each
with its share of the CPU threads. While they run it redraws one progress line, and when
a child dies without finishing (SIGKILL, OOM) it fails that child's trial with the
reason, re-queues it and starts a replacement. Ctrl-C is forwarded once: workers
re-queue their running trials and exit, and the next `study run` picks them up.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from vpsearch import settings
from vpsearch.search.checkpoints import check_disk
from vpsearch.search.lost import finish_study_tracking
from vpsearch.search.after_trial import raced_seeds_skipped
from vpsearch.search.records import StudyRecord, write_study
from vpsearch.search.plan import StudyPlan, load_study
from vpsearch.search.recovery import RetryStaleTrial, reap_dead_local, reap_worker, tally, worker_id
from vpsearch.search.spec import StudyError, StudySpec
from vpsearch.search.status import parent_progress, progress_line, summary
from vpsearch.search.storage import StudyStorage, open_storage, study_names
from vpsearch.search.timing import StudyEstimate, estimate_study
from vpsearch.search.worker import make_study_tracker
from vpsearch.machine import threads_per_worker
from vpsearch.training.device import split_devices


@dataclass
class RunOptions:
    study_file: str
    workers: int | None = None
    devices: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    root: str | None = None
    threads: int | None = None
    storage_wait: float = 60.0
    trials_per_device: int | None = None  # K workers on each device, instead of `workers`


@dataclass
class Child:
    proc: subprocess.Popen
    device: str
    slot: int
    log: Path

    @property
    def worker(self) -> str:
        return worker_id(self.proc.pid)


def prepare_study(plan: StudyPlan, store: StudyStorage, tracking: str, root: str | None) -> optuna.Study:
    """Create the study, or check that the stored one is the same search and take budget changes.
    A new study is registered only once the tracking store took its parent run: a start refused
    there leaves nothing behind that would refuse the corrected rerun."""
    study, record = None, StudyRecord()
    if plan.name in study_names(store):
        study = store.call(lambda: optuna.load_study(study_name=plan.name, storage=store.storage), "loading the study")
        record = StudyRecord.of(study)
        if record.study_config is not None:
            stored = StudyPlan.from_record(record, f"study {plan.name} in {store.shown}")
            diffs = stored.differences(plan)
            if diffs:
                raise StudyError(f"{plan.source}: study {plan.name!r} already exists in {store.shown} with a "
                                 f"different {diffs[0]}; resume it with the same YAML or give this search a new name")
    tracker = make_study_tracker(tracking, root, plan.name)
    parent = tracker.ensure_parent(plan.record()["study_config"], plan.spec.sampler.name, store.shown,
                                   parent_run_id=record.mlflow_parent_run_id)
    tracker.set_view(plan.spec.objective.metric, list(plan.space))  # the runs table `vpsearch ui` opens
    tracker.close()
    if study is None:
        study = store.call(lambda: optuna.create_study(study_name=plan.name, storage=store.storage,
                                                       load_if_exists=True, directions=plan.spec.directions),
                           "creating the study")
    names = [plan.spec.objective.metric] + ([plan.spec.objective.secondary.metric] if plan.spec.objective.secondary else [])
    if study.metric_names != names:  # outside clients (optuna-dashboard) label the objective by these
        with warnings.catch_warnings():  # experimental in Optuna since 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            store.call(lambda: study.set_metric_names(names), "naming the study's metrics")
    # budget / worker changes of a re-run are kept
    store.call(lambda: write_study(study, **plan.record(), mlflow_parent_run_id=parent or record.mlflow_parent_run_id,
                                   mlflow_tracking_uri=settings.recorded_tracking_uri(tracking, root)),
               "writing the study record")
    return study


def worker_layout(spec: StudySpec, workers: int | None = None, devices: str | None = None,
                  trials_per_device: int | None = None, threads: int | None = None) -> tuple[list[str], int]:
    """The device of each local worker and the CPU threads each gets (flags beat the study YAML)."""
    devices = devices or spec.devices
    if devices == "auto":
        import torch
        devices = "cuda" if torch.cuda.is_available() else "cpu"
    layout = split_devices(devices, workers or spec.workers, trials_per_device)
    cpu_workers = sum(d == "cpu" for d in layout) or len(layout)
    return layout, threads or spec.threads_per_worker or threads_per_worker(cpu_workers)


def _describe_exit(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


class Launcher:
    def __init__(self, opts: RunOptions):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.opts = opts
        self.plan = load_study(opts.study_file)
        spec = self.plan.spec
        if opts.workers and opts.trials_per_device:
            raise StudyError("--workers and --trials-per-device both set how many workers run; give one")
        self.devices, self.threads = worker_layout(spec, opts.workers, opts.devices, opts.trials_per_device,
                                                   opts.threads)
        self.root = str(settings.runs_root(opts.root))
        settings.make_dir(self.root, "the runs root (trial folders, logs, tracking spool)",  # a valid study only
                          "pass --root (or set VPSEARCH_ROOT to) a writable folder")
        self.url = settings.storage_url(opts.storage, self.root)
        self.tracking = settings.tracking_uri(opts.tracking_uri, self.root)
        self.store = open_storage(self.url, workers=len(self.devices), failure=spec.failure, wait=opts.storage_wait)
        self.retry = RetryStaleTrial(spec.failure.max_retries)
        self.children: list[Child] = []
        self.slot = 0
        self.restarts = 0
        self.interrupts = 0
        self.deadline = time.time() + spec.budget.timeout if spec.budget.timeout else None
        self.estimate: StudyEstimate | None = None  # measured in run(), before the first trial

    def trials(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        return self.store.call(lambda: study.get_trials(deepcopy=False), "reading trials")

    def remaining(self, study: optuna.Study) -> int:
        trials = self.trials(study)
        t = tally(trials)
        record = self.store.call(lambda: StudyRecord.of(study), "reading the study")
        if record.exhausted or record.stopped:  # nothing new will be proposed: what is queued or running
            return t.waiting + t.running
        # racing never runs a raced-out configuration's other seeds, and a raced study queues a next
        # seed only when the last one ends: trials still running may queue more
        skipped = raced_seeds_skipped(trials, record, self.plan.spec.repeats)
        return t.waiting + max(0, self.plan.n_trials - t.counted - skipped)

    def spawn(self, device: str) -> Child:
        logs = settings.study_dir(self.plan.name, self.root) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"worker-{self.slot}.log"
        cmd = [sys.executable, "-m", "vpsearch.cli", "worker", "--study", self.plan.name, "--device", device,
               "--threads", str(self.threads), "--root", self.root, "--slot", str(self.slot),
               "--parent-pid", str(os.getpid()), "--storage-wait", str(self.opts.storage_wait)]
        if self.deadline:
            cmd += ["--deadline", str(self.deadline)]
        # URLs travel in the environment, not argv, so passwords do not show in `ps`; the thread
        # variables must be set before the child imports torch to size its thread pools
        env = {**os.environ, "VPSEARCH_STORAGE": self.url, "MLFLOW_TRACKING_URI": self.tracking,
               "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        with open(log, "a") as f:
            # own session: a terminal Ctrl-C reaches the launcher only, which forwards it exactly once
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        child = Child(proc, device, self.slot, log)
        self.slot += 1
        self.children.append(child)
        return child

    def on_signal(self, signum: int, frame: Any) -> None:
        self.interrupts += 1
        for c in self.children:
            if c.proc.poll() is None:
                # first: workers re-queue their trial and exit; second: stop now (reaped below)
                c.proc.send_signal(signal.SIGINT if self.interrupts == 1 else signal.SIGKILL)

    def say(self, msg: str) -> None:
        print(("\r\033[K" if sys.stdout.isatty() else "") + msg, flush=True)

    def watch(self, study: optuna.Study) -> None:
        """Until every child has exited: progress, and a replacement for each child that died."""
        shown, tty, last = "", sys.stdout.isatty(), 0.0
        while self.children:
            time.sleep(0.3)
            for c in list(self.children):
                rc = c.proc.poll()
                if rc is None:
                    continue
                self.children.remove(c)
                # a clean or interrupted worker has re-queued its own trial; this catches the rest
                # (killed mid-trial, or interrupted between creating a trial and starting it)
                how = "stopped by Ctrl-C" if self.interrupts else _describe_exit(rc)
                lost = self.store.call(lambda: reap_worker(study, c.worker, f"worker {c.worker} ({c.device}) {how}",
                                                           self.retry), "re-queueing a dead worker's trial")
                if rc == 0 or (self.interrupts and rc in (130, -signal.SIGINT, -signal.SIGKILL)):
                    continue
                tail = _last_line(c.log)
                self.say(f"worker {c.slot} (pid {c.proc.pid}, {c.device}) {_describe_exit(rc)}"
                         + (f"; trial {', '.join(map(str, lost))} re-queued" if lost else "")
                         + (f"; last log line: {tail}" if tail else "") + f" [{c.log}]")
                if self.interrupts == 0 and self.remaining(study) and self.restarts < 3 * len(self.devices):
                    self.restarts += 1
                    self.spawn(c.device)
            now = time.monotonic()
            if now - last >= 1.0:
                last = now
                line = progress_line(self.plan, self.trials(study), len(self.children),
                                     self.estimate.per_trial if self.estimate else None)
                if tty:
                    print("\r\033[K" + line, end="", flush=True)
                elif line != shown:
                    print(line, flush=True)
                shown = line

    def run(self) -> int:
        t0 = time.time()
        disk = check_disk(self.plan, self.root, len(self.devices))  # refuses before anything is created
        with self.store.lock(self.plan.name):  # a second `study run` started at once reuses our parent run
            study = prepare_study(self.plan, self.store, self.tracking, self.root)
        from vpsearch.data.builtin import resolve_root
        resolve_root(self.plan.base.data.root)  # built-in data generated once here, not by every worker
        lost = self.store.call(lambda: reap_dead_local(study, self.retry), "checking for dead workers")
        if lost:
            print(f"re-queued trial(s) {', '.join(map(str, lost))} left running by a worker that is gone")
        print(f"study {self.plan.name}: {self.plan.n_trials} trials, sampler {self.plan.spec.sampler.name}, "
              f"pruner {self.plan.spec.pruner.name}, storage {self.store.shown}; "
              f"{len(self.devices)} worker(s) on {','.join(sorted(set(self.devices)))} x {self.threads} thread(s); "
              f"logs in {settings.study_dir(self.plan.name, self.root) / 'logs'}", flush=True)
        print(disk, flush=True)
        self.estimate = estimate_study(self.plan, self.devices[0], self.threads, self.trials(study))
        print(self.estimate.line(self.remaining(study), len(self.devices)), flush=True)
        old = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        idle_rounds = 0
        try:
            while not self.interrupts and self.remaining(study) and (not self.deadline or time.time() < self.deadline):
                todo = self.remaining(study)
                for device in self.devices[:max(1, min(len(self.devices), todo))]:
                    self.spawn(device)
                self.watch(study)
                if self.restarts >= 3 * len(self.devices):
                    break
                # workers that all exit cleanly while work is left twice in a row would loop forever
                idle_rounds = idle_rounds + 1 if self.remaining(study) >= todo else 0
                if idle_rounds >= 2:
                    raise StudyError(f"workers of study {self.plan.name} exit without taking the "
                                     f"{self.remaining(study)} remaining trial(s); see the logs in "
                                     f"{settings.study_dir(self.plan.name, self.root) / 'logs'}")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if not self.interrupts:
            self.finish_tracking(study)
        print(("\r\033[K" if sys.stdout.isatty() else ""), end="")
        trials = self.trials(study)
        print(summary(self.plan, trials, time.time() - t0, self.where()))
        stopped = StudyRecord.of(study).stopped
        if stopped:  # the stop rule ended the study before its budget: say why, on the last screen
            print(f"stopped early: {stopped}")
        if self.interrupts:
            print("interrupted: running trials were re-queued; resume with: vpsearch study run "
                  f"{shlex.quote(str(self.opts.study_file))}{self.where()}")
            return 130
        if self.restarts >= 3 * len(self.devices) and self.remaining(study):
            raise StudyError(f"workers of study {self.plan.name} keep dying ({self.restarts} restarts); "
                             f"see the logs in {settings.study_dir(self.plan.name, self.root) / 'logs'}")
        if self.remaining(study):
            print(f"timeout reached; continue with: vpsearch study run {shlex.quote(str(self.opts.study_file))}"
                  f"{self.where()}")
        t = tally(trials)
        if t.complete == 0:  # scripts and CI must see a study that produced nothing as a failure
            print(f"vpsearch: error: no trial of study {self.plan.name} completed ({t.failed} failed, {t.pruned} "
                  f"pruned); the reasons: vpsearch study status {self.plan.name}{self.where()}", file=sys.stderr)
            return 1
        return 0


    def where(self) -> str:
        """The options the next commands need to find this study (as the user gave them)."""
        out = f" --root {shlex.quote(str(self.opts.root))}" if self.opts.root else ""
        return out + (f" --storage {shlex.quote(settings.redact(self.opts.storage))}" if self.opts.storage else "")

    def finish_tracking(self, study: optuna.Study) -> None:
        """End the MLflow runs of trials lost for good, and the parent run if the study is over."""
        try:
            tracker = make_study_tracker(self.tracking, self.root, self.plan.name)
            record = StudyRecord.of(study)
            tracker.ensure_parent(record.study_config or {}, self.plan.spec.sampler.name, self.store.shown,
                                  parent_run_id=record.mlflow_parent_run_id)
            tracker.study_progress(*parent_progress(self.plan, self.trials(study)))
            finish_study_tracking(study, tracker, self.plan.n_trials)
        except Exception as e:  # tracking trouble must not turn a finished study into an error
            self.say(f"warning: could not end the study's MLflow runs: {e}")


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def run_study(opts: RunOptions) -> int:
    return Launcher(opts).run()


def create_study(opts: RunOptions) -> int:
    """`vpsearch study create`: the study (and its MLflow parent run) in the storage, no workers;
    workers on any machine then join with `vpsearch worker --study NAME`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = load_study(opts.study_file)
    root = str(settings.runs_root(opts.root))
    store = open_storage(settings.storage_url(opts.storage, root), failure=plan.spec.failure,
                         wait=opts.storage_wait)
    existed = plan.name in study_names(store)
    disk = check_disk(plan, root, plan.spec.workers)
    with store.lock(plan.name):
        study = prepare_study(plan, store, settings.tracking_uri(opts.tracking_uri, root), root)
    t = tally(study.get_trials(deepcopy=False))
    print(f"study {plan.name} {'found' if existed else 'created'} in {store.shown}: {plan.n_trials} trials "
          f"({t.finished} finished), sampler {plan.spec.sampler.name}, pruner {plan.spec.pruner.name}; "
          f"tracking {StudyRecord.of(study).mlflow_tracking_uri or 'off'}")
    print(disk)
    print(f"join it from any machine: vpsearch worker --study {plan.name} --storage URL (or VPSEARCH_STORAGE)")
    return 0
