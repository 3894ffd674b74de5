"""Study throughput on this machine: 1 worker x N threads vs N workers x 1 thread, same study.

    .venv/bin/python benchmarks/study_throughput.py [--trials 4] [--epochs 2] [--steps 15] [--cores 2]

Runs the same small study (base pushing-small on the built-in pushing data, a random
sampler over a learning rate range, so every trial costs the same) twice with
`vpsearch study run`, each in a fresh runs root, and reports:

- trials per hour of each layout;
- overhead outside training, as a fraction of worker time: 1 - (sum over trials of the
  epochs' own seconds from metrics.csv) / (wall time x workers). It holds process start
  and imports, data loading, model set-up, storage reads and writes, checkpoints and the
  end-of-trial plots: everything a worker does besides training and evaluating epochs;
- per trial: the mean of (trial duration - its epochs' seconds), and the time from the
  launcher's start to the first trial's start (process spawn + imports + storage).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def study_yaml(path: Path, trials: int, epochs: int, steps: int) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "throughput", "base": "pushing-small",
        # eval only at the end; fp32 so both layouts run the same arithmetic whatever the CPU supports
        "overrides": ["eval.every=1000", "eval.max_sequences=16", "train.amp=none", "train.channels_last=false"],
        "budget": {"n_trials": trials, "epochs": epochs, "steps_per_epoch": steps},
        "search_space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 2e-3, "log": True}},
        "sampler": {"name": "random", "seed": 0}, "pruner": "none"}))
    return path


def epoch_seconds(run_dir: Path) -> float:
    with (run_dir / "metrics.csv").open() as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f))


def run_layout(study: Path, workers: int, threads: int, root: Path) -> dict:
    import optuna

    from vpsearch.search.records import TrialRecord
    from vpsearch.settings import under_root
    from vpsearch.search.storage import open_storage

    cmd = [sys.executable, "-m", "vpsearch.cli", "study", "run", str(study), "--workers", str(workers),
           "--threads", str(threads), "--root", str(root), "--tracking-uri", "off"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        raise SystemExit(f"study run failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="throughput",
                               storage=open_storage(f"journal:{root / 'optuna-journal.log'}").storage).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) != len(trials):  # a failed trial would make the timings meaningless
        bad = next(t for t in trials if t.state != optuna.trial.TrialState.COMPLETE)
        raise SystemExit(f"trial {bad.number} ended {bad.state.name}: {TrialRecord.of(bad).fail_reason}")
    train = [epoch_seconds(under_root(TrialRecord.of(t).run_dir, root)) for t in done]
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    first_start = min(t.datetime_start.timestamp() for t in done)
    return {
        "workers": workers, "threads": threads, "trials": len(done), "wall_s": round(wall, 1),
        "trials_per_hour": round(len(done) / wall * 3600, 1),
        "mean_trial_s": round(sum(durations) / len(durations), 2),
        "mean_epochs_s_per_trial": round(sum(train) / len(train), 2),
        "mean_in_trial_overhead_s": round(sum(d - t for d, t in zip(durations, train)) / len(done), 2),
        "startup_to_first_trial_s": round(first_start - t0, 2),
        "overhead_fraction": round(1 - sum(train) / (wall * workers), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--cores", type=int, default=2, help="threads of the 1-worker layout = workers of the other")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from vpsearch.data.builtin import resolve_root
    resolve_root("builtin:pushing")  # generated once, outside the timings

    with tempfile.TemporaryDirectory(prefix="vpsearch-bench-") as tmp:
        study = study_yaml(Path(tmp) / "throughput.yaml", args.trials, args.epochs, args.steps)
        results = [run_layout(study, 1, args.cores, Path(tmp) / "one"),
                   run_layout(study, args.cores, 1, Path(tmp) / "many")]
    for r in results:
        print(f"{r['workers']} worker(s) x {r['threads']} thread(s): {r['trials']} trials in {r['wall_s']}s = "
              f"{r['trials_per_hour']} trials/hour; trial {r['mean_trial_s']}s of which epochs "
              f"{r['mean_epochs_s_per_trial']}s; overhead outside training {100 * r['overhead_fraction']:.1f}% "
              f"(start-up to first trial {r['startup_to_first_trial_s']}s, "
              f"{r['mean_in_trial_overhead_s']}s per trial)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
