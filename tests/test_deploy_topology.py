"""The docker-compose topology without docker, as CI runs it: a real PostgreSQL (throwaway
cluster on 127.0.0.1), a real `mlflow server` whose backend store is a second database in that
cluster and which serves the artifacts, a study creator and 3 `vpsearch worker`s started as
separate processes that know nothing but the environment (VPSEARCH_STORAGE,
MLFLOW_TRACKING_URI), each with its own runs root, as on 4 machines.

Mid-study one worker is killed with SIGKILL and PostgreSQL is stopped for a few seconds; the
study must still finish with every trial accounted for, in Optuna and in MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import Iterator

import optuna
import pytest
from mlflow_server import MlflowServer
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState
from postgres import postgres_or_skip
from test_study_run import cli, open_study, wait_for, write_study

from vpsearch.search.records import StudyRecord, TrialRecord
from vpsearch.search.recovery import tally
from vpsearch.tracking import names

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

N_TRIALS, EPOCHS = 12, 3
# grace > the PostgreSQL outage below, so only the killed worker's trial goes stale
FAILURE = {"heartbeat_seconds": 1, "grace_seconds": 10, "max_retries": 2}
OUTAGE_SECONDS = 4


def retried_trial_number(trial: optuna.trial.FrozenTrial) -> int | None:
    """Optuna's own record of the first attempt a re-run retries (experimental API: no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryFailedTrialCallback.retried_trial_number(trial)


def retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    """The attempts a re-run follows, oldest first (Optuna's record; empty for a first attempt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryFailedTrialCallback.retry_history(trial)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as f:
        return subprocess.Popen(cli(*args), stdout=f, stderr=subprocess.STDOUT, env=env)


def machine(tmp_path: Path, name: str, storage: str, tracking: str) -> dict[str, str]:
    """The environment of one "machine": the cluster's URLs and a runs root of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VPSEARCH_STORAGE", "MLFLOW_TRACKING_URI"))}
    return {**env, "VPSEARCH_STORAGE": storage, "MLFLOW_TRACKING_URI": tracking,
            "VPSEARCH_ROOT": str(tmp_path / name / "runs"), "OMP_NUM_THREADS": "1"}


def half_way(study: optuna.Study, pid: int) -> optuna.trial.FrozenTrial | None:
    """The trial worker `pid` trains, once it has reported an epoch and has its MLflow run."""
    for t in study.get_trials(states=(TrialState.RUNNING,)):
        if str((TrialRecord.of(t).worker or "")).endswith(f":{pid}") and t.intermediate_values \
                and TrialRecord.of(t).mlflow_run_id:
            return t
    return None


def in_progress(study: optuna.Study):
    """The study's tally once 4 trials are complete and one is running, else None."""
    t = tally(study.get_trials())
    return t if t.complete >= 4 and t.running else None


@contextlib.contextmanager
def mlflow_server_on(pg, folder: Path) -> Iterator[MlflowServer]:
    """`mlflow server` with a database of the cluster as its backend store, serving artifacts."""
    server = MlflowServer(folder, backend_uri=pg.create_database("mlflow")).start()
    try:
        yield server
    finally:
        server.stop()


def test_three_workers_survive_a_killed_worker_and_a_postgres_restart(tmp_path, pushing_root):
    t_start = time.monotonic()
    with postgres_or_skip() as pg, mlflow_server_on(pg, tmp_path / "mlflow") as server:
        storage = pg.create_database("optuna")
        t_servers = time.monotonic()
        workers: list[subprocess.Popen] = []
        try:
            study_file = write_study(tmp_path / "topo.yaml", pushing_root, name="topo", failure=FAILURE,
                                     budget={"n_trials": N_TRIALS, "epochs": EPOCHS, "steps_per_epoch": 2})
            creator = subprocess.run(cli("study", "create", str(study_file)), capture_output=True, text=True,
                                     env=machine(tmp_path, "creator", storage, server.uri), timeout=120)
            assert creator.returncode == 0, creator.stdout + creator.stderr
            assert f"study topo created in postgresql+psycopg2://vp:***@127.0.0.1:{pg.port}/optuna: 12 trials" \
                in creator.stdout
            t_workers = time.monotonic()
            study = open_study(storage, "topo")  # one handle for polling: a new storage per poll costs a core
            for i in range(3):
                workers.append(start(["worker", "--study", "topo", "--device", "cpu", "--threads", "1"],
                                     machine(tmp_path, f"worker{i}", storage, server.uri), tmp_path / f"worker{i}.log"))

            # SIGKILL worker 0 mid-trial: nothing of it can close its trial or its MLflow run
            victim = wait_for(lambda: half_way(study, workers[0].pid), timeout=90, what="worker 0 half way")
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait(timeout=30)
            t_kill = time.monotonic()

            # then PostgreSQL goes away for a few seconds while the other two train
            before = wait_for(lambda: in_progress(study), timeout=120, what="4 complete trials and one running")
            pg.stop()
            time.sleep(OUTAGE_SECONDS)
            pg.start()

            for w in workers[1:]:
                w.wait(timeout=150)
            elapsed = time.monotonic() - t_workers
            logs = {i: (tmp_path / f"worker{i}.log").read_text() for i in range(3)}
            assert [w.returncode for w in workers[1:]] == [0, 0], "\n".join(
                f"--- worker{i}.log (last 60 lines)\n" + "\n".join(text.splitlines()[-60:]) for i, text in logs.items())
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()

        # --- Optuna: every trial accounted for, none running, none counted twice
        trials = study.get_trials()
        t = tally(trials)
        assert before.finished < N_TRIALS and before.running >= 1  # the outage hit a study in progress
        assert (t.complete, t.running, t.waiting) == (N_TRIALS, 0, 0), [(x.number, x.state) for x in trials]
        killed = trials[victim.number]
        assert killed.state == TrialState.FAIL
        assert TrialRecord.of(killed).fail_reason == (
            f"no heartbeat for over 10s from worker {TrialRecord.of(victim).worker} (killed or cut off); re-queued")
        # a re-run that the outage cut off in turn is re-run again: follow each chain of attempts
        retried_from = {x.number: retried_trial_number(x) for x in trials}  # the chain's first attempt
        earlier = {x.number: retry_history(x) for x in trials}  # the attempts before it, oldest first
        reruns = [x for x in trials if earlier[x.number]]
        assert all(TrialRecord.of(x).retry_of == earlier[x.number][-1] for x in reruns)  # the attempt it re-runs
        final = {retried_from[x.number]: x for x in reruns if x.state == TrialState.COMPLETE}
        rerun = final[victim.number]
        assert rerun.params == killed.params
        # every failed attempt was re-run; any other than the victim is one the PostgreSQL outage cut
        # off (created, then the storage went away before its worker could claim it)
        failed = [x for x in trials if x.state == TrialState.FAIL]
        assert sorted(x.number for x in failed) == sorted({n for x in reruns for n in earlier[x.number]})
        cut_off = ("its worker died before its first heartbeat/write", "lost the storage while starting it")
        assert all(any(why in TrialRecord.of(x).fail_reason for why in cut_off)
                   for x in failed if x.number != victim.number), [x.user_attrs for x in failed]
        # the final accounting: each requested trial once, a re-run standing in for the attempt it retries
        accounted = [x for x in trials if x.number not in t.retried]
        slots = [retried_from[x.number] if retried_from[x.number] is not None else x.number for x in accounted]
        assert len(accounted) == N_TRIALS and len(set(slots)) == N_TRIALS
        assert TrialRecord.of(victim).worker not in {TrialRecord.of(x).worker for x in accounted}

        # the same answer from `study status` started with nothing but the environment
        status = subprocess.run(cli("study", "status", "topo", "--json"), capture_output=True, text=True,
                                env=machine(tmp_path, "laptop", storage, server.uri), timeout=120)
        assert status.returncode == 0, status.stderr
        counts = json.loads(status.stdout)["counts"]
        assert counts == {"complete": N_TRIALS, "pruned": 0, "failed": 0, "running": 0, "waiting": 0,
                          "re_run": len(failed)}

        # --- MLflow: a child run with metrics for every finished trial; the killed attempt FAILED
        client = server.client()
        exp = client.get_experiment_by_name("topo")
        runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id], max_results=1000)}
        parent = runs[StudyRecord.of(study).mlflow_parent_run_id]
        for x in accounted:
            run = runs[TrialRecord.of(x).mlflow_run_id]
            assert run.info.status == "FINISHED" and run.data.tags[names.TAG_STATE] == "COMPLETE"
            assert run.data.tags[names.MLFLOW_PARENT] == parent.info.run_id
            history = client.get_metric_history(run.info.run_id, "val/psnr")
            assert [m.step for m in history] == list(range(EPOCHS))  # nothing lost to the outage
            assert run.data.metrics[names.BEST_PSNR] == pytest.approx(x.value)
        lost = runs[TrialRecord.of(killed).mlflow_run_id]
        assert lost.info.status == "FAILED" and lost.data.tags[names.TAG_STATE] == "FAIL"
        assert lost.data.tags[names.TAG_REASON].startswith("no heartbeat for over 10s")
        assert not [r.info.run_name for r in runs.values() if r.info.status == "RUNNING"]
        assert parent.info.status == "FINISHED"  # the last live worker ended it, the dead one counted out
        spools = [p for i in range(3) for p in (tmp_path / f"worker{i}" / "runs").glob("mlflow-spool/*/rejected.jsonl")]
        assert not spools, [p.read_text() for p in spools]

        t_checks = time.monotonic()
        # --- a report from a third machine, with only the environment set, logged to the parent run
        report = subprocess.run(cli("report", "topo"), capture_output=True, text=True,
                                env=machine(tmp_path, "laptop", storage, server.uri), timeout=180)
        assert report.returncode == 0, report.stdout + report.stderr
        assert "12 complete" in report.stdout
        assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/report.md"}

        print(f"\ntopology: 3 workers, {t.complete}/{N_TRIALS} trials complete, {len(failed)} re-run "
              f"(trial {victim.number} of the SIGKILLed worker -> trial {rerun.number}"
              f"{', cut off by the outage: ' + str(len(failed) - 1) if len(failed) > 1 else ''}), PostgreSQL down "
              f"{OUTAGE_SECONDS}s mid-study with {before.running} trial(s) running; time: servers up "
              f"{t_servers - t_start:.0f}s, study created {t_workers - t_servers:.0f}s, workers {elapsed:.0f}s "
              f"(kill at {t_kill - t_workers:.0f}s), report {time.monotonic() - t_checks:.0f}s, "
              f"{time.monotonic() - t_start:.0f}s in all")
