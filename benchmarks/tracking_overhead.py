"""Tracking overhead: the same trial with MLflow tracking off and on.

    python benchmarks/tracking_overhead.py                       # a quickstart trial, embedded store
    python benchmarks/tracking_overhead.py --tracking-uri http://127.0.0.1:5000 --repeats 3
    python benchmarks/tracking_overhead.py --set train.epochs=2  # shorter

A trial is what the study driver times: tracker.trial() -> fit(reporter=trial tracker) ->
close(), so the "on" wall time includes run creation, every per-epoch hook, and waiting for
the end-of-trial uploads (artifacts, checkpoint). Off and on alternate (off, on, on, off, ...)
after an untimed warm-up, so drift of the machine hits both sides alike. By default the trial
is the quickstart study's (its base config, overrides and budget; CPU threads as its workers
get). The study's one-time set-up (experiment, parent run) is reported apart.

Three numbers, because wall time on shared cores is only as steady as the other jobs are:
  wall ratio    median on / median off, the target (< 1.02)
  direct ratio  (off + time the training thread spent in tracking calls + CPU the background
                sender used) / off: the added work itself, which other jobs hardly move (an upper
                bound: close() waits while the sender uploads, so the two overlap)
  CPU ratio     process CPU seconds on / off
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vpsearch.config import Config, apply_overrides, config_from_dict, load_config  # noqa: E402
from vpsearch.tracking import make_tracker  # noqa: E402
from vpsearch.tracking.sender import Delivery  # noqa: E402
from vpsearch.training import Reporter, fit  # noqa: E402

SENDER_CPU = [0.0]  # CPU seconds the sender thread spent delivering (thread_time, its own thread)


def _count_sender_cpu() -> None:
    execute = Delivery.execute

    def timed(self: Delivery, stream: Any, ops: list) -> None:
        c0 = time.thread_time()
        try:
            execute(self, stream, ops)
        finally:
            SENDER_CPU[0] += time.thread_time() - c0

    Delivery.execute = timed  # type: ignore[method-assign]


class Timed(Reporter):
    """Wraps a reporter and sums the seconds the training thread spends in its hooks."""

    def __init__(self, inner: Reporter):
        self.inner, self.seconds = inner, 0.0

    def _call(self, name: str, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return getattr(self.inner, name)(*args)
        finally:
            self.seconds += time.perf_counter() - t0

    def started(self, run_dir, config):
        self._call("started", run_dir, config)

    def report(self, epoch, metrics):
        return self._call("report", epoch, metrics)

    def evaluated(self, epoch, frame_metrics):
        self._call("evaluated", epoch, frame_metrics)

    def finished(self, result):
        self._call("finished", result)


def one_trial(cfg: Config, run_dir: Path, tracker: Any, number: int) -> dict[str, float]:
    t0, c0, s0 = time.perf_counter(), time.process_time(), SENDER_CPU[0]
    if tracker is None:
        fit(cfg, run_dir)
        return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "calls": 0.0, "sender": 0.0}
    trial = tracker.trial(number, cfg, {"sampler": "benchmark"})
    calls = time.perf_counter() - t0
    timed = Timed(trial)
    fit(cfg, run_dir, reporter=timed)
    t1 = time.perf_counter()
    trial.close("COMPLETE")  # returns once its artifacts and checkpoint are stored
    calls += timed.seconds + time.perf_counter() - t1
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "calls": calls,
            "sender": SENDER_CPU[0] - s0}


def trial_config(args: argparse.Namespace, extra: list[str]) -> Config:
    """The config a trial of the study trains (its search space left at the base values)."""
    if args.config:
        return load_config(args.config, [*args.overrides, *extra])
    from vpsearch.search.plan import load_study

    plan = load_study(args.study)
    threads = plan.spec.threads_per_worker or max(1, (os.cpu_count() or 1) // plan.spec.workers)
    base = plan.base.to_dict()
    return config_from_dict(apply_overrides(base, [f"train.num_threads={threads}", *args.overrides, *extra]),
                            args.study)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default=str(Path(__file__).resolve().parent.parent / "studies" / "quickstart.yaml"),
                   help="take the trial config from this study (base + overrides + budget); default quickstart")
    p.add_argument("--config", help="a training config instead of --study (shipped name or YAML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--tracking-uri", default=None, help="default: the embedded sqlite store under --root")
    p.add_argument("--root", default=None, help="runs root (default: a temp folder)")
    p.add_argument("--repeats", type=int, default=2, help="trials per side")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args()

    _count_sender_cpu()
    root = Path(args.root or tempfile.mkdtemp(prefix="vpsearch-overhead-"))
    cfg = trial_config(args, ["train.progress=false"])
    warm = trial_config(args, ["train.progress=false", "train.epochs=1", "train.steps_per_epoch=2"])
    source = args.config or args.study
    print(f"{source} {' '.join(args.overrides)}: {cfg.train.epochs} epochs x {cfg.train.steps_per_epoch} steps, "
          f"batch {cfg.train.batch_size}, {cfg.train.num_threads} thread(s); root {root}", flush=True)
    fit(warm, root / "warmup")  # data generation and cache, imports, allocator: paid by neither side

    t0 = time.perf_counter()
    tracker = make_tracker(args.tracking_uri, root, "tracking-overhead")
    tracker.ensure_parent({"benchmark": "tracking_overhead"}, "benchmark", "none")
    setup = time.perf_counter() - t0
    print(f"study set-up (once per study): {setup:.2f} s, tracking URI {tracker.uri}", flush=True)

    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    order = [side for i in range(args.repeats) for side in (("off", "on") if i % 2 == 0 else ("on", "off"))]
    for i, side in enumerate(order):
        r = one_trial(cfg, root / f"trial-{i}-{side}", tracker if side == "on" else None, i)
        runs[side].append(r)
        print(f"  {side:3s} trial {i}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU; tracking calls on the "
              f"training thread {r['calls']:.3f} s, sender CPU {r['sender']:.3f} s", flush=True)
    tracker.close()

    med = {k: {s: statistics.median(r[k] for r in runs[s]) for s in runs} for k in ("wall", "cpu")}
    added = statistics.median(r["calls"] + r["sender"] for r in runs["on"])
    out = {"config": source, "overrides": args.overrides, "tracking_uri": tracker.uri, "setup_s": round(setup, 3),
           "wall_off_s": med["wall"]["off"], "wall_on_s": med["wall"]["on"],
           "wall_ratio": med["wall"]["on"] / med["wall"]["off"],
           "added_s": added, "direct_ratio": (med["wall"]["off"] + added) / med["wall"]["off"],
           "cpu_ratio": med["cpu"]["on"] / med["cpu"]["off"], "runs": runs}
    print(f"wall:   off {med['wall']['off']:.2f} s, on {med['wall']['on']:.2f} s: ratio {out['wall_ratio']:.4f}\n"
          f"direct: {added:.3f} s added per trial: ratio {out['direct_ratio']:.4f}\n"
          f"CPU:    off {med['cpu']['off']:.2f} s, on {med['cpu']['on']:.2f} s: ratio {out['cpu_ratio']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
