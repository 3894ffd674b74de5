"""Distributed mode on a real PostgreSQL (started by the test on 127.0.0.1): a `vpsearch worker`
joining a `study run`, killed with SIGKILL, its trial re-run through heartbeats; an unreachable
storage retried with backoff, then a clear error."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState
from postgres import find_bin, free_port, postgres_or_skip
from test_study_run import QUIET, cli, open_study, run_cli, trials_so_far, wait_for, write_study

from vpsearch.search.records import TrialRecord
from vpsearch.search.storage import open_storage

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
FAST_HEARTBEAT = {"heartbeat_seconds": 1, "grace_seconds": 3, "max_retries": 2}


def test_killed_remote_worker_is_detected_by_heartbeat_and_its_trial_rerun(tmp_path, pushing_root):
    with postgres_or_skip() as pg:
        url = pg.create_database("optuna")
        study_file = write_study(tmp_path / "s.yaml", pushing_root, failure=FAST_HEARTBEAT,
                                 budget={"n_trials": 5, "epochs": 2, "steps_per_epoch": 2})
        root = tmp_path / "runs"
        launcher = subprocess.Popen(cli("study", "run", str(study_file), "--workers", "1", "--storage", url,
                                        "--root", str(root), *QUIET),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        remote = None
        try:
            wait_for(lambda: _has_study(url), what="the study in PostgreSQL")
            # another "machine": a worker that only knows the study name and the storage (5 trials, so
            # that the launcher's own worker has not finished them all before it has started)
            remote = subprocess.Popen(cli("worker", "--study", "tiny", "--storage", url, "--device", "cpu",
                                          "--root", str(root), *QUIET),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            me = f":{remote.pid}"
            victim = wait_for(lambda: next((t for t in trials_so_far(url, "tiny", (TrialState.RUNNING,))
                                            if str((TrialRecord.of(t).worker or "")).endswith(me)
                                            and TrialRecord.of(t).config), None),  # training: params are set
                              what="a trial on the remote worker")
            remote.send_signal(signal.SIGKILL)  # no launcher watches it: only its heartbeat can tell
            remote.wait(timeout=30)
            out, _ = launcher.communicate(timeout=180)
        finally:
            launcher.kill()
            if remote is not None:
                remote.kill()
        assert launcher.returncode == 0, out
        trials = open_study(url, "tiny").get_trials()
        killed = trials[victim.number]
        assert killed.state == TrialState.FAIL
        assert TrialRecord.of(killed).fail_reason.startswith(
            f"no heartbeat for over 3s from worker {TrialRecord.of(victim).worker}")
        assert TrialRecord.of(killed).fail_reason.endswith("re-queued")
        rerun = [t for t in trials if TrialRecord.of(t).retry_of == victim.number]
        assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE and rerun[0].params == killed.params
        assert rerun[0].system_attrs["failed_trial"] == victim.number  # Optuna's retry bookkeeping
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 5
        assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)


def _has_study(url: str) -> bool:
    with contextlib.closing(open_storage(url)) as store:
        try:
            return any(s.study_name == "tiny" and "study_config" in s.user_attrs
                       for s in optuna.get_all_study_summaries(store.storage))
        except Exception:
            return False


def test_a_closed_storage_gives_its_connections_back():
    """Found by a poll every 0.2 s in the test above: each storage opened and dropped kept its
    connection until PostgreSQL refused new clients ("too many clients already")."""
    import psycopg2

    with postgres_or_skip() as pg:
        url = pg.create_database("optuna")
        maker = open_storage(url)
        optuna.create_study(study_name="tiny", storage=maker.storage)
        maker.close()

        def clients() -> int:
            with psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql")) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'optuna' AND pid <> "
                            "pg_backend_pid()")
                return cur.fetchone()[0]

        before = clients()
        kept = []
        for _ in range(3):  # not closed: each holds its connections
            kept.append(open_storage(url))
            optuna.load_study(study_name="tiny", storage=kept[-1].storage).get_trials()
        assert clients() >= before + 3
        for store in kept:
            store.close()
        for _ in range(5):
            with contextlib.closing(open_storage(url)) as store:
                optuna.load_study(study_name="tiny", storage=store.storage).get_trials()
        assert clients() == before


def test_unreachable_storage_is_retried_then_reported_in_one_line():
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    r = run_cli("study", "status", "tiny", "--storage", f"postgresql://vp:s3cret@127.0.0.1:{port}/optuna",
                "--storage-wait", "3")
    waited = time.monotonic() - t0
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "s3cret" not in r.stderr
    assert lines[0].startswith(f"vpsearch: error: storage postgresql://vp:***@127.0.0.1:{port}/optuna unreachable: "
                               "connecting failed ")
    attempts = int(lines[0].split("connecting failed ")[1].split(" times")[0])
    assert attempts >= 3 and waited >= 1.5  # backoff 0.5 s, 1 s, ... within the 3 s budget
    assert "check that it is running and reachable" in lines[0]


def test_storage_that_comes_back_during_the_backoff_is_used(tmp_path, pushing_root):
    if find_bin() is None:
        pytest.skip("PostgreSQL is not installed")
    with postgres_or_skip() as pg:
        url = pg.create_database("optuna")
        study_file = write_study(tmp_path / "s.yaml", pushing_root, budget={"n_trials": 1, "epochs": 1,
                                                                             "steps_per_epoch": 1})
        assert run_cli("study", "run", str(study_file), "--storage", url, "--root", str(tmp_path / "runs"),
                       *QUIET).returncode == 0
        pg.stop()  # the database goes away ...
        status = subprocess.Popen(cli("study", "status", "tiny", "--storage", url, "--storage-wait", "60"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert status.poll() is None  # still retrying
        pg.start()  # ... and comes back
        out, err = status.communicate(timeout=90)
        assert status.returncode == 0, err
        assert "1/1 finished: 1 complete" in out
