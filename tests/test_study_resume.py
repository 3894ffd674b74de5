"""A re-queued trial resumes: the re-run of a trial whose worker was SIGKILLed at epoch K of N
continues the dead attempt's run from its last checkpoint at K, same seed and schedules."""

from __future__ import annotations

import csv
import os
import signal
import subprocess

import pytest
from optuna.trial import TrialState
from test_study_run import QUIET, cli, journal, open_study, trials_so_far, wait_for, write_study

from vpsearch.search.records import TrialRecord

pytestmark = pytest.mark.slow
EPOCHS = 6


def test_a_trial_killed_at_epoch_k_resumes_at_k(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root,
                             budget={"n_trials": 1, "epochs": EPOCHS, "steps_per_epoch": 2})
    root = tmp_path / "runs"
    proc = subprocess.Popen(cli("study", "run", str(study_file), "--workers", "1", "--root", str(root), *QUIET),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = journal(root)
        wait_for(lambda: (root / "optuna-journal.log").exists(), what="the journal")
        victim = wait_for(lambda: next((t for t in trials_so_far(url, "tiny")
                                        if len(t.intermediate_values) >= 3), None), timeout=120, what="3 epochs")
        os.kill(int(TrialRecord.of(victim).worker.rsplit(":", 1)[1]), signal.SIGKILL)
        killed_curve = dict(victim.intermediate_values)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    trials = open_study(url, "tiny").get_trials()
    killed, rerun = trials[0], trials[1]
    assert killed.state == TrialState.FAIL and rerun.state == TrialState.COMPLETE
    rec, old = TrialRecord.of(rerun), TrialRecord.of(killed)
    k = rec.resumed_from_epoch
    assert rec.retry_of == 0 and k is not None and 3 <= k < EPOCHS, out
    assert rec.resume_note.startswith("resumes trial 0's run in ") and rec.run_dir == old.run_dir
    assert rec.seed == old.seed and rec.config == {**old.config, "name": rec.config["name"]}
    # the re-run reports the whole curve; the epochs before k are the killed attempt's own values
    assert sorted(rerun.intermediate_values) == list(range(EPOCHS))
    for e in range(3):
        assert rerun.intermediate_values[e] == pytest.approx(killed_curve[e])
    rows = list(csv.DictReader(open(root / rec.run_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))  # one run, no epoch trained twice
    assert f"continued at epoch {k}" in (root / "studies" / "tiny" / "logs" / "worker-1.log").read_text()


def test_a_rerun_whose_checkpoint_is_gone_starts_over_and_says_so(tmp_path, pushing_root):
    import optuna

    from vpsearch.search.launcher import prepare_study
    from vpsearch.search.plan import load_study
    from vpsearch.search.recovery import RetryStaleTrial, fail_and_requeue
    from vpsearch.search.records import trial_id, write_trial
    from vpsearch.search.storage import open_storage
    from vpsearch.search.worker import Worker, WorkerOptions

    plan = load_study(write_study(tmp_path / "s.yaml", pushing_root,
                                  budget={"n_trials": 1, "epochs": 1, "steps_per_epoch": 2}))
    url = f"journal:{tmp_path / 'runs' / 'journal.log'}"
    study = prepare_study(plan, open_storage(url), "off", str(tmp_path / "runs"))
    t = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-3, 3e-3, log=True)})
    write_trial(study, t, worker="elsewhere:1", run_dir="studies/tiny/trials/0", config_id=0, repeat=0)
    assert fail_and_requeue(study, trial_id(t), "node lost", RetryStaleTrial(2))
    assert Worker(WorkerOptions("tiny", url, device="cpu", threads=1, tracking_uri="off",
                                root=str(tmp_path / "runs"))).run() == 1
    rerun = TrialRecord.of(open_study(url, "tiny").get_trials()[1])
    assert rerun.resumed_from_epoch is None and rerun.run_dir == "studies/tiny/trials/1"
    assert rerun.resume_note.startswith("started over: trial 0's last checkpoint ") and "is not reachable" in \
        rerun.resume_note
