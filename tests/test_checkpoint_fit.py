"""Checkpoints that do not fit (issue 12, item 2).

evaluate/predict check the checkpoint against the data up front and say what differs;
train --resume refuses a changed training-relevant config (or continues with --force,
never with a changed model); an fp16 resume restores the GradScaler; truncated, empty
or incomplete files are "not a vpsearch checkpoint (reason)".
"""

from __future__ import annotations

import os
import pickle

import shutil
from pathlib import Path

import pytest
import torch

from conftest import TINY_SVG, one_line, vp
from vpsearch.models import DataShape, build_model
from vpsearch.training import fit
from vpsearch.training.checkpoint import (CheckpointError, load_checkpoint, model_from_checkpoint, rng_state,
                                          save_checkpoint)
from vpsearch.training.device import grad_scaler

BAIR_PARTS = (("action", 4), ("position", 3))  # the condition columns of the pushing/BAIR data

def write_checkpoint(path: Path, cfg, shape: DataShape, scaler=None, **extra) -> Path:
    model = build_model(cfg.model, shape)
    opt = torch.optim.Adam(model.parameters())
    g = torch.Generator()
    save_checkpoint(path, cfg=cfg, shape=shape, model=model, optimizer=opt, epoch=0, best=1.0, best_epoch=0,
                    history=[], rng=rng_state(g, g), lr=0.1, scaler=scaler)
    if extra:
        payload = torch.load(path, weights_only=True)
        for k, v in extra.items():
            if v is None:
                payload.pop(k)
            else:
                payload[k] = v
        torch.save(payload, path)
    return path


@pytest.fixture()
def bair_ckpt(tiny_cfg, tmp_path) -> Path:
    """A checkpoint of an SVG trained with 7-dim conditions (actions + end-effector positions)."""
    return write_checkpoint(tmp_path / "bair.pt", tiny_cfg(), DataShape(3, 64, 64, cond_dim=7, cond_parts=BAIR_PARTS))


# -- evaluate / predict on data that do not fit ----------------------------------------------------------
@pytest.fixture()
def no_csv_root(tmp_path, pushing_root) -> Path:
    dst = tmp_path / "nocsv"
    shutil.copytree(pushing_root, dst, ignore=shutil.ignore_patterns(".vpsearch-cache", "*.csv"))
    return dst


@pytest.mark.parametrize("cmd", ["evaluate", "predict"])
def test_a_conditioned_checkpoint_on_data_without_conditions(cmd, bair_ckpt, no_csv_root, tmp_path):
    extra = ["--out", tmp_path / "pred"] if cmd == "predict" else []
    err = one_line(vp(cmd, "--checkpoint", bair_ckpt, "--data", no_csv_root, *extra, cwd=tmp_path),
                   f"checkpoint {bair_ckpt}", "does not fit the data", "7-dim condition vectors", "none")
    assert "mat1" not in err
    assert not (tmp_path / "pred").exists()


def test_a_bair_checkpoint_on_dance_data(bair_ckpt, dancer_root, tmp_path):
    one_line(vp("evaluate", "--checkpoint", bair_ckpt, "--data", dancer_root, cwd=tmp_path),
             f"checkpoint {bair_ckpt}", "bair", "dance")


def test_a_dance_checkpoint_on_bair_data(tiny_dance_cfg, pushing_root, tmp_path):
    ckpt = write_checkpoint(tmp_path / "dance.pt", tiny_dance_cfg(), DataShape(3, 64, 128, cond_channels=3))
    one_line(vp("evaluate", "--checkpoint", ckpt, "--data", pushing_root, cwd=tmp_path),
             f"checkpoint {ckpt}", "dance", "bair")


def test_a_fitting_checkpoint_still_evaluates(bair_ckpt, pushing_root, tmp_path):
    proc = vp("evaluate", "--checkpoint", bair_ckpt, "--data", pushing_root, "--max-sequences", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- resume with another config --------------------------------------------------------------------------
@pytest.fixture()
def half_run(tiny_cfg, tmp_path) -> Path:
    fit(tiny_cfg("train.epochs=1"), tmp_path / "run")
    return tmp_path / "run"


def test_resume_with_a_changed_model_is_refused_saying_what_changed(tiny_cfg, half_run):
    for force in (False, True):  # the weights cannot fit: --force does not help
        with pytest.raises(CheckpointError) as e:
            fit(tiny_cfg("train.epochs=2", "model.z_dim=8"), half_run, resume=True, force=force)
        msg = str(e.value)
        assert "model.z_dim: 4 -> 8" in msg and "\n" not in msg and "load_state_dict" not in msg


def test_resume_with_changed_training_fields_needs_force(tiny_cfg, half_run):
    with pytest.raises(CheckpointError) as e:
        fit(tiny_cfg("train.epochs=2", "optim.lr=0.01", "schedule.kl_anneal_type=none"), half_run, resume=True)
    msg = str(e.value)
    assert "optim.lr: 0.002 -> 0.01" in msg and "schedule.kl_anneal_type: cyclical -> none" in msg
    assert "train.epochs: 1 -> 2" in msg and "--force" in msg
    res = fit(tiny_cfg("train.epochs=2", "optim.lr=0.01", "schedule.kl_anneal_type=none"), half_run, resume=True,
              force=True)
    assert [h["epoch"] for h in res.history] == [0, 1]  # continued from epoch 1


def test_resume_ignores_fields_that_do_not_change_training(tiny_cfg, half_run, tmp_path):
    res = fit(tiny_cfg("train.epochs=1", "eval.max_sequences=2", "train.num_threads=1", "train.device=cpu",
                       "name=renamed"), half_run, resume=True)
    assert [h["epoch"] for h in res.history] == [0]


def test_cli_resume_lists_the_difference_and_force_continues(half_run, pushing_root, tmp_path):
    base = [x for o in [*TINY_SVG, f"data.root={pushing_root}"] for x in ("--set", o)]
    one_line(vp("train", "-c", "pushing-small", *base, "--set", "optim.lr=0.01", "--out", half_run, "--resume",
                cwd=tmp_path), "optim.lr: 0.002 -> 0.01", "--force")
    ok = vp("train", "-c", "pushing-small", *base, "--set", "optim.lr=0.01", "--out", half_run, "--resume", "--force",
            cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]


# -- fp16 GradScaler ---------------------------------------------------------------------------------
def test_fp16_resume_restores_the_grad_scaler(tiny_cfg, tmp_path):
    from vpsearch.training.checkpoint import restore_scaler

    cfg = tiny_cfg()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=7)
    scaler.scale(torch.ones(()))  # creates the scale lazily, as the first training step does
    scaler.update(2.0 ** 13)  # as after some steps: a new scale and growth tracker
    scaler._growth_tracker.fill_(3)
    saved = scaler.state_dict()
    path = write_checkpoint(tmp_path / "fp16.pt", cfg, DataShape(3, 64, 64, cond_dim=7, cond_parts=BAIR_PARTS), scaler=scaler)
    state = load_checkpoint(path)
    assert state["scaler"] == saved
    fresh = torch.amp.GradScaler("cpu")
    restore_scaler(state, fresh)
    assert fresh.state_dict() == saved and fresh.get_scale() == 2.0 ** 13


def test_a_scaler_that_is_off_stores_nothing(tiny_cfg, tmp_path):
    off = grad_scaler(torch.device("cpu"), "none")
    path = write_checkpoint(tmp_path / "x.pt", tiny_cfg(), DataShape(3, 64, 64, cond_dim=7, cond_parts=BAIR_PARTS), scaler=off)
    assert load_checkpoint(path).get("scaler") is None


# -- files that are not checkpoints -------------------------------------------------------------------
def test_truncated_empty_and_incomplete_files_are_not_checkpoints(bair_ckpt, tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"^checkpoint {empty}: not a vpsearch checkpoint \(empty file\)$"):
        load_checkpoint(empty)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(bair_ckpt.read_bytes()[: bair_ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=rf"^checkpoint {cut}: not a vpsearch checkpoint \(truncated or "
                                              r"corrupt: "):
        load_checkpoint(cut)
    for key in ("data_shape", "config", "model"):
        path = shutil.copy(bair_ckpt, tmp_path / f"no-{key}.pt")
        payload = torch.load(path, weights_only=True)
        payload.pop(key)
        torch.save(payload, path)
        with pytest.raises(CheckpointError, match=rf"^checkpoint {path}: not a vpsearch checkpoint \(no {key}\)$"):
            model_from_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path}: is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path)


def test_truncated_checkpoint_through_the_cli(bair_ckpt, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(bair_ckpt.read_bytes()[:1000])
    one_line(vp("evaluate", "--checkpoint", cut, cwd=tmp_path), "not a vpsearch checkpoint (truncated or corrupt")


class Payload:
    """A class pickled into a file: loading it would run code."""


class Runs:
    """Unpickling this runs a shell command (a malicious checkpoint)."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_objects_are_refused_and_garbage_is_corrupt(tmp_path):
    torch.save({"format": "vpsearch-checkpoint-1", "x": Payload()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match=r"not a vpsearch checkpoint \(it holds pickled Python objects"):
        load_checkpoint(tmp_path / "code.pt")
    # issue 29, item 6: a malicious pickle read "truncated or corrupt: Weights only load failed", a text
    # file "truncated or corrupt: 101"
    torch.save({"format": "vpsearch-checkpoint-1", "x": Runs()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt: not a vpsearch checkpoint \(it holds pickled Python objects, "
                                              r"refused because loading them could run code\)$"):
        load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "bare.pt").write_bytes(pickle.dumps({"a": Runs()}))
    with pytest.raises(CheckpointError, match=r"\(a bare Python pickle, not a torch checkpoint; refused"):
        load_checkpoint(tmp_path / "bare.pt")
    (tmp_path / "text.pt").write_bytes(b"101 not a checkpoint\n")
    with pytest.raises(CheckpointError, match=r"text.pt: not a vpsearch checkpoint \(a text file, not a checkpoint\)$"):
        load_checkpoint(tmp_path / "text.pt")
