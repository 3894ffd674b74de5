"""Checkpoint retention: what each trial folder keeps once trials end, MLflow's copies, the disk estimate."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_study_run import QUIET, journal, open_study, run_cli, write_study

from vpsearch.search.checkpoints import check_disk, estimate, sweep
from vpsearch.search.plan import load_study
from vpsearch.search.records import TrialRecord
from vpsearch.search.spec import CheckpointPolicy, StudyError


def folder_study(tmp_path: Path, rows):
    """A study whose trials have run folders holding both checkpoints; rows: (state, value, extra record)."""
    study = optuna.create_study(direction="maximize")
    for n, (state, value, extra) in enumerate(rows):
        ck = tmp_path / "studies" / "s" / "trials" / str(extra.pop("folder", n)) / "checkpoints"
        ck.mkdir(parents=True, exist_ok=True)
        for name in ("best.pt", "last.pt"):
            (ck / name).write_bytes(b"x")
        rec = TrialRecord(run_dir=f"studies/s/trials/{extra.pop('folder_name', n)}", **extra)
        study.add_trial(optuna.trial.create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                                  user_attrs=rec.attrs(),
                                                  intermediate_values={0: value or 0.0} if value else None))
    return study


def kept(tmp_path: Path) -> dict[str, set[str]]:
    base = tmp_path / "studies" / "s" / "trials"
    return {d.name: {f.name for f in (d / "checkpoints").iterdir()} for d in sorted(base.iterdir())}


def test_top_k_complete_trials_keep_best_the_rest_keep_nothing(tmp_path):
    study = folder_study(tmp_path, [(TrialState.COMPLETE, 20.0, {}), (TrialState.COMPLETE, 24.0, {}),
                                    (TrialState.COMPLETE, 22.0, {}), (TrialState.PRUNED, 18.0, {}),
                                    (TrialState.FAIL, None, {"outcome": "diverged"})])
    sweep(study, CheckpointPolicy(keep="best", top_k=2), tmp_path)
    assert kept(tmp_path) == {"0": set(), "1": {"best.pt"}, "2": {"best.pt"}, "3": set(), "4": set()}
    sweep(study, CheckpointPolicy(keep="both", top_k=1), tmp_path)
    assert kept(tmp_path) == {"0": set(), "1": {"best.pt"}, "2": set(), "3": set(), "4": set()}


def test_running_and_requeued_trials_keep_what_a_resume_needs(tmp_path):
    study = folder_study(tmp_path, [(TrialState.RUNNING, None, {}),
                                    (TrialState.FAIL, None, {"outcome": "lost"}),  # its re-run is queued
                                    (TrialState.FAIL, None, {"outcome": "lost"})])  # retries spent
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=TrialRecord(retry_of=1).attrs()))
    sweep(study, CheckpointPolicy(keep="none", top_k=0), tmp_path)
    assert kept(tmp_path) == {"0": {"best.pt", "last.pt"}, "1": {"best.pt", "last.pt"}, "2": set()}


def test_keep_last_keeps_completed_trials_last_checkpoint(tmp_path):
    study = folder_study(tmp_path, [(TrialState.COMPLETE, 20.0, {}), (TrialState.COMPLETE, 24.0, {})])
    sweep(study, CheckpointPolicy(keep="last", top_k=5), tmp_path)
    assert kept(tmp_path) == {"0": {"last.pt"}, "1": {"last.pt"}}


def test_the_disk_estimate_counts_what_retention_keeps(tmp_path):
    plan = load_study(Path(__file__).resolve().parent.parent / "studies" / "quickstart.yaml")
    est = estimate(plan, workers=2)
    assert est.params > 1e6 and est.resume == pytest.approx(3 * est.weights, rel=0.05)  # Adam: weights + 2 moments
    assert est.kept >= plan.spec.checkpoints.top_k * est.weights and est.peak > est.kept
    line = check_disk(plan, tmp_path, 2)
    assert line.startswith("disk: ") and "best.pt" in line and "free on" in line
    import dataclasses
    from unittest import mock
    keep_all = plan.spec.model_copy(update={"checkpoints": CheckpointPolicy(keep="last", top_k=0)})
    big = dataclasses.replace(plan, spec=keep_all)
    with mock.patch("shutil.disk_usage", return_value=mock.Mock(free=est.weights)):  # one checkpoint's room
        with pytest.raises(StudyError, match=r"has \d+ MB free, but the study needs about .* keep fewer checkpoints"):
            check_disk(big, tmp_path, 2)


STUDIES = Path(__file__).resolve().parent.parent / "studies"


@pytest.mark.parametrize("name", sorted(p.stem for p in STUDIES.glob("*.yaml")))
def test_every_shipped_study_gets_a_disk_estimate(name):
    plan = load_study(STUDIES / f"{name}.yaml")
    est = estimate(plan, workers=1)  # builds the study's model as its data will shape it
    assert est.params > 1e5 and est.kept > 0


@pytest.mark.slow
def test_a_study_keeps_one_best_checkpoint_linked_into_mlflow(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root, budget={"n_trials": 3, "epochs": 1, "steps_per_epoch": 2},
                             checkpoints={"keep": "best", "top_k": 1})
    root = tmp_path / "runs"
    quiet = [x for x in QUIET if x not in ("--tracking-uri", "off")]
    r = run_cli("study", "run", str(study_file), "--root", str(root), *quiet)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "disk: " in r.stdout
    trials = open_study(journal(root), "tiny").get_trials()
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    files = {t.number: sorted(p.name for p in (root / TrialRecord.of(t).run_dir / "checkpoints").glob("*.pt"))
             for t in trials}
    assert files == {t.number: (["best.pt"] if t.number == best.number else []) for t in trials}
    import torch
    payload = torch.load(root / TrialRecord.of(best).run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert "optimizer" not in payload and "model" in payload  # weights only
    # MLflow's copy of the top trial is the same file (a hard link), not a second copy
    linked = list((root / "mlflow" / "artifacts").rglob("checkpoints/best.pt"))
    assert len(linked) == 1 and os.path.samefile(linked[0], root / TrialRecord.of(best).run_dir / "checkpoints" /
                                                   "best.pt")
