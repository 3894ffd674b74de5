"""Trial overhead and study throughput, measured on real `vpsearch study run` workers.

    python benchmarks/trial_overhead.py                      # phases of the quickstart trial + throughput
    python benchmarks/trial_overhead.py --part full          # phases of one trial of pushing-small's full budget
    python benchmarks/trial_overhead.py --part phases --before /tmp/old-checkout --repeats 2
    python benchmarks/trial_overhead.py --out results.json   # also the numbers as JSON

Workers run with benchmarks/phase_probe.py loaded (through benchmarks/probe_site on PYTHONPATH),
which times the functions a worker calls and attributes the seconds to phases: WORK is the
trial's training and the evaluations its config asks for; everything else is overhead (process
start and imports, data open and cache check, model build, checkpoints, the best evaluation's
GIF/strip, end-of-run plots, MLflow journaling and the wait for uploads at a trial's end, Optuna
storage and sampler calls, provenance). Tracking is on (the embedded MLflow store), as `make demo`.

Parts (each in fresh runs roots under one temporary folder; the built-in pushing data and each
checkout's frame cache are made first, so a one-time cache build is reported apart):
  phases      studies/quickstart.yaml (6 trials of 4 epochs x 6 steps), 1 worker x 1 thread
  full        one trial of pushing-small as shipped (13 epochs x 60 steps, eval every 2), 1 x 1
  throughput  trials/hour of 2 workers x 1 thread vs 1 worker x 2 threads: the same small study
              (random learning rates, no pruning, one evaluation at the end) in both layouts

--before DIR runs the same parts with that checkout too (e.g. `git archive BASE | tar -x -C DIR`),
alternating with this one `--repeats` times, so both columns come from one session under the
same load. On shared cores quote the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import phase_probe  # noqa: E402


def throughput_yaml(path: Path, trials: int, epochs: int, steps: int) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "throughput", "base": "pushing-small",
        # eval only at the end; fp32 so both layouts run the same arithmetic whatever the CPU supports
        "overrides": ["eval.every=1000", "eval.max_sequences=16", "train.amp=none", "train.channels_last=false"],
        "budget": {"n_trials": trials, "epochs": epochs, "steps_per_epoch": steps},
        "search_space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 2e-3, "log": True}},
        "sampler": {"name": "random", "seed": 0}, "pruner": "none"}))
    return path


def full_yaml(path: Path) -> Path:
    """One trial of pushing-small's own budget (a space around its own lr: the config as shipped)."""
    path.write_text(yaml.safe_dump({
        "name": "full", "base": "pushing-small",
        "search_space": {"optim.lr": {"type": "float", "low": 0.00199, "high": 0.00201}},
        "budget": {"n_trials": 1}, "sampler": {"name": "random", "seed": 0}, "pruner": "none"}))
    return path


WARM = """
import sys, time
from vpsearch.config import load_config
from vpsearch.data import load_split
cfg = load_config("pushing-small")
t = time.perf_counter()
for split in (cfg.data.train_split, cfg.data.val_split):  # what a trial opens
    load_split(cfg.data, split)
print(f"{time.perf_counter() - t:.2f}")
"""


def warm_cache(repo: Path) -> float:
    """Build `repo`'s frame cache of pushing-small's splits once, before any timing: a one-time
    cost per dataset (and per cache format), not a cost of each trial. Returns its seconds."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    r = subprocess.run([sys.executable, "-c", WARM], capture_output=True, text=True, env=env, cwd=repo)
    if r.returncode != 0:
        raise SystemExit(f"warming the frame cache with {repo} failed:\n{r.stderr[-3000:]}")
    return float(r.stdout.split()[-1])


def run_study(repo: Path, study: Path, root: Path, workers: int, threads: int) -> dict:
    """`vpsearch study run` of `repo`'s code with the probe; the summed phases of its workers."""
    probe_out = root / "phases"
    probe_out.mkdir(parents=True)
    env = {**os.environ, "VPSEARCH_PHASE_OUT": str(probe_out),
           "PYTHONPATH": os.pathsep.join([str(repo), str(HERE / "probe_site")])}
    env.pop("VPSEARCH_ROOT", None)
    env.pop("VPSEARCH_STORAGE", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "vpsearch.cli", "study", "run", str(study), "--workers", str(workers),
           "--threads", str(threads), "--root", str(root / "runs")]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo)
    wall = time.time() - t0
    if r.returncode != 0:
        raise SystemExit(f"study run failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    workers_data = phase_probe.read(probe_out)
    if not workers_data:
        raise SystemExit(f"no phase files in {probe_out}: was the probe loaded? {r.stderr[-2000:]}")
    s = phase_probe.summarize(workers_data)
    s.update(workers=workers, threads=threads, wall=wall, trials_per_hour=s["trials"] / wall * 3600,
             raw=workers_data)
    return s


def merge(runs: list[dict]) -> dict:
    """Several runs of the same part: seconds added up, shares recomputed."""
    out = {"trials": 0, "trial_wall": 0.0, "trial_phases": {}, "edges": {}, "process_wall": 0.0, "work": 0.0,
           "background": {}, "missing": sorted({m for s in runs for m in s["missing"]}), "wall": 0.0}
    for s in runs:
        for k in ("trials", "trial_wall", "process_wall", "work", "wall"):
            out[k] += s[k]
        out.setdefault("raw", []).extend(s["raw"])
        for part in ("trial_phases", "edges"):
            for k, v in s[part].items():
                out[part][k] = out[part].get(k, 0.0) + v
        for k, v in s["calls"].items():
            out.setdefault("calls", {})[k] = out.get("calls", {}).get(k, 0) + v
        for k, (wall, cpu) in s["background"].items():
            acc = out["background"].setdefault(k, [0.0, 0.0])
            acc[0] += wall
            acc[1] += cpu
    out["in_trial_overhead"] = 1 - out["work"] / out["trial_wall"]
    out["overhead_with_startup"] = 1 - out["work"] / out["process_wall"]
    return out


def line(name: str, s: dict) -> str:
    return (f"{name}: {s['trials']} trials in {s['wall']:.1f}s (study run wall time), trial {s['trial_wall'] / s['trials']:.2f}s of which work "
            f"{s['work'] / s['trials']:.2f}s; overhead in the trial {100 * s['in_trial_overhead']:.2f}%, with "
            f"the worker's start-up and shut-down {100 * s['overhead_with_startup']:.2f}%; per trial "
            f"{s['calls'].get('train epochs', 0) / s['trials']:.2f} epochs "
            f"({s['trial_phases'].get('train epochs', 0) / max(1, s['calls'].get('train epochs', 0)):.2f}s each), "
            f"{s['calls'].get('checkpoint writes', 0) / s['trials']:.2f} checkpoint writes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", action="append", choices=["phases", "full", "throughput"],
                    help="what to run (repeatable; default: phases and throughput)")
    ap.add_argument("--before", type=Path, help="another checkout whose phases to measure alongside")
    ap.add_argument("--study", type=Path, default=REPO / "studies" / "quickstart.yaml",
                    help="the study of the phases part (default studies/quickstart.yaml)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each phase measurement (alternating)")
    ap.add_argument("--trials", type=int, default=4, help="throughput: trials per layout")
    ap.add_argument("--epochs", type=int, default=2, help="throughput: epochs per trial")
    ap.add_argument("--steps", type=int, default=15, help="throughput: steps per epoch")
    ap.add_argument("--cores", type=int, default=2, help="throughput: threads of the 1-worker layout = workers of the other")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    parts = args.part or ["phases", "throughput"]

    sys.path.insert(0, str(REPO))
    from vpsearch.data.builtin import resolve_root
    resolve_root("builtin:pushing")  # generated once, outside the timings
    load = os.getloadavg()
    results: dict = {"load_before": load}
    checkouts = [("after", REPO)] + ([("before", args.before.resolve())] if args.before else [])
    results["cache_build_seconds"] = {}
    for name, repo in checkouts:  # a second call finds it built: the first one's time is the build
        results["cache_build_seconds"][name] = [warm_cache(repo), warm_cache(repo)]
        print(f"frame cache [{name}]: first open {results['cache_build_seconds'][name][0]:.1f}s (a build if none existed), again "
              f"in {results['cache_build_seconds'][name][1]:.2f}s (before any timing: once per dataset)")
    with tempfile.TemporaryDirectory(prefix="vpsearch-overhead-") as tmp:
        tmp = Path(tmp)
        studies = {"phases": args.study.resolve(), "full": full_yaml(tmp / "full.yaml")}
        for part in [p for p in parts if p in studies]:
            runs: dict[str, list[dict]] = {name: [] for name, _ in checkouts}
            for i in range(args.repeats):
                order = checkouts if i % 2 == 0 else checkouts[::-1]  # drift hits both sides alike
                for name, repo in order:
                    runs[name].append(run_study(repo, studies[part], tmp / f"{part}-{name}-{i}", 1, 1))
            merged = {name: merge(r) for name, r in runs.items()}
            results[part] = merged
            for name in merged:
                print(line(f"{part} [{name}]", merged[name]))
            print(phase_probe.table(merged["before"], merged["after"]) if args.before
                  else phase_probe.table(merged["after"]))
        if "throughput" in parts:
            study = throughput_yaml(tmp / "throughput.yaml", args.trials, args.epochs, args.steps)
            results["throughput"] = {}
            for name, repo in checkouts:
                layouts = [run_study(repo, study, tmp / f"tp-{name}-one", 1, args.cores),
                           run_study(repo, study, tmp / f"tp-{name}-many", args.cores, 1)]
                results["throughput"][name] = layouts
                for s in layouts:
                    print(f"throughput [{name}] {s['workers']} worker(s) x {s['threads']} thread(s): {s['trials']} "
                          f"trials in {s['wall']:.1f}s = {s['trials_per_hour']:.1f} trials/hour; overhead in the "
                          f"trial {100 * s['in_trial_overhead']:.2f}%, with start-up {100 * s['overhead_with_startup']:.2f}%")
                one, many = layouts
                print(f"throughput [{name}] ratio {many['workers']}x1 / 1x{one['threads']}: "
                      f"{many['trials_per_hour'] / one['trials_per_hour']:.2f}")
            if args.before:
                for i, layout in enumerate(("1 x {}".format(args.cores), f"{args.cores} x 1")):
                    a, b = results["throughput"]["after"][i], results["throughput"]["before"][i]
                    print(f"throughput after / before, {layout}: {a['trials_per_hour'] / b['trials_per_hour']:.2f}")
    results["load_after"] = os.getloadavg()
    print(f"load average before {load[0]:.2f}, after {results['load_after'][0]:.2f} "
          f"({os.cpu_count()} cores)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
