"""Scale-out efficiency on this machine: the tiny study with 1 vs 2 `vpsearch worker`s on PostgreSQL.

    .venv/bin/python benchmarks/scaleout_efficiency.py [--trials 12] [--epochs 3] [--steps 2] [--out r.json]

The distributed layout of docs/scale-out.md on one machine: a throwaway PostgreSQL cluster
(tests/postgres.py, Debian's binaries), the study made by `vpsearch study create`, then N
workers started as separate processes that know only VPSEARCH_STORAGE, one CPU thread each
(one worker per core, as one per GPU). Tracking is off: this measures the search layer.
Each layout gets a fresh database and the same study (tiny SVG model of the tests, random
sampler over a learning-rate range, so trials cost about the same). Reported per layout:

- trials per minute over the wall time from starting the workers until the last one exits
  (process start-up and imports included, as a user sees it);
- trials per minute in the steady state: from the first trial's start to the last trial's end,
  and the mean trial duration (longer with 2 workers: they share something, cores or the database);
- the ratio 2 workers / 1 worker of each, and the parallel efficiency = ratio / 2;
- CPU seconds (user + system) the workers spent per trial: the cost of a trial, which other
  work on the machine does not change (a ratio near 1: coordinating two workers costs little);
- the 1-minute load average before and after each layout: other work on the machine takes
  cores from the 2-worker layout first, so compare trials/min only on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.nf=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "train.batch_size=4",
        "eval.max_sequences=4", "eval.gif_sequences=1", "eval.every=1", "train.amp=none",
        "train.channels_last=false"]


def study_yaml(path: Path, data: Path, trials: int, epochs: int, steps: int) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "scaleout", "base": "pushing-small", "overrides": TINY + [f"data.root={data}"],
        "budget": {"n_trials": trials, "epochs": epochs, "steps_per_epoch": steps},
        "search_space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 2e-3, "log": True}},
        "sampler": {"name": "random", "seed": 0}, "pruner": "none"}))
    return path


def vpsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "vpsearch.cli", *args]


def run_layout(pg, study: Path, workers: int, tmp: Path) -> dict:
    import optuna

    from vpsearch.search.storage import open_storage

    url = pg.create_database(f"scaleout_{workers}")
    env = {**os.environ, "VPSEARCH_STORAGE": url, "MLFLOW_TRACKING_URI": "off", "OMP_NUM_THREADS": "1",
           "VPSEARCH_ROOT": str(tmp / f"runs-{workers}")}
    subprocess.run(vpsearch("study", "create", str(study)), env=env, check=True, capture_output=True)
    load = os.getloadavg()[0]  # other work on the machine skews the ratio: say how busy it was
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    procs = [subprocess.Popen(vpsearch("worker", "--study", "scaleout", "--device", "cpu", "--threads", "1"),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for _ in range(workers)]
    codes = [p.wait() for p in procs]
    wall = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, waited for above
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if any(codes):
        raise SystemExit(f"a worker of the {workers}-worker layout exited with {codes}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="scaleout", storage=open_storage(url).storage).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) != len(trials):
        raise SystemExit(f"{len(trials) - len(done)} trial(s) of the {workers}-worker layout did not complete")
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    first = min(t.datetime_start.timestamp() for t in done)
    last = max(t.datetime_complete.timestamp() for t in done)
    return {"workers": workers, "trials": len(done), "wall_s": round(wall, 1),
            "trials_per_min": round(len(done) / wall * 60, 2),
            "mean_trial_s": round(sum(durations) / len(durations), 2), "steady_s": round(last - first, 1),
            "steady_trials_per_min": round(len(done) / (last - first) * 60, 2),
            "startup_to_first_trial_s": round(first - t0, 1), "cpu_s_per_trial": round(cpu / len(done), 2),
            "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()

    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from postgres import postgres_server  # the tests' throwaway cluster

    from vpsearch.data.generators.pushing import make_pushing

    with tempfile.TemporaryDirectory(prefix="vpsearch-scaleout-") as tmp_name, postgres_server() as pg:
        tmp = Path(tmp_name)
        data = make_pushing(tmp / "pushing", train=8, validate=4, test=4, seed=3)  # the tests' tiny data
        study = study_yaml(tmp / "scaleout.yaml", data, args.trials, args.epochs, args.steps)
        results = [run_layout(pg, study, n, tmp) for n in (1, 2)]
    one, two = results
    for r in results:
        print(f"{r['workers']} worker(s): {r['trials']} trials in {r['wall_s']}s = {r['trials_per_min']} trials/min "
              f"(steady state {r['steady_trials_per_min']} trials/min over {r['steady_s']}s, a trial "
              f"{r['mean_trial_s']}s; "
              f"first trial {r['startup_to_first_trial_s']}s after start; {r['cpu_s_per_trial']} CPU s per "
              f"trial; load average {r['load_before']} "
              f"before, {r['load_after']} after)")
    ratio = two["trials_per_min"] / one["trials_per_min"]
    steady = two["steady_trials_per_min"] / one["steady_trials_per_min"]
    cpu = two["cpu_s_per_trial"] / one["cpu_s_per_trial"]
    print(f"2 vs 1 worker: {ratio:.2f}x trials/min (parallel efficiency {ratio / 2:.0%}); "
          f"steady state {steady:.2f}x ({steady / 2:.0%}) on {os.cpu_count()} cores; "
          f"CPU time per trial {cpu:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"layouts": results, "ratio": round(ratio, 3), "steady_ratio":
                                              round(steady, 3), "cpu_ratio": round(cpu, 3),
                                              "cores": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
