"""The Slurm jobs of a study: the record on the study, and their array tasks' states.

`vpsearch study submit --slurm` records each job it submits in the study's record
(StudyRecord.slurm_jobs, a list of {job_id, submitted, workers, script}); `vpsearch study status`
reads it back and asks Slurm where each array task stands. sacct knows every task when the
cluster keeps accounting; without it (no slurmdbd) `scontrol show job` knows pending,
running and recently ended tasks (for MinJobAge, 300 s by default), which is what squeue
shows too. The parsers are pure; only ``job_states`` runs a command.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import optuna

from vpsearch.search.records import StudyRecord, write_study
from vpsearch.search.storage import StudyStorage

def record_slurm_job(study: optuna.Study, store: StudyStorage, job: dict[str, Any]) -> None:
    jobs = (StudyRecord.of(study).slurm_jobs or []) + [job]
    store.call(lambda: write_study(study, slurm_jobs=jobs), "recording the Slurm job")


# --- task ids: "0-7%2", "[2-7]", "0,3-5"
def expand_tasks(spec: str) -> list[int]:
    """Array task ids of a Slurm task list ('[0,3-5]', '0-7%2': the throttle after % is dropped)."""
    spec = spec.strip().strip("[]").split("%", 1)[0]
    out: list[int] = []
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def compress_tasks(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    ids = sorted(set(ids))
    parts, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


# --- what Slurm says
def parse_sacct(text: str, job_id: str) -> dict[int, str]:
    """`sacct -X -n -P -o JobID,State -j JOB` -> {task: STATE}; lines are '123_4|RUNNING',
    '123_[5-7]|PENDING', '123_1|CANCELLED by 0'."""
    states: dict[int, str] = {}
    for line in text.splitlines():
        jid, _, state = line.strip().partition("|")
        head, _, tasks = jid.partition("_")
        if head != job_id or not tasks or not state:
            continue
        for t in expand_tasks(tasks):
            states[t] = state.split()[0]
    return states


def parse_scontrol(text: str) -> dict[int, str]:
    """`scontrol -o show job JOB` (one record per line) -> {task: STATE or 'PENDING (Reason)'}."""
    states: dict[int, str] = {}
    for line in text.splitlines():
        task = re.search(r"\bArrayTaskId=(\S+)", line)
        state = re.search(r"\bJobState=(\S+)", line)
        if not task or not state:
            continue
        reason = re.search(r"\bReason=(\S+)", line)
        shown = state.group(1)
        if shown == "PENDING" and reason and reason.group(1) != "None":
            shown += f" ({reason.group(1)})"
        for t in expand_tasks(task.group(1)):
            states[t] = shown
    return states


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def job_states(job_id: str) -> tuple[dict[int, str], str]:
    """-> ({array task: state}, where it came from or why it is empty)."""
    r = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id])
    if r is not None and r.returncode == 0:
        states = parse_sacct(r.stdout, job_id)
        if states:
            return states, "sacct"
    r = _run(["scontrol", "-o", "show", "job", job_id])
    if r is None:
        return {}, "Slurm's commands (sacct, scontrol) are not found here: run this on the cluster"
    if r.returncode == 0:
        states = parse_scontrol(r.stdout)
        if states:
            return states, "scontrol"
    return {}, ("no longer known to Slurm (ended; without accounting, slurmctld forgets a job "
                "MinJobAge after it ends)")


def summarize(states: dict[int, str]) -> str:
    """{0: RUNNING, 1: RUNNING, 2: PENDING (Resources)} -> 'RUNNING 2 [0-1], PENDING (Resources) 1 [2]'."""
    by: dict[str, list[int]] = {}
    for task, state in sorted(states.items()):
        by.setdefault(state, []).append(task)
    return ", ".join(f"{s} {len(t)} [{compress_tasks(t)}]" for s, t in by.items())


def status_lines(jobs: list[dict[str, Any]]) -> list[str]:
    """One line per submitted job, with its array tasks' states."""
    out = []
    for job in jobs:
        states, source = job_states(str(job["job_id"]))
        head = (f"slurm job {job['job_id']} ({job.get('workers', '?')} array tasks, "
                f"submitted {job.get('submitted', '?')})")
        out.append(f"{head}: {summarize(states)}" if states else f"{head}: {source}")
    return out


def status_json(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for job in jobs:
        states, source = job_states(str(job["job_id"]))
        out.append({**job, "tasks": {str(k): v for k, v in sorted(states.items())}, "source": source})
    return out
