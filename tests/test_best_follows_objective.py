""""Best" is the objective's best everywhere (issue 27, item 1): with objective val_ssim a run
keeps best.pt, frame_psnr.csv and best_epoch at the SSIM-best epoch, not the PSNR-best one."""

from __future__ import annotations

import csv
import dataclasses

import pytest
import torch

from tests.test_study_run import write_study
from vpsearch.config import ConfigError
from vpsearch.search.objective import TrialReporter
from vpsearch.search.plan import load_study
from vpsearch.search.spec import Objective
from vpsearch.training import fit, trainer

# epoch -> (psnr, ssim): PSNR peaks at epoch 1, SSIM at epoch 2
SCRIPT = {0: (20.0, 0.50), 1: (22.0, 0.40), 2: (21.0, 0.70)}


@pytest.fixture()
def scripted(monkeypatch):
    """The real evaluation, its headline scores replaced by SCRIPT's (the frames stay real)."""
    real = trainer.evaluate
    epoch = iter(range(100))

    def evaluate(*a, **k):
        ev = real(*a, **k)
        psnr, ssim = SCRIPT[next(epoch)]
        return dataclasses.replace(ev, psnr=psnr, ssim=ssim, psnr_per_frame=[psnr] * len(ev.psnr_per_frame))
    monkeypatch.setattr(trainer, "evaluate", evaluate)


def frame_psnr(run) -> list[float]:
    with (run / "frame_psnr.csv").open() as f:
        return [float(r["psnr"]) for r in csv.DictReader(f)]


def test_the_run_keeps_the_ssim_best_epoch(tiny_cfg, tmp_path, scripted):
    res = fit(tiny_cfg("train.epochs=3", "eval.every=1", "eval.best_metric=val_ssim"), tmp_path / "run")
    assert (res.best_epoch, res.best_value, res.best_psnr) == (2, 0.70, 21.0)  # not epoch 1's 22 dB
    assert torch.load(res.best_checkpoint, weights_only=True)["epoch"] == 2
    assert set(frame_psnr(res.run_dir)) == {21.0}  # the pictures' evaluation is epoch 2's


def test_by_default_best_is_psnr(tiny_cfg, tmp_path, scripted):
    res = fit(tiny_cfg("train.epochs=3", "eval.every=1"), tmp_path / "run")
    assert (res.best_epoch, res.best_psnr) == (1, 22.0)
    assert torch.load(res.best_checkpoint, weights_only=True)["epoch"] == 1 and set(frame_psnr(res.run_dir)) == {22.0}


def test_minimised_metric_picks_the_lowest(tiny_cfg, tmp_path, scripted):
    res = fit(tiny_cfg("train.epochs=3", "eval.every=1", "eval.best_metric=val_psnr", "eval.best_direction=minimize"),
              tmp_path / "run")
    assert res.best_epoch == 0 and res.score == -20.0


def test_an_unknown_best_metric_is_refused_before_the_run_folder(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="eval.best_metric: 'loss' is not an evaluation metric; expected one of "
                                          "val_psnr, val_ssim, val_psnr_best_of_n"):
        fit(tiny_cfg("eval.best_metric=loss"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_study_tells_its_trials_the_objective(tmp_path, pushing_root):
    plan = load_study(write_study(tmp_path / "s.yaml", pushing_root,
                                  objective={"metric": "val_ssim", "direction": "maximize"}))
    assert (plan.base.eval.best_metric, plan.base.eval.best_direction) == ("val_ssim", "maximize")


def test_the_trial_record_takes_best_epoch_by_the_objective():
    r = TrialReporter(trial=None, store=None, objective=Objective(metric="val_ssim"), prune=False)
    r.rows = [{"epoch": e, "val_psnr": p, "val_ssim": s, "baseline_psnr": 19.0} for e, (p, s) in SCRIPT.items()]
    res = r.results(1.0)
    assert (res.best_epoch, res.val_ssim_best, res.val_psnr_best) == (2, 0.70, 21.0)
    assert r.values(1.0) == [0.70]
