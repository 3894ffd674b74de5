"""`vpsearch study run / status / worker` end to end on tiny data, journal storage, real processes.

Also the helpers the other study tests import (write_study, run_cli, open_study).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from vpsearch.search.records import TrialRecord
from vpsearch.search.storage import open_storage

pytestmark = pytest.mark.slow

TINY = ["model.nf=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "train.batch_size=4",
        "eval.max_sequences=4", "eval.gif_sequences=1", "eval.every=1", "train.amp=none", "train.channels_last=false"]
# untracked, one thread: a 2-thread OpenMP team crawls when a busy CI machine preempts one of its
# spinning threads, and the tiny models gain nothing from a second thread
QUIET = ("--tracking-uri", "off", "--threads", "1")


def write_study(path: Path, data_root: Path, **fields) -> Path:
    """A tiny study YAML: 2-epoch runs of a tiny SVG on the session's pushing data."""
    study = {"name": "tiny", "base": "pushing-small", "overrides": TINY + [f"data.root={data_root}"],
             "budget": {"n_trials": 2, "epochs": 2, "steps_per_epoch": 2},
             "search_space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True}},
             "sampler": "random"}
    study.update(fields)
    path.write_text(yaml.safe_dump(study))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vpsearch.cli", *args]


def run_cli(*args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def open_study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url).storage)


def trials_so_far(url: str, name: str, states=None) -> list:
    """The study's trials while a launcher may still be creating it: none until the study exists.
    Polled: the storage is closed each time, or PostgreSQL runs out of client slots."""
    with contextlib.closing(open_storage(url)) as store:
        try:
            return optuna.load_study(study_name=name, storage=store.storage).get_trials(states=states)
        except KeyError:  # the journal file exists before the study record is written to it
            return []


def journal(root: Path) -> str:
    return f"journal:{root / 'optuna-journal.log'}"


def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_run_grid_with_repeats_record_everything_and_resume_runs_nothing(tmp_path, pushing_root):
    # grid: a sane lr and one that blows up, 2 seeds each -> 2 COMPLETE, 2 FAIL with the non-finite reason
    study_file = write_study(tmp_path / "s.yaml", pushing_root, sampler="grid",
                             budget={"epochs": 2, "steps_per_epoch": 2},
                             search_space={"optim.lr": {"type": "categorical", "choices": [0.002, 1.0e6]}},
                             overrides=TINY + [f"data.root={pushing_root}", "optim.grad_clip=null"],
                             repeats=2, seeds=[11, 12])
    root = tmp_path / "runs"
    r = run_cli("study", "run", str(study_file), "--workers", "2", "--root", str(root), *QUIET)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 worker(s) on cpu x 1 thread(s)" in r.stdout
    assert "tiny: 4/4 finished (complete 2, pruned 0, failed 2) | running 0 | best val_psnr" in r.stdout  # the progress line
    assert "killed by" not in r.stdout and "warning" not in r.stdout  # diverged trials fail; workers live
    # the last lines: the best value, the copy-last baseline and the gain, then what to run next
    lines = r.stdout.strip().splitlines()
    assert lines[-7].startswith("best val_psnr ") and "(seed 1" in lines[-7] and "lr=2e-3" in lines[-7]
    assert lines[-6].startswith("copy-last baseline ") and " dB gains " in lines[-6]
    assert lines[-5] == "next:" and [ln.split()[1] for ln in lines[-4:]] == ["report", "ui", "export-best", "study"]
    assert all(f"tiny --root {root}" in ln for ln in lines[-4:])
    trials = open_study(journal(root), "tiny").get_trials()
    assert len(trials) == 4 and {t.state for t in trials} == {TrialState.COMPLETE, TrialState.FAIL}
    for t in trials:
        rec = TrialRecord.of(t)
        assert rec.seed == [11, 12][rec.repeat] and rec.config["train"]["seed"] == rec.seed
        assert rec.config_id == min(u.number for u in trials if u.params == t.params)  # its first seed
        assert rec.run_dir == f"studies/tiny/trials/{t.number}"  # relative to the runs root
        assert rec.device == "cpu" and rec.worker.count(":") == 1 and rec.threads == 1
        assert rec.config_hash and rec.effective_key and rec.retry_of is None
        assert (root / rec.run_dir / "config.yaml").is_file()
        if t.params["optim.lr"] == 1e6:
            assert t.state == TrialState.FAIL and rec.outcome == "diverged"
            assert rec.fail_reason.startswith("non-finite loss at epoch 0")
        else:
            assert t.state == TrialState.COMPLETE and rec.fail_reason is None and rec.outcome is None
            res = rec.results
            assert t.value == pytest.approx(res.val_psnr_best) and res.epochs_done == 2
            assert len(t.intermediate_values) == 2 and t.value == max(t.intermediate_values.values())
            assert len(res.frame_psnr) == len(res.baseline_frame_psnr) == 10
            assert res.best_epoch in (0, 1) and res.baseline_psnr > 0 and res.train_seconds > 0
    # repeats: same params and config hash, different seeds
    by_lr: dict = {}
    for t in trials:
        by_lr.setdefault(t.params["optim.lr"], []).append(t)
    for group in by_lr.values():
        assert len({TrialRecord.of(t).config_hash for t in group}) == 1
        assert sorted(TrialRecord.of(t).seed for t in group) == [11, 12]

    st = run_cli("study", "status", "tiny", "--root", str(root), "--json")
    assert st.returncode == 0, st.stderr
    data = json.loads(st.stdout)
    assert data["counts"] == {"complete": 2, "pruned": 0, "failed": 2, "running": 0, "waiting": 0, "re_run": 0}
    rec = {t["number"]: t for t in data["trials"]}
    for t in trials:
        assert rec[t.number]["state"] == t.state.name and rec[t.number]["params"] == t.params
        assert rec[t.number]["seed"] == TrialRecord.of(t).seed
        assert rec[t.number]["reason"] == TrialRecord.of(t).fail_reason
        assert rec[t.number]["value"] == t.value
    table = run_cli("study", "status", "tiny", "--root", str(root)).stdout
    assert "non-finite loss" in table and "4/4 finished: 2 complete, 0 pruned, 2 failed" in table
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    rows = {ln.split()[0]: ln for ln in table.splitlines() if re.match(r"\d+ ", ln)}
    assert len(rows) == 4
    assert rows[str(best.number)].startswith(f"{best.number} *  COMPLETE  {best.value:.3f}")  # the best marked
    assert all(re.search(r" (\d+m)?\d+s ", ln) for ln in rows.values())  # each trial's duration
    assert f"* best: trial {best.number}, val_psnr {best.value:.3f}" in table
    listed = run_cli("study", "list", "--root", str(root)).stdout
    assert re.search(rf"^  tiny +4/4 +val_psnr {best.value:.3f} \(trial {best.number}\) +grid ", listed, re.M)
    missing = run_cli("study", "status", "nope", "--root", str(root))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (f"vpsearch: error: study 'nope' not found in storage {journal(root)} "
                                      "(studies there: tiny)")

    again = run_cli("study", "run", str(study_file), "--workers", "2", "--root", str(root), *QUIET)
    assert again.returncode == 0 and "4/4 trials finished" in again.stdout
    assert len(open_study(journal(root), "tiny").get_trials()) == 4  # resume ran nothing


def test_sigkilled_worker_trial_is_rerun_by_the_launcher(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root,
                             budget={"n_trials": 3, "epochs": 4, "steps_per_epoch": 2})
    root = tmp_path / "runs"
    proc = subprocess.Popen(cli("study", "run", str(study_file), "--workers", "2", "--root", str(root),
                                *QUIET), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = journal(root)
        wait_for(lambda: (root / "optuna-journal.log").exists(), what="the journal")
        victim = wait_for(lambda: next((t for t in trials_so_far(url, "tiny", (TrialState.RUNNING,))
                                        if TrialRecord.of(t).config), None), what="a trial training")
        os.kill(int(TrialRecord.of(victim).worker.rsplit(":", 1)[1]), signal.SIGKILL)
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "killed by SIGKILL" in out and f"trial {victim.number} re-queued" in out
    trials = open_study(url, "tiny").get_trials()
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL
    assert "killed by SIGKILL; re-queued" in TrialRecord.of(killed).fail_reason
    rerun = [t for t in trials if TrialRecord.of(t).retry_of == victim.number]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
    assert rerun[0].params == killed.params and TrialRecord.of(rerun[0]).seed == TrialRecord.of(killed).seed
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3  # every requested trial accounted for
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)


def test_ctrl_c_requeues_the_running_trial_and_resume_runs_only_what_is_missing(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root,
                             budget={"n_trials": 3, "epochs": 3, "steps_per_epoch": 2})
    root = tmp_path / "runs"
    url = journal(root)
    proc = subprocess.Popen(cli("study", "run", str(study_file), "--workers", "1", "--root", str(root),
                                *QUIET), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (root / "optuna-journal.log").exists(), what="the journal")
        # interrupt while the second trial trains (the first has finished)
        wait_for(lambda: [(t.state, bool(TrialRecord.of(t).config))
                          for t in trials_so_far(url, "tiny")][:2]
                 == [(TrialState.COMPLETE, True), (TrialState.RUNNING, True)], what="trial 1 training")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert "resume with: vpsearch study run" in out
    trials = open_study(url, "tiny").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert TrialRecord.of(trials[1]).fail_reason.startswith("interrupted (Ctrl-C")
    assert TrialRecord.of(trials[2]).retry_of == 1 and trials[2].params == trials[1].params
    first_value = trials[0].value

    r = run_cli("study", "run", str(study_file), "--workers", "1", "--root", str(root), *QUIET)
    assert r.returncode == 0, r.stdout + r.stderr
    trials = open_study(url, "tiny").get_trials()
    # the re-queued trial ran, then the one never started; trial 0 was not touched
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].value == first_value
    assert "3/3 trials finished (3 complete, 0 pruned, 0 failed; 1 re-run)" in r.stdout


def test_sqlite_is_refused_for_several_workers(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root)
    r = run_cli("study", "run", str(study_file), "--workers", "2", "--storage", f"sqlite:///{tmp_path}/o.db",
                "--root", str(tmp_path / "runs"), *QUIET)
    assert r.returncode == 2
    assert r.stderr.startswith(f"vpsearch: error: storage sqlite:///{tmp_path}/o.db: SQLite is not safe for 2 "
                               "parallel workers")
    assert not (tmp_path / "o.db").exists()
