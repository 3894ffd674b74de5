"""Checkpoint retention of a study's trial folders, and the disk a study will take.

The study's `checkpoints: {keep, top_k}` (spec.CheckpointPolicy) says what stays once a trial
has ended; ``sweep`` applies it to every trial folder after each trial (any worker, idempotent):

- a running trial, and a trial whose worker died and that will be re-run, keep everything:
  the re-run continues from last.pt in the same folder;
- a completed trial keeps best.pt while it ranks in the study's top_k by the objective
  (keep best/both), and last.pt only with keep last/both;
- a pruned or failed trial, and one lost for good, keep nothing: it can never be resumed.
The MLflow copies follow the same top_k (tracking/retention.py), as hard links into the
embedded store's artifact folder where that is on the same file system.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from vpsearch import settings
from vpsearch.search.records import TrialRecord
from vpsearch.search.spec import CheckpointPolicy

BEST, LAST = "best.pt", "last.pt"
OUTPUTS_PER_TRIAL = 1.2e6  # bytes of metrics, per-frame CSVs, plots and the GIF of one trial (pushing-small)


def _kept(policy: CheckpointPolicy, trial: FrozenTrial, top: set[int], final: bool) -> set[str]:
    if not final:
        return {BEST, LAST}
    if trial.state != TrialState.COMPLETE:
        return set()
    keep = set()
    if policy.keep in ("best", "both") and trial.number in top:
        keep.add(BEST)
    if policy.keep in ("last", "both"):
        keep.add(LAST)
    return keep


def top_trials(trials: list[FrozenTrial], k: int, maximize: bool) -> set[int]:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    done.sort(key=lambda t: (t.values[0] if maximize else -t.values[0], -t.number), reverse=True)
    return {t.number for t in done[:k]}


def sweep(study: optuna.Study, policy: CheckpointPolicy, root: str | Path | None) -> list[Path]:
    """Delete the checkpoint files the policy no longer keeps; returns the files deleted.

    A folder may hold several attempts of one trial (a re-run continues its dead attempt's run
    there): the latest attempt decides. A failed attempt with a re-run queued keeps everything.
    """
    trials = study.get_trials(deepcopy=False)
    rerun = {TrialRecord.of(t).retry_of for t in trials}
    # ranked by the first objective (a multi-objective study puts val PSNR or its like first)
    top = top_trials(trials, policy.top_k, study.directions[0] == optuna.study.StudyDirection.MAXIMIZE)
    latest: dict[str, FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: t.number):
        rec = TrialRecord.of(t)
        if rec.run_dir:
            latest[rec.run_dir] = t
    deleted = []
    for run_dir, t in latest.items():
        rec = TrialRecord.of(t)
        final = t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and t.number not in rerun
        folder = settings.under_root(run_dir, root) / "checkpoints"
        for name in {BEST, LAST} - _kept(policy, t, top, final):
            path = folder / name
            if path.is_file():
                path.unlink(missing_ok=True)
                deleted.append(path)
    return deleted


@dataclass
class DiskEstimate:
    params: int  # model parameters of the base config
    weights: int  # bytes of best.pt
    resume: int  # bytes of last.pt
    kept: int  # bytes kept at the budget
    peak: int  # bytes while the last trials run
    lines: list[str]

    def text(self) -> str:
        return "; ".join(self.lines)


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB" if n < 1e9 else f"{n / 1e9:.1f} GB"


def estimate(plan, workers: int) -> DiskEstimate:
    """Disk the study takes at its budget, from the model's parameter count and what retention keeps."""
    from vpsearch.data.bair import CSV_COLUMNS, CSV_KIND
    from vpsearch.models import DataShape, build_model

    cfg = plan.base
    # BAIR's actions + positions (both CSVs assumed: a few weights either way); no data is read
    parts = tuple((CSV_KIND[c], w) for c, w in CSV_COLUMNS.items()) if cfg.data.format == "bair" else ()
    shape = DataShape(3, cfg.data.height, cfg.data.width, sum(w for _, w in parts),
                      3 if cfg.data.format == "dance" else 0, cond_parts=parts)
    params = sum(p.numel() for p in build_model(cfg.model, shape).parameters())
    weights = params * 4 + 200_000  # fp32 weights, plus config and history
    moments = {"adam": 2, "adamw": 2, "sgd": 1}[cfg.optim.name]
    resume = params * 4 * (1 + moments) + 200_000
    policy, n = plan.spec.checkpoints, plan.n_trials
    kept_best = min(policy.top_k, n) * weights if policy.keep in ("best", "both") else 0
    kept_last = n * resume if policy.keep in ("last", "both") else 0
    outputs = n * OUTPUTS_PER_TRIAL
    running = min(workers, n) * (weights + resume)
    kept = kept_best + kept_last + int(outputs)
    lines = [f"{params / 1e6:.1f}M parameters: best.pt {_mb(weights)}, last.pt {_mb(resume)}",
             f"kept at the budget: {_mb(kept)} (keep {policy.keep}, top_k {policy.top_k}: {_mb(kept_best + kept_last)} "
             f"of checkpoints; {n} trials' plots, GIFs and CSVs {_mb(outputs)})",
             f"while {min(workers, n)} trial(s) run: {_mb(running)} more"]
    return DiskEstimate(params, weights, resume, kept, kept + running, lines)


def check_disk(plan, root: str | Path | None, workers: int) -> str:
    """The line `study create`/`study run` print; refuses (StudyError) when the runs root's file system
    has clearly too little room (less free space than the study will still need)."""
    from vpsearch.search.spec import StudyError

    est = estimate(plan, workers)
    where = settings.runs_root(root)
    probe = where if where.exists() else next((p for p in where.parents if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    need = est.peak
    line = f"disk: {est.text()}; free on {probe}: {_mb(free)}"
    if free < need:
        raise StudyError(f"study {plan.name}: the runs root {where} has {_mb(free)} free, but the study needs about "
                         f"{_mb(need)} ({est.text()}); free space, use another --root, or keep fewer checkpoints "
                         "(checkpoints: {keep: best, top_k: 1})")
    return line


def trial_bytes(plan) -> int:
    """Disk one more trial takes while it runs: its best.pt and last.pt, and its pictures and CSVs."""
    est = estimate(plan, 1)
    return est.weights + est.resume + int(OUTPUTS_PER_TRIAL)


def short_of_room(paths: list[Path], need: int) -> str | None:
    """Why a worker must not take another trial: a file system it writes to (the runs root, the
    journal's folder) has less free space than the trial needs. None: room enough."""
    for path in paths:
        probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("/"))
        free = shutil.disk_usage(probe).free
        if free < need:
            return (f"only {_mb(free)} free on {probe}, a trial needs about {_mb(need)}; free space and run "
                    "`vpsearch study run` again (the study resumes)")
    return None
