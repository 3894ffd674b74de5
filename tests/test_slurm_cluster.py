"""`vpsearch study submit --slurm` against a real one-node Slurm (slurmctld, slurmd, munged in a
temp dir): a study submitted as an array of 2 CPU workers completes, and `scancel` of the task
whose worker is mid-trial re-queues that trial, which the other worker then runs. Every trial is
accounted for, no trial is left RUNNING, and `study status` shows the array tasks' states."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from optuna.trial import TrialState
from slurm_cluster import slurm_or_skip
from test_study_run import cli, journal, open_study, wait_for, write_study

from vpsearch.search.records import TrialRecord
from vpsearch.search.recovery import tally

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
N_TRIALS = 4


def array_task_of(cluster, pid: int) -> str:
    """'JOB_TASK' of the array task whose processes include pid. Each task has a job id of its own
    (`scontrol listpids`), and one task's is the array's: scancel of that id would end them all."""
    ids = [f[1] for f in map(str.split, cluster.run("scontrol", "listpids").stdout.splitlines()[1:])
           if f and f[0] == str(pid)]
    assert ids, f"pid {pid} is in no Slurm job"
    record = next(ln for ln in cluster.run("scontrol", "-o", "show", "job", ids[0]).stdout.splitlines()
                  if ln.startswith(f"JobId={ids[0]} "))
    return "_".join(re.search(rf"\b{k}=(\d+)", record).group(1) for k in ("ArrayJobId", "ArrayTaskId"))


def logs_of(root, job: str) -> str:
    return " | ".join(p.read_text()[-600:] for p in sorted((root / "studies" / "tiny" / "logs").glob(f"*{job}_*")))


def test_array_of_two_cpu_workers_finishes_the_study_after_scancel_of_one_task(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root,
                             budget={"n_trials": N_TRIALS, "epochs": 4, "steps_per_epoch": 4})
    root = tmp_path / "runs"
    with slurm_or_skip() as cluster:
        env = cluster.env(OMP_NUM_THREADS="1")
        t0 = time.monotonic()
        r = subprocess.run(cli("study", "submit", str(study_file), "--slurm", "--workers", "2",
                               "--gpus-per-worker", "0", "--root", str(root), "--storage", journal(root),
                               "--tracking-uri", "off"), capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        job = re.search(r"submitted Slurm job (\d+): 2 array task\(s\) x 1 worker\(s\), CPU", r.stdout).group(1)
        assert "is on a node-local path" in r.stdout  # pytest's tmp dir is under /tmp
        study = open_study(journal(root), "tiny")

        def mid_trial():  # a trial that has finished an epoch and has epochs to go
            if not cluster.queue():
                raise AssertionError("the job ended before any trial trained: " + logs_of(root, job))
            return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if len(t.intermediate_values) == 1]
        victim = wait_for(mid_trial, timeout=240, what="a trial in training")[0]
        task = array_task_of(cluster, int(TrialRecord.of(victim).worker.rpartition(":")[2]))
        cluster.run("scancel", task)
        cancelled_at = time.monotonic()
        wait_for(lambda: study.get_trials(deepcopy=False)[victim.number].state != TrialState.RUNNING,
                 timeout=60, what="the cancelled task's trial to leave RUNNING")
        requeued_in = time.monotonic() - cancelled_at
        wait_for(lambda: not cluster.queue(), timeout=400, what="the job array to end: " + logs_of(root, job))
        seconds = time.monotonic() - t0

        trials = study.get_trials(deepcopy=False)
        t = tally(trials)
        assert (t.complete, t.running, t.waiting, t.failed) == (N_TRIALS, 0, 0, 0)
        assert t.retried == {victim.number}
        lost = trials[victim.number]
        assert lost.state == TrialState.FAIL
        assert re.fullmatch(r"interrupted \(Ctrl-C or SIGTERM\) after 1 epochs; re-queued", TrialRecord.of(lost).fail_reason)
        rerun = [x for x in trials if TrialRecord.of(x).retry_of == victim.number]
        assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE and rerun[0].params == victim.params
        assert TrialRecord.of(rerun[0]).worker != TrialRecord.of(victim).worker

        logs = root / "studies" / "tiny" / "logs"
        texts = {p.name: p.read_text() for p in logs.glob(f"slurm-{job}_*.out")}
        assert sorted(texts) == [f"slurm-{job}_0.out", f"slurm-{job}_1.out"]
        assert sum(f"trial {victim.number} interrupted; re-queued" in x for x in texts.values()) == 1

        r = subprocess.run(cli("study", "status", "tiny", "--storage", journal(root), "--json"), capture_output=True,
                           text=True, env=env, timeout=120)
        slurm = json.loads(r.stdout)["slurm"]
        assert [(j["job_id"], j["workers"], j["source"]) for j in slurm] == [(job, 2, "scontrol")]
        assert sorted(slurm[0]["tasks"].values()) == ["CANCELLED", "COMPLETED"]
        r = subprocess.run(cli("study", "status", "tiny", "--storage", journal(root)), capture_output=True,
                           text=True, env=env, timeout=120)
        shown = re.search(rf"slurm job {job} \(2 array tasks, submitted [-0-9: ]+\): "
                          r"(CANCELLED 1 \[\d\], COMPLETED 1 \[\d\]|COMPLETED 1 \[\d\], CANCELLED 1 \[\d\])", r.stdout)
        assert shown, r.stdout
        print(f"\nslurm: {N_TRIALS} trials complete, trial {victim.number} re-run as trial {rerun[0].number} after "
              f"scancel of task job {task} (re-queued {requeued_in:.1f}s after scancel); daemons up in "
              f"{cluster.started_in:.1f}s; submit to last task end {seconds:.0f}s\n{shown.group(0)}")
