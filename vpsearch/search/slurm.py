"""`vpsearch study submit STUDY.yaml --slurm`: a study's workers as one Slurm job array.

Slurm does what it already does well: allocate GPUs, queue, requeue preempted tasks, show
job state. vpsearch creates (or joins) the study exactly as `study create` does, writes an
sbatch script for N array tasks, each running P = max(G, 1) x K `vpsearch worker`
processes (G GPUs per task, K trials per GPU), submits it and records the job id on the study.

- Storage: PostgreSQL, or the journal file on a filesystem every node mounts (checked
  here, from /proc/mounts, and said). SQLite is refused (one writer).
- The storage and tracking URLs travel in the job's environment (sbatch --export=ALL),
  never in the script or in argv, so a password shows neither in `ps` nor in squeue.
- Devices: with PostgreSQL each worker claims a GPU slot with `--device cuda:free`
  (gpus.py); a journal has no advisory locks, so worker i of a task takes GPU i mod G of
  the GPUs Slurm gave that task.
- scancel / preemption signal every process of the job (SIGTERM, then SIGKILL after
  KillWait): each worker re-queues its running trial and exits; the batch shell forwards a
  TERM sent to it alone and waits for them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vpsearch import settings
from vpsearch.search.plan import StudyPlan, load_study
from vpsearch.search.slurm_jobs import record_slurm_job
from vpsearch.search.spec import StudyError
from vpsearch.search.storage import parse_url

# file systems that every node of a cluster typically mounts (the journal must be on one)
SHARED_FS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "fuse.ceph", "glusterfs",
             "fuse.glusterfs", "cifs", "smb3", "panfs", "wekafs", "fuse.sshfs", "orangefs", "pvfs2"}
NODE_LOCAL_FS = {"tmpfs", "ramfs", "devtmpfs", "overlay", "squashfs"}
NODE_LOCAL_PATHS = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/scratch/local", "/local")
# sbatch's short options, so that an --sbatch-arg replaces the line it overrides
SHORT = {"-p": "--partition", "-t": "--time", "-A": "--account", "-G": "--gpus", "-c": "--cpus-per-task",
         "-o": "--output", "-J": "--job-name", "-a": "--array", "-D": "--chdir", "-n": "--ntasks"}
GPU_OPTIONS = {"--gres", "--gpus", "--gpus-per-task", "--gpus-per-node"}


@dataclass
class SubmitOptions:
    study_file: str
    workers: int | None = None  # array tasks (default: the study's workers)
    gpus_per_worker: int | None = None  # default 0 for a `devices: cpu` study, else 1
    trials_per_device: int = 1
    cpus_per_task: int | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    sbatch_args: list[str] = field(default_factory=list)
    dry_run: bool = False
    storage: str | None = None
    tracking_uri: str | None = None
    root: str | None = None
    storage_wait: float = 60.0


@dataclass
class JobPlan:
    """Everything the sbatch script says; render_script() is a pure function of it."""

    study: str
    tasks: int
    gpus: int
    per_device: int
    root: Path
    workdir: Path
    python: str
    claim: bool  # PostgreSQL: workers claim GPU slots with cuda:free
    cpus_per_task: int | None = None
    partition: str | None = None
    time: str | None = None
    account: str | None = None
    extra: list[str] = field(default_factory=list)
    storage_wait: float = 60.0

    @property
    def processes(self) -> int:
        """Worker processes in each array task."""
        return max(1, self.gpus) * self.per_device

    @property
    def log_dir(self) -> Path:
        return settings.study_dir(self.study, self.root) / "logs"


def _option(arg: str) -> str:
    name = arg.split("=", 1)[0].split(" ", 1)[0]
    name = SHORT.get(name[:2], name) if not name.startswith("--") else name
    return "--gpus" if name in GPU_OPTIONS else name


def sbatch_lines(job: JobPlan) -> list[str]:
    """The #SBATCH options; an extra argument replaces the generated option of the same name."""
    opts = [f"--job-name=vpsearch-{job.study}", f"--array=0-{job.tasks - 1}", "--ntasks=1"]
    cpus = job.cpus_per_task or (job.processes if job.processes > 1 else None)
    if cpus:
        opts.append(f"--cpus-per-task={cpus}")
    if job.gpus:
        opts.append(f"--gres=gpu:{job.gpus}")
    opts += [f"--{k}={v}" for k, v in (("partition", job.partition), ("time", job.time), ("account", job.account))
             if v]
    # requeue: Slurm restarts a preempted task or one whose node failed; append: a requeued task
    # continues its log instead of overwriting it
    opts += ["--requeue", "--open-mode=append", f"--output={job.log_dir}/slurm-%A_%a.out",
             f"--chdir={job.workdir}", "--export=ALL"]
    replaced = {_option(a) for a in job.extra}
    return [o for o in opts if _option(o) not in replaced] + list(job.extra)


def worker_command(job: JobPlan) -> str:
    if job.gpus == 0:
        device = "cpu"
    elif job.claim:
        device = "cuda:free" + (f" --trials-per-device {job.per_device}" if job.per_device > 1 else "")
    else:
        device = f'"cuda:$((i % {job.gpus}))"' if job.gpus > 1 else "cuda:0"
    return (f"{shlex.quote(job.python)} -m vpsearch.cli worker --study {shlex.quote(job.study)} "
            f"--root {shlex.quote(str(job.root))} --device {device} --threads \"$THREADS\" "
            f"--storage-wait {job.storage_wait:g}")


def render_script(job: JobPlan, written: str = "") -> str:
    gpus = f"{job.gpus} GPU(s) x {job.per_device} trial(s) per GPU" if job.gpus else "CPU workers"
    devices = ("each claims a free GPU slot of this task (--device cuda:free, locks in PostgreSQL)" if job.claim
               else "worker i takes GPU i mod G of this task (a journal storage has no locks to claim with)")
    lines = ["#!/bin/bash",
             f"# vpsearch study {job.study}: {job.tasks} array task(s), each {job.processes} worker(s) ({gpus})."
             + (f" Written by `vpsearch study submit` {written}." if written else ""),
             "# Resubmit with `vpsearch study submit ... --slurm` (or sbatch this file with VPSEARCH_STORAGE set)."]
    lines += [f"#SBATCH {o}" for o in sbatch_lines(job)]
    lines += [
        "",
        "# The storage (and tracking) URL comes from the environment sbatch exported, never from this",
        "# file or a command line: a password in it shows neither in `ps` nor in squeue.",
        ': "${VPSEARCH_STORAGE:?VPSEARCH_STORAGE is not set: submit with vpsearch study submit --slurm}"',
        f"WORKERS={job.processes}",
        'THREADS=$(( ${SLURM_CPUS_PER_TASK:-1} / WORKERS )); [ "$THREADS" -ge 1 ] || THREADS=1',
        "export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS",
        'echo "$(date -Is) task ${SLURM_ARRAY_TASK_ID:-?} of job ${SLURM_ARRAY_JOB_ID:-?} on $(hostname):'
        ' $WORKERS worker(s), $THREADS thread(s) each, GPUs ${CUDA_VISIBLE_DEVICES:-none}"',
    ]
    if job.gpus:
        lines.append(f"# devices: {devices}")
    lines += [
        "pids=()",
        "for i in $(seq 0 $((WORKERS - 1))); do",
        f"  {worker_command(job)} &",
        "  pids+=($!)",
        "done",
        "# scancel and preemption send SIGTERM to every process of the job, then SIGKILL after",
        "# KillWait: each worker re-queues its running trial and exits (a second TERM is ignored).",
        "# Forward a TERM sent to this shell alone (scancel --batch) and wait for the workers.",
        "trap 'kill -TERM \"${pids[@]}\" 2>/dev/null' TERM INT",
        "status=0",
        'for pid in "${pids[@]}"; do',
        '  while :; do wait "$pid"; rc=$?; kill -0 "$pid" 2>/dev/null || break; done',
        '  [ "$rc" -eq 0 ] || status=$rc',
        "done",
        "exit $status",
    ]
    return "\n".join(lines) + "\n"


# --- where the storage lives
def mounts(text: str | None = None) -> list[tuple[str, str]]:
    """(mount point, fs type) of /proc/mounts, longest mount point first."""
    if text is None:
        try:
            text = Path("/proc/mounts").read_text()
        except OSError:
            return []
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3:
            out.append((f[1].encode().decode("unicode_escape"), f[2]))  # \040 is a space
    return sorted(out, key=lambda m: len(m[0]), reverse=True)


def filesystem_kind(path: Path, table: list[tuple[str, str]]) -> tuple[str, str]:
    """-> ('shared' | 'node-local' | 'local-disk', fs type) of the file system holding path."""
    p = str(path)
    fstype = next((t for mp, t in table if p == mp or p.startswith(mp.rstrip("/") + "/")), "unknown")
    if fstype in SHARED_FS:
        return "shared", fstype
    if fstype in NODE_LOCAL_FS or any(p == d or p.startswith(d + "/") for d in NODE_LOCAL_PATHS):
        return "node-local", fstype
    return "local-disk", fstype


def storage_notes(url: str, root: Path, tracking: str, table: list[tuple[str, str]] | None = None) -> list[str]:
    """What the nodes need to share, said once; 'warning:' lines for what looks node-local."""
    table = mounts() if table is None else table
    kind, target = parse_url(url)
    if kind == "sqlite":
        raise StudyError(f"storage {settings.redact(url)}: SQLite takes one writer; Slurm workers need "
                         "PostgreSQL (--storage postgresql://...) or a journal file on a shared filesystem")
    notes, root = [], root.resolve()
    if kind == "rdb":
        notes.append(f"storage: {settings.redact(url)} (every node must reach it; workers claim GPUs in it)")
    else:
        path = Path(target).expanduser().resolve()
        where, fstype = filesystem_kind(path, table)
        if where == "shared":
            notes.append(f"storage: journal file {path} on {fstype}, shared by the nodes")
        elif where == "node-local":
            notes.append(f"warning: the journal {path} is on a node-local path ({fstype}): workers on other "
                         "nodes would not see it; put it on a shared filesystem (--root or --storage "
                         "journal:/shared/...) or use PostgreSQL, unless the job runs on this node only")
        else:
            notes.append(f"warning: the journal {path} is on {fstype}, not a network filesystem: every node "
                         "must see this path (a shared mount), or use PostgreSQL")
        if path.is_relative_to(root):
            root = None  # said above: the logs and trial folders share the journal's filesystem
    if root is not None and filesystem_kind(root, table)[0] != "shared":
        notes.append(f"note: logs and trial folders go under {root}, which looks node-local: each node "
                     "writes its own there")
    if tracking.startswith("sqlite:"):
        notes.append("note: tracking is the embedded SQLite MLflow store; for workers on several nodes run an "
                     "MLflow server (MLFLOW_TRACKING_URI=http://...) or --tracking-uri off")
    return notes


def job_plan(plan: StudyPlan, opts: SubmitOptions, root: Path, url: str) -> JobPlan:
    tasks = opts.workers or plan.spec.workers
    gpus = opts.gpus_per_worker if opts.gpus_per_worker is not None else (0 if plan.spec.devices == "cpu" else 1)
    for name, value, low in (("--workers", tasks, 1), ("--gpus-per-worker", gpus, 0),
                             ("--trials-per-device", opts.trials_per_device, 1)):
        if value < low:
            raise StudyError(f"{name} {value}: expected {low} or more")
    for a in opts.sbatch_args:
        if not a.startswith("-") or "\n" in a:
            raise StudyError(f"--sbatch-arg {a!r}: expected one sbatch option such as --mem=16G or --qos=long")
    for p in (root, Path.cwd()):
        if any(c.isspace() for c in str(p)):
            raise StudyError(f"{p}: #SBATCH lines cannot hold a path with spaces; use --root elsewhere")
    return JobPlan(plan.name, tasks, gpus, opts.trials_per_device, root, Path.cwd(), sys.executable,
                   claim=parse_url(url)[0] == "rdb", cpus_per_task=opts.cpus_per_task, partition=opts.partition,
                   time=opts.time, account=opts.account, extra=list(opts.sbatch_args),
                   storage_wait=opts.storage_wait)


def sbatch(script: Path, env: dict[str, str]) -> str:
    """Submit; -> the job id."""
    r = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise StudyError(f"sbatch refused {script}: {why}")
    return r.stdout.strip().split(";", 1)[0]


def submit(opts: SubmitOptions) -> int:
    import optuna

    from vpsearch.search.launcher import prepare_study
    from vpsearch.search.recovery import tally
    from vpsearch.search.storage import open_storage, study_names

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = load_study(opts.study_file)
    root = settings.runs_root(opts.root)
    url = settings.storage_url(opts.storage, root)
    tracking = settings.tracking_uri(opts.tracking_uri, root)
    job = job_plan(plan, opts, root, url)
    notes = storage_notes(url, root, tracking)
    if opts.dry_run:
        for n in notes:
            print(f"# {n}")
        print(f"# dry run: nothing created or submitted; the script would go to "
              f"{settings.study_dir(plan.name, root) / 'slurm'}/")
        print(render_script(job), end="")
        return 0
    if shutil.which("sbatch") is None:
        raise StudyError("sbatch is not on PATH: submit from a Slurm login node (--dry-run prints the script)")
    store = open_storage(url, workers=job.tasks * job.processes, failure=plan.spec.failure, wait=opts.storage_wait)
    existed = plan.name in study_names(store)
    study = prepare_study(plan, store, tracking, str(root))
    from vpsearch.data.builtin import resolve_root
    resolve_root(plan.base.data.root)  # built-in data made once here, not raced for by every task
    stamp = time.strftime("%Y%m%d-%H%M%S")
    script = settings.study_dir(plan.name, root) / "slurm" / f"job-{stamp}.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    job.log_dir.mkdir(parents=True, exist_ok=True)
    script.write_text(render_script(job, time.strftime("%Y-%m-%d %H:%M:%S")))
    env = {**os.environ, "VPSEARCH_STORAGE": url, "MLFLOW_TRACKING_URI": tracking}
    job_id = sbatch(script, env)
    record_slurm_job(study, store, {"job_id": job_id, "submitted": time.strftime("%Y-%m-%d %H:%M:%S"),
                                    "workers": job.tasks, "script": str(script)})
    t = tally(study.get_trials(deepcopy=False))
    print(f"study {plan.name} {'found' if existed else 'created'} in {store.shown}: {plan.n_trials} trials "
          f"({t.finished} finished), sampler {plan.spec.sampler.name}, pruner {plan.spec.pruner.name}")
    for n in notes:
        print(n)
    print(f"submitted Slurm job {job_id}: {job.tasks} array task(s) x {job.processes} worker(s)"
          + (f", {job.gpus} GPU(s) each" if job.gpus else ", CPU") + f"; script {script}")
    storage_flag = "" if opts.storage is None else " --storage URL"
    print("follow it:\n"
          f"  squeue -j {job_id} -r                       # array task states\n"
          f"  vpsearch study status {plan.name}{storage_flag}   # trials, and the job's tasks\n"
          f"  tail -f {job.log_dir}/slurm-{job_id}_*.out\n"
          f"stop it: scancel {job_id} (running trials are re-queued; submit again to continue)")
    return 0
