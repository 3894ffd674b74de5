"""Tracking overhead: the same trial with MLflow tracking off and on, wall-time ratio.

    python benchmarks/tracking_overhead.py                       # quickstart config, embedded store
    python benchmarks/tracking_overhead.py --tracking-uri http://127.0.0.1:5000 --repeats 3
    python benchmarks/tracking_overhead.py --set train.epochs=2  # shorter

A trial is what the study driver times: tracker.trial() -> fit(reporter=trial tracker) ->
close(), so the "on" wall time includes run creation, every per-epoch hook, and waiting for
the end-of-trial uploads (artifacts, checkpoint). Off and on alternate (off, on, on, off, ...)
after an untimed warm-up, so drift of the machine hits both sides alike. The study's one-time
set-up (experiment and parent run) is reported apart: it is paid once per study, not per trial.
Also reported: CPU seconds of the process (all threads, the sender's included: what tracking
costs the machine, and a number other jobs on shared cores barely move) and the time the
training thread spent inside tracking calls (the direct cost).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vpsearch.config import Config, apply_overrides, config_from_dict, load_config  # noqa: E402
from vpsearch.tracking import make_tracker  # noqa: E402
from vpsearch.training import Reporter, fit  # noqa: E402


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


def one_trial(cfg, run_dir: Path, tracker, number: int) -> dict[str, float]:
    """Wall and CPU seconds of one trial; CPU (all threads of this process, the sender's
    included) is what tracking costs the machine, and is far less sensitive than wall time
    to other jobs sharing the cores."""
    t0, c0 = time.perf_counter(), time.process_time()
    if tracker is None:
        fit(cfg, run_dir)
        return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "hooks": 0.0, "close": 0.0}
    trial = tracker.trial(number, cfg, {"sampler": "benchmark"})
    create = time.perf_counter() - t0
    timed = Timed(trial)
    fit(cfg, run_dir, reporter=timed)
    t1 = time.perf_counter()
    trial.close("COMPLETE")  # waits until its artifacts and checkpoint are stored
    close = time.perf_counter() - t1
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "hooks": create + timed.seconds,
            "close": close}


def trial_config(args: argparse.Namespace, extra: list[str]) -> Config:
    """The config a trial of the study trains (its search space left at the base values)."""
    if args.config:
        return load_config(args.config, [*args.overrides, *extra])
    from vpsearch.search.plan import load_study

    base = load_study(args.study).base.to_dict()
    return config_from_dict(apply_overrides(base, [*args.overrides, *extra]), args.study)


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

    root = Path(args.root or tempfile.mkdtemp(prefix="vpsearch-overhead-"))
    cfg = trial_config(args, ["train.progress=false"])
    warm = trial_config(args, ["train.progress=false", "train.epochs=1", "train.steps_per_epoch=5"])
    source = args.config or args.study
    print(f"config {source} {' '.join(args.overrides)}: {cfg.train.epochs} epochs x "
          f"{cfg.train.steps_per_epoch} steps, batch {cfg.train.batch_size}; root {root}", flush=True)
    fit(warm, root / "warmup")  # data decode cache, imports, allocator: paid by neither side

    t0 = time.perf_counter()
    tracker = make_tracker(args.tracking_uri, root, "tracking-overhead")
    tracker.ensure_parent({"benchmark": "tracking_overhead"}, "benchmark", "none")
    setup = time.perf_counter() - t0
    print(f"study set-up (once per study): {setup:.2f} s  tracking URI {tracker.uri}", flush=True)

    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    order = [side for i in range(args.repeats) for side in (("off", "on") if i % 2 == 0 else ("on", "off"))]
    for i, side in enumerate(order):
        r = one_trial(cfg, root / f"trial-{i}-{side}", tracker if side == "on" else None, i)
        runs[side].append(r)
        print(f"  {side:3s} trial {i}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU "
              f"(in tracking hooks {r['hooks']:.3f} s, close {r['close']:.3f} s)", flush=True)
    tracker.close()

    off = statistics.median(r["wall"] for r in runs["off"])
    on = statistics.median(r["wall"] for r in runs["on"])
    direct = statistics.median((r["hooks"] + r["close"]) for r in runs["on"])
    cpu_off = statistics.median(r["cpu"] for r in runs["off"])
    cpu_on = statistics.median(r["cpu"] for r in runs["on"])
    out = {"config": source, "overrides": args.overrides, "tracking_uri": tracker.uri,
           "off_median_s": round(off, 3), "on_median_s": round(on, 3), "ratio": round(on / off, 4),
           "cpu_off_median_s": round(cpu_off, 3), "cpu_on_median_s": round(cpu_on, 3),
           "cpu_ratio": round(cpu_on / cpu_off, 4),
           "direct_overhead_s": round(direct, 3), "direct_ratio": round((off + direct) / off, 4),
           "setup_s": round(setup, 3), "runs": runs}
    print(f"wall: off {off:.2f} s, on {on:.2f} s, ratio {on / off:.4f}\n"
          f"CPU:  off {cpu_off:.2f} s, on {cpu_on:.2f} s, ratio {cpu_on / cpu_off:.4f}\n"
          f"training thread inside tracking: {direct:.3f} s per trial = ratio {(off + direct) / off:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
