"""`vpsearch study submit --slurm` without a cluster: the sbatch script (rendered, then run by
bash with a stand-in for python), the storage checks, the job record and the parsers of what
Slurm says. The real cluster is in test_slurm_cluster.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from test_study_run import cli, journal, write_study

from vpsearch.search import slurm_jobs as sj
from vpsearch.search.records import StudyRecord
from vpsearch.search.slurm import JobPlan, filesystem_kind, mounts, render_script, sbatch_lines, storage_notes
from vpsearch.search.spec import StudyError
from vpsearch.search.storage import open_storage

PG = "postgresql://vp:s3cret@db.example:5432/optuna"
MOUNTS = mounts("""/dev/vda / ext4 rw 0 0
tmpfs /tmp tmpfs rw 0 0
nas:/export /shared nfs4 rw 0 0
fs0 /lus lustre rw 0 0
/dev/vdb /data\\040disk xfs rw 0 0
""")


def job(tmp_path: Path, **kw) -> JobPlan:
    args = dict(study="s1", tasks=2, gpus=0, per_device=1, root=tmp_path / "runs", workdir=tmp_path,
                python=sys.executable, claim=False)
    return JobPlan(**{**args, **kw})


def test_cpu_script_is_an_array_with_requeue_logs_under_the_study_and_no_secret(tmp_path):
    script = render_script(job(tmp_path))
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    opts = [ln[len("#SBATCH "):] for ln in script.splitlines() if ln.startswith("#SBATCH ")]
    assert opts == ["--job-name=vpsearch-s1", "--array=0-1", "--ntasks=1", "--requeue", "--open-mode=append",
                    f"--output={tmp_path}/runs/studies/s1/logs/slurm-%A_%a.out", f"--chdir={tmp_path}",
                    "--export=ALL"]
    assert "--device cpu" in script and "WORKERS=1\n" in script
    assert "VPSEARCH_STORAGE" in script and "postgresql" not in script and "--storage " not in script


def test_gpu_options_and_extra_sbatch_args_replace_the_generated_ones(tmp_path):
    j = job(tmp_path, tasks=8, gpus=2, per_device=2, claim=True, partition="gpu", time="1-00:00:00",
            account="lab", extra=["--gres=gpu:a100:2", "-p long", "--mem=32G"])
    lines = sbatch_lines(j)
    assert "--array=0-7" in lines and "--cpus-per-task=4" in lines  # 2 GPUs x 2 trials: 4 workers, a core each
    assert "--gres=gpu:2" not in lines and "--partition=gpu" not in lines  # replaced by the user's
    assert lines[-3:] == ["--gres=gpu:a100:2", "-p long", "--mem=32G"]
    assert "--time=1-00:00:00" in lines and "--account=lab" in lines
    script = render_script(j)
    assert "WORKERS=4\n" in script and "--device cuda:free --trials-per-device 2 " in script


def fake_python(tmp_path: Path) -> Path:
    """Stands in for `python -m vpsearch.cli worker ...`: logs its argv and the TERMs it gets,
    takes 1 s to 're-queue' after a TERM, exits 130 like the worker."""
    p = tmp_path / "python"
    p.write_text(f"""#!{sys.executable}
import os, signal, sys, time
log = open({str(tmp_path / 'calls.log')!r}, "a", buffering=1)
log.write(" ".join(sys.argv[1:]) + " threads=" + os.environ["OMP_NUM_THREADS"] + "\\n")
def term(*_):
    log.write(f"TERM {{os.getpid()}}\\n"); time.sleep(1); log.write(f"requeued {{os.getpid()}}\\n"); sys.exit(130)
signal.signal(signal.SIGTERM, term)
open({str(tmp_path / 'ready')!r} + str(os.getpid()), "w").close()
time.sleep(60)
""")
    p.chmod(0o755)
    return p


def test_script_starts_g_times_k_workers_and_a_term_to_the_shell_waits_for_their_requeue(tmp_path):
    """Journal storage, 2 GPUs x 2 trials: worker i takes GPU i mod 2; the shell forwards TERM and
    only exits once every worker has finished re-queueing."""
    j = job(tmp_path, gpus=2, per_device=2, python=str(fake_python(tmp_path)))
    path = tmp_path / "job.sbatch"
    path.write_text(render_script(j))
    env = {**os.environ, "VPSEARCH_STORAGE": "journal:/x", "SLURM_CPUS_PER_TASK": "8"}
    shell = subprocess.Popen(["bash", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    end = time.monotonic() + 30
    while len(list(tmp_path.glob("ready*"))) < 4 and time.monotonic() < end:
        time.sleep(0.1)
    shell.send_signal(signal.SIGTERM)
    out, _ = shell.communicate(timeout=30)
    assert shell.returncode == 130, out
    calls = (tmp_path / "calls.log").read_text().splitlines()
    starts = sorted(c for c in calls if c.startswith("-m vpsearch.cli worker"))
    devices = sorted(c.split("--device ")[1].split()[0] for c in starts)
    assert devices == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]
    assert all(c.endswith("--threads 2 --storage-wait 60 threads=2") for c in starts)  # 8 cores / 4 workers
    assert sum(c.startswith("requeued") for c in calls) == 4  # all finished before the shell exited


def test_missing_storage_variable_stops_the_task_with_one_line(tmp_path):
    path = tmp_path / "job.sbatch"
    path.write_text(render_script(job(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k != "VPSEARCH_STORAGE"}
    r = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "VPSEARCH_STORAGE is not set" in r.stderr


def test_filesystems_are_classified_from_the_mount_table():
    assert filesystem_kind(Path("/shared/runs/j.log"), MOUNTS) == ("shared", "nfs4")
    assert filesystem_kind(Path("/lus/x"), MOUNTS) == ("shared", "lustre")
    assert filesystem_kind(Path("/tmp/j.log"), MOUNTS) == ("node-local", "tmpfs")
    assert filesystem_kind(Path("/var/tmp/j.log"), MOUNTS) == ("node-local", "ext4")
    assert filesystem_kind(Path("/home/me/j.log"), MOUNTS) == ("local-disk", "ext4")
    assert filesystem_kind(Path("/data disk/j.log"), MOUNTS) == ("local-disk", "xfs")


def test_storage_notes_say_what_the_nodes_must_share():
    shared = storage_notes("journal:/shared/runs/optuna-journal.log", Path("/shared/runs"), "off", MOUNTS)
    assert shared == ["storage: journal file /shared/runs/optuna-journal.log on nfs4, shared by the nodes"]
    local = storage_notes("journal:/tmp/j.log", Path("/tmp"), "sqlite:////tmp/mlflow.db", MOUNTS)
    assert local[0].startswith("warning: the journal /tmp/j.log is on a node-local path (tmpfs)")
    assert "MLflow server" in local[1]
    pg = storage_notes(PG, Path("/home/me/runs"), "http://mlflow:5000", MOUNTS)
    assert pg[0] == "storage: postgresql://vp:***@db.example:5432/optuna (every node must reach it; " \
                    "workers claim GPUs in it)"
    assert pg[1].startswith("note: logs and trial folders go under /home/me/runs, which looks node-local")
    with pytest.raises(StudyError, match="SQLite takes one writer"):
        storage_notes("sqlite:////shared/o.db", Path("/shared"), "off", MOUNTS)


def test_a_slurm_cluster_that_cannot_start_skips_with_why_and_fails_when_required(monkeypatch):
    import slurm_cluster

    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda name, path=None: None)
    monkeypatch.delenv("VPSEARCH_REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no Slurm test cluster: not installed: munged, slurmctld"):
        with slurm_cluster.slurm_or_skip():
            pass
    monkeypatch.setenv("VPSEARCH_REQUIRE_SLURM", "1")
    with pytest.raises(pytest.fail.Exception, match=r"not installed: .* \(VPSEARCH_REQUIRE_SLURM=1\)"):
        with slurm_cluster.slurm_or_skip():
            pass


def test_task_lists_and_slurm_outputs_parse():
    assert sj.expand_tasks("[0,3-5]") == [0, 3, 4, 5]
    assert sj.expand_tasks("0-7%2") == list(range(8))
    assert sj.compress_tasks([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    sacct = "12_0|COMPLETED\n12_1|CANCELLED by 0\n12_[2-3]|PENDING\n13_0|RUNNING\n"
    assert sj.parse_sacct(sacct, "12") == {0: "COMPLETED", 1: "CANCELLED", 2: "PENDING", 3: "PENDING"}
    scontrol = ("JobId=14 ArrayJobId=12 ArrayTaskId=1 JobName=x JobState=RUNNING Reason=None Dependency=(null)\n"
                "JobId=12 ArrayJobId=12 ArrayTaskId=2-4%2 JobName=x JobState=PENDING Reason=Resources\n")
    states = sj.parse_scontrol(scontrol)
    assert states == {1: "RUNNING", 2: "PENDING (Resources)", 3: "PENDING (Resources)", 4: "PENDING (Resources)"}
    assert sj.summarize(states) == "RUNNING 1 [1], PENDING (Resources) 3 [2-4]"


def test_job_record_round_trip_and_status_without_slurm_commands(tmp_path, monkeypatch):
    store = open_storage(journal(tmp_path))
    study = optuna.create_study(study_name="s1", storage=store.storage)
    assert (StudyRecord.of(study).slurm_jobs or []) == []
    sj.record_slurm_job(study, store, {"job_id": "7", "submitted": "2026-01-01 10:00:00", "workers": 2})
    sj.record_slurm_job(study, store, {"job_id": "9", "submitted": "2026-01-02 10:00:00", "workers": 4})
    again = optuna.load_study(study_name="s1", storage=open_storage(journal(tmp_path)).storage)
    assert [j["job_id"] for j in (StudyRecord.of(again).slurm_jobs or [])] == ["7", "9"]
    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct, no scontrol
    assert sj.status_lines((StudyRecord.of(again).slurm_jobs or []))[0] == (
        "slurm job 7 (2 array tasks, submitted 2026-01-01 10:00:00): Slurm's commands (sacct, scontrol) are not "
        "found here: run this on the cluster")


def test_dry_run_prints_the_script_and_creates_nothing(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root, devices="auto")
    r = subprocess.run(cli("study", "submit", str(study_file), "--slurm", "--workers", "3", "--dry-run",
                           "--root", str(tmp_path / "runs")), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "#SBATCH --array=0-2" in r.stdout and "#SBATCH --gres=gpu:1" in r.stdout  # devices: auto -> 1 GPU
    assert "# warning: the journal" in r.stdout and "# dry run: nothing created or submitted" in r.stdout
    assert not (tmp_path / "runs").exists()


def test_submit_refuses_without_slurm_flag_or_sbatch_before_touching_the_storage(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root)
    r = subprocess.run(cli("study", "submit", str(study_file), "--root", str(tmp_path / "runs")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == ("vpsearch: error: study submit: give --slurm (the one "
                                                      "scheduler vpsearch submits to)")
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    r = subprocess.run(cli("study", "submit", str(study_file), "--slurm", "--root", str(tmp_path / "runs")),
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "sbatch is not on PATH: submit from a Slurm login node" in r.stderr
    assert not (tmp_path / "runs").exists()
    r = subprocess.run(cli("study", "submit", str(study_file), "--slurm", "--dry-run", "--sbatch-arg", "mem=4G"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--sbatch-arg 'mem=4G': expected one sbatch option" in r.stderr
