"""Where a worker's time goes: timers wrapped around the functions a real `vpsearch worker` calls.

Installed into worker processes by benchmarks/probe_site/sitecustomize.py when the environment
holds VPSEARCH_PHASE_OUT (a folder); nothing in vpsearch knows about it. Each worker process
writes VPSEARCH_PHASE_OUT/worker-<pid>.json at exit:

  {"process_start": unix s, "exit": unix s, "startup": {phase: s}, "shutdown": {phase: s},
   "trials": [{"number": n, "wall": s, "phases": {phase: s}}, ...]}

A trial's wall time runs from the end of the previous trial (or of the worker's set-up) to the
end of its run_trial, so it holds the storage calls that took it (reap_stale, next_trial). Phases
are exclusive (a wrapped call inside another is counted once, in the inner phase); what no
timer covers is "worker other" (trial) or "process start + imports" (start-up). The wrappers
cost a few microseconds a call.

Phases and what they count as (WORK = the trial's training and the evaluations its config asks
for; everything else is overhead):
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.util
import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

# phase -> (module, attribute path) wrapped; a class method is "Class.method"
TARGETS: dict[str, list[tuple[str, str]]] = {
    "train epochs": [("vpsearch.training.trainer", "train_epoch")],
    "evaluation": [("vpsearch.training.trainer", "evaluate")],
    "data open + cache check": [("vpsearch.training.trainer", "load_split")],
    "model build": [("vpsearch.training.trainer", "build_model")],
    "optimizer build": [("vpsearch.training.trainer", "make_optimizer")],
    "checkpoint writes": [("vpsearch.training.trainer", "save_checkpoint")],
    "GIF + strip + frame CSV": [("vpsearch.training.trainer", "write_best_outputs")],
    "end-of-run plots": [("vpsearch.training.trainer", "plot_run"),  # before: drawn on the training thread
                         ("vpsearch.training.outputs", "RunPictures.plots"),  # after: handed to a thread
                         ("vpsearch.training.outputs", "RunPictures.wait")],
    "metrics.csv": [("vpsearch.training.trainer", "write_metrics")],
    "fit set-up + rest": [("vpsearch.training.trainer", "fit")],
    "Optuna storage + sampler": [
        ("vpsearch.search.worker", "Worker.next_trial"), ("vpsearch.search.worker", "reap_stale"),
        ("vpsearch.search.worker", "Worker._record"), ("vpsearch.search.worker", "Worker._tell"),
        ("vpsearch.search.objective", "TrialReporter.report"),
        ("vpsearch.search.objective", "TrialReporter.resumed")],
    "MLflow journaling": [
        ("vpsearch.search.worker", "Worker._start_tracking"),
        ("vpsearch.tracking.mlflow_tracker", "MLflowTrialTracker.started"),
        ("vpsearch.tracking.mlflow_tracker", "MLflowTrialTracker.report"),
        ("vpsearch.tracking.mlflow_tracker", "MLflowTrialTracker.evaluated")],
    "MLflow close (uploads)": [("vpsearch.search.worker", "Worker._close")],
    "provenance": [("vpsearch.search.worker", "trial_provenance")],
    "trial config": [("vpsearch.search.worker", "trial_config"), ("vpsearch.search.worker", "config_from_dict")],
    "worker other": [("vpsearch.search.worker", "Worker.run_trial")],
    "worker set-up": [("vpsearch.search.worker", "Worker.__init__")],
    "tracker flush at exit": [("vpsearch.search.worker", "StudyTracker.close"),
                              ("vpsearch.tracking.mlflow_tracker", "MLflowStudyTracker.close")],
}
# work done by background threads (off the trial's path, but on the same CPUs): wall and CPU seconds
BACKGROUND: dict[str, list[tuple[str, str]]] = {
    "drawing thread: GIF + strip": [("vpsearch.training.outputs", "write_gif"),
                                    ("vpsearch.training.outputs", "write_strip")],
    "drawing thread: plots": [("vpsearch.training.outputs", "plot_run")],
    "MLflow sender thread": [("vpsearch.tracking.sender", "Delivery.execute")],
}
WORK = ("train epochs", "evaluation")
STARTUP = "process start + imports"
# the first torch optimizer of a process imports torch._dynamo (about 1.4 s, 800 modules; then
# 0.3 ms): a cost of the process, counted with its start-up instead of its first trial
FIRST_CALL_IMPORTS = {"optimizer build": "lazy import on first use (torch._dynamo by torch.optim)"}
__doc__ += "".join(f"  {name}: {'WORK' if name in WORK else 'overhead'}\n" for name in TARGETS)


class Recorder:
    """Exclusive seconds per phase, into the current bucket (start-up, a trial, shut-down)."""

    def __init__(self) -> None:
        self.start = process_start()
        self.stack: list[list[Any]] = []  # [phase, t0, seconds of wrapped children]
        self.bucket: dict[str, float] = defaultdict(float)
        self.bucket_t0 = self.start
        self.startup: dict[str, float] | None = None
        self.trials: list[dict[str, Any]] = []
        self.background: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # wall, CPU
        self.missing: list[str] = []  # targets this checkout does not have (an older or newer layout)
        self.calls: dict[str, int] = defaultdict(int)  # per trial: calls of each phase (epochs, checkpoints)
        self.first_calls: dict[str, float] = {}  # FIRST_CALL_IMPORTS phase -> seconds of its first call
        self._first_in_bucket = 0.0
        self.main = threading.main_thread()

    def wrap_background(self, phase: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is self.main:
                return fn(*args, **kwargs)
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                acc = self.background[phase]
                acc[0] += time.perf_counter() - t0
                acc[1] += time.thread_time() - c0
        timed.__wrapped_phase__ = phase  # type: ignore[attr-defined]
        return timed

    def wrap(self, phase: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not self.main:
                return fn(*args, **kwargs)
            frame = [phase, time.perf_counter(), 0.0]
            self.stack.append(frame)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stack.pop()
                elapsed = time.perf_counter() - frame[1]
                self.calls[phase] += 1
                if phase in FIRST_CALL_IMPORTS and phase not in self.first_calls:
                    self.first_calls[phase] = elapsed - frame[2]
                    self._first_in_bucket += elapsed - frame[2]
                else:
                    self.bucket[phase] += elapsed - frame[2]
                if self.stack:
                    self.stack[-1][2] += elapsed
                self._boundary(phase, fn, args)
        timed.__wrapped_phase__ = phase  # type: ignore[attr-defined]
        return timed

    def _boundary(self, phase: str, fn: Callable, args: tuple) -> None:
        now = time.time()
        if fn.__name__ == "__init__" and phase == "worker set-up":
            self.bucket[STARTUP] = (now - self.start) - sum(self.bucket.values())
            self.startup, self.bucket, self.bucket_t0 = dict(self.bucket), defaultdict(float), now
        elif fn.__name__ == "run_trial":
            self.trials.append({"number": args[1].number, "wall": now - self.bucket_t0 - self._first_in_bucket,
                                "phases": dict(self.bucket), "calls": dict(self.calls)})
            self.bucket, self.bucket_t0, self.calls, self._first_in_bucket = defaultdict(float), now, defaultdict(int), 0.0

    def dump(self, folder: Path) -> None:
        now = time.time()
        shutdown = dict(self.bucket)
        shutdown["wall"] = now - self.bucket_t0
        out = {"pid": os.getpid(), "process_start": self.start, "exit": now, "startup": self.startup,
               "trials": self.trials, "shutdown": shutdown, "background": dict(self.background),
               "missing": self.missing, "first_calls": self.first_calls}
        (folder / f"worker-{os.getpid()}.json").write_text(json.dumps(out, indent=1))


def process_start() -> float:
    """Unix time at which this process was created (/proc; 10 ms resolution), so the exec and
    the interpreter's own start count too."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines()
                     if ln.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return time.time()


def _patch(recorder: Recorder, module: Any) -> None:
    for table, wrap in ((TARGETS, recorder.wrap), (BACKGROUND, recorder.wrap_background)):
        for phase, targets in table.items():
            for mod_name, attr in targets:
                if mod_name != module.__name__:
                    continue
                owner_name, _, name = attr.rpartition(".")
                owner = getattr(module, owner_name, None) if owner_name else module
                fn = (owner.__dict__.get(name) if owner_name else getattr(module, name, None)) if owner else None
                if fn is None:
                    recorder.missing.append(f"{mod_name}.{attr}")
                elif getattr(fn, "__wrapped_phase__", None) is None:
                    setattr(owner, name, wrap(phase, fn))


class _Finder(importlib.abc.MetaPathFinder):
    """Patches a target module right after it is executed (its first import)."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.modules = {m for table in (TARGETS, BACKGROUND) for targets in table.values() for m, _ in targets}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.modules:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        exec_module, recorder = spec.loader.exec_module, self.recorder

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            _patch(recorder, module)
        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


def install(folder: str) -> None:
    """Called by sitecustomize in every process; only `vpsearch worker` processes are timed."""
    argv = getattr(sys, "orig_argv", sys.argv)  # sys.argv is not set up yet at site import
    if "worker" not in argv or not any(a.endswith("vpsearch.cli") or a.endswith("vpsearch") for a in argv):
        return
    recorder = Recorder()
    sys.meta_path.insert(0, _Finder(recorder))
    out = Path(folder)

    def dump() -> None:
        if recorder.startup is not None:  # a worker that got as far as its set-up
            recorder.dump(out)
    atexit.register(dump)


# --- reading the files back ------------------------------------------------------------------
def read(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("worker-*.json"))]


def summarize(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over every worker: seconds per phase, per trial and amortised start-up/shut-down."""
    trial_phases: dict[str, float] = defaultdict(float)
    trial_wall = 0.0
    n = 0
    for w in workers:
        for t in w["trials"]:
            n += 1
            trial_wall += t["wall"]
            for k, v in t["phases"].items():
                trial_phases[k] += v
    trial_phases["worker other"] += trial_wall - sum(trial_phases.values())
    edges: dict[str, float] = defaultdict(float)
    for w in workers:
        for k, v in (w["startup"] or {}).items():
            edges[k] += v
        shut = dict(w["shutdown"])
        wall = shut.pop("wall")
        for k, v in shut.items():
            edges[k] += v
        edges["shut-down other"] += wall - sum(shut.values())
        for phase, seconds in w.get("first_calls", {}).items():
            edges[FIRST_CALL_IMPORTS[phase]] += seconds
    background: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for w in workers:
        for k, (wall, cpu) in w.get("background", {}).items():
            background[k][0] += wall
            background[k][1] += cpu
    process_wall = sum(w["exit"] - w["process_start"] for w in workers)
    work = sum(trial_phases.get(k, 0.0) for k in WORK)
    calls: dict[str, int] = defaultdict(int)
    for w in workers:
        for t in w["trials"]:
            for k, v in t.get("calls", {}).items():
                calls[k] += v
    return {"trials": n, "trial_wall": trial_wall, "calls": dict(calls), "trial_phases": dict(trial_phases), "edges": dict(edges),
            "process_wall": process_wall, "work": work, "background": dict(background),
            "missing": sorted({m for w in workers for m in w.get("missing", [])}),
            "in_trial_overhead": 1 - work / trial_wall if trial_wall else float("nan"),
            "overhead_with_startup": 1 - work / process_wall if process_wall else float("nan")}


def table(before: dict[str, Any], after: dict[str, Any] | None = None) -> str:
    """Markdown: seconds per trial and share of the trial's wall time, per phase."""
    cols = [("before", before), ("after", after)] if after else [("measured", before)]
    head = "| phase | kind |" + "".join(f" {c} s/trial | {c} share |" for c, _ in cols)
    rows = [head, "|" + " --- |" * (2 + 2 * len(cols))]
    phases = [p for p in TARGETS if p != "worker set-up" and p != "tracker flush at exit"]
    for p in phases:
        cells = "".join(f" {s['trial_phases'].get(p, 0) / s['trials']:.3f} | "
                        f"{100 * s['trial_phases'].get(p, 0) / s['trial_wall']:.2f}% |" for _, s in cols)
        rows.append(f"| {p} | {'work' if p in WORK else 'overhead'} |{cells}")
    rows.append("| **in-trial overhead** | |" + "".join(
        f" {(s['trial_wall'] - s['work']) / s['trials']:.3f} | **{100 * s['in_trial_overhead']:.2f}%** |"
        for _, s in cols))
    for p in sorted({k for _, s in cols for k in s["edges"]}):
        rows.append(f"| {p} (per worker, amortised) | overhead |" + "".join(
            f" {s['edges'].get(p, 0) / s['trials']:.3f} | {100 * s['edges'].get(p, 0) / s['process_wall']:.2f}% |"
            for _, s in cols))
    rows.append("| **overhead incl. start-up/shut-down** | |" + "".join(
        f" {(s['process_wall'] - s['work']) / s['trials']:.3f} | **{100 * s['overhead_with_startup']:.2f}%** |"
        for _, s in cols))
    for p in BACKGROUND:  # CPU seconds of background threads, against the trials' wall time
        rows.append(f"| {p} (CPU, off the trial's path) | background |" + "".join(
            f" {s['background'].get(p, [0, 0])[1] / s['trials']:.3f} | "
            f"{100 * s['background'].get(p, [0, 0])[1] / s['trial_wall']:.2f}% |" for _, s in cols))
    return "\n".join(rows)
