"""Per-step loss values read from the device in blocks (no host sync per step on CUDA), checked
on CPU: the read policy, the block reads, the first bad step named, and training that gives the
same numbers whatever the block size."""

from __future__ import annotations

import math

import pytest
import torch

from vpsearch.training import NonFiniteLossError, fit
from vpsearch.training import engine
from vpsearch.training.step_log import READ_EVERY_ACCELERATOR, StepLog, read_every


def test_cpu_reads_every_step_cuda_in_blocks():
    assert read_every(torch.device("cpu")) == 1
    assert read_every(torch.device("cuda", 0)) == READ_EVERY_ACCELERATOR > 1
    with pytest.raises(ValueError, match="read_every must be 1 or more"):
        StepLog(4, 0, lambda v, s: None)


def test_values_are_read_once_per_block_and_checked_step_by_step_in_order():
    seen = []
    log = StepLog(2, 3, lambda v, step: seen.append((step, v)))
    for step in range(2):
        log.add(torch.tensor([float(step), 10.0 * step]))
    assert seen == [] and log.reads == 0  # still on the device
    log.add(torch.tensor([2.0, 20.0]))
    assert [s for s, _ in seen] == [0, 1, 2] and log.reads == 1
    log.add(torch.tensor([3.0, 30.0]))
    rows = log.rows()  # the end of the epoch reads the partial block
    assert log.reads == 2 and rows.tolist() == [[0, 0], [1, 10], [2, 20], [3, 30]]
    assert seen[-1] == (3, [3.0, 30.0])
    assert StepLog(3, 5, lambda v, s: None).rows().shape == (0, 3)


def test_the_first_bad_step_is_named_even_when_read_later():
    def check(values, step):
        if not math.isfinite(values[0]):
            raise NonFiniteLossError(f"step {step}")
    log = StepLog(1, 4, check)
    for v in (1.0, 2.0, float("nan"), float("inf")):
        if v != float("inf"):
            log.add(torch.tensor([v]))
    with pytest.raises(NonFiniteLossError, match=r"^step 2$"):
        log.add(torch.tensor([float("inf")]))


def test_training_in_blocks_gives_the_numbers_of_reading_every_step(tiny_cfg, tmp_path, monkeypatch):
    every_step = fit(tiny_cfg(), tmp_path / "a").history
    monkeypatch.setattr(engine, "read_every", lambda device: 3)  # what CUDA does, on CPU
    blocks = fit(tiny_cfg(), tmp_path / "b").history
    keys = ("loss", "mse", "kl", "grad_norm", "val_psnr")
    assert [[r.get(k) for k in keys] for r in blocks] == [[r.get(k) for k in keys] for r in every_step]
    assert every_step[-1]["val_psnr"] > 0


def test_a_diverging_step_fails_the_run_with_its_step_when_read_in_blocks(tiny_cfg, tmp_path, monkeypatch):
    from vpsearch.models import svg

    original = svg.SVG.step
    calls = {"n": 0}

    def nan_from_step_2(self, *a, **k):  # steps 0-1 of epoch 0 are fine; from step 2 on the output is NaN
        x, g, s = original(self, *a, **k)
        calls["n"] += 1
        return (x * float("nan"), g, s) if calls["n"] > 2 * 11 else (x, g, s)  # 11 recurrent steps a window

    monkeypatch.setattr(svg.SVG, "step", nan_from_step_2)
    monkeypatch.setattr(engine, "read_every", lambda device: 4)  # read after step 3: the error names step 2
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, step 2: mse=nan"):
        fit(tiny_cfg("train.steps_per_epoch=6"), tmp_path / "run")
