"""Several trials per device (`--trials-per-device K`), checked on CPU: the device list of
`study run`, the claim order and keys of `--device cuda:free` (a real PostgreSQL, fake GPU
UUIDs), the errors, and K CPU workers end to end."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch
from postgres import postgres_or_skip
from test_study_run import QUIET, journal, open_study, run_cli, write_study

from vpsearch.search.records import TrialRecord
from vpsearch.search.gpus import claim_gpu, claim_order, lock_key
from vpsearch.search.spec import StudyError
from vpsearch.search.storage import open_storage
from vpsearch.training.device import split_devices

UUIDS = ["GPU-8d1f-aaaa", "GPU-8d1f-bbbb"]


def test_k_workers_on_each_device_interleaved(monkeypatch):
    assert split_devices("cuda:0,cuda:1", None, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert split_devices("cuda:0", 3, 2) == ["cuda:0", "cuda:0"]  # K replaces the worker count
    assert split_devices("cpu", 4, 3) == ["cpu", "cpu", "cpu"]  # the CPU is one device
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert split_devices("cuda", None, 2) == ["cuda:0", "cuda:1", "cuda:2"] * 2
    with pytest.raises(ValueError, match="trials per device: expected 1 or more, got 0"):
        split_devices("cuda:0", None, 0)


def test_claims_fill_every_gpu_before_any_gets_a_second_worker():
    assert claim_order(2, 1) == [(0, 0), (1, 0)]
    assert claim_order(2, 3) == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    # slot 0 keeps the one-worker-per-GPU key: workers with and without the option count each other
    old = int.from_bytes(hashlib.sha1(b"vpsearch-gpu:GPU-8d1f-aaaa").digest()[:8], "big", signed=True)
    assert lock_key("GPU-8d1f-aaaa") == lock_key("GPU-8d1f-aaaa", 0) == old
    keys = {lock_key(u, s) for u in UUIDS for s in range(3)}
    assert len(keys) == 6


@pytest.mark.postgres
def test_two_slots_per_gpu_are_claimed_breadth_first_and_freed_with_their_connection():
    with postgres_or_skip() as pg:
        url = pg.create_database("optuna")
        open_storage(url)
        claims = [claim_gpu(open_storage(url), UUIDS, per_device=2) for _ in range(4)]
        assert [index for index, _ in claims] == [0, 1, 0, 1]
        with pytest.raises(StudyError, match=r"all 2 GPU\(s\) here are held by other vpsearch workers "
                                             r"\(2 trials per device\); run at most 2 worker\(s\) per GPU"):
            claim_gpu(open_storage(url), UUIDS, per_device=2)
        # a one-per-GPU worker sees slot 0 of both taken
        with pytest.raises(StudyError, match=r"all 2 GPU\(s\) here are held"):
            claim_gpu(open_storage(url), UUIDS)
        claims[3][1].invalidate()  # the second worker on GPU 1 ends (its session closes): its slot is free again
        index, conn = claim_gpu(open_storage(url), UUIDS, per_device=2)
        assert index == 1
        for _, c in claims[:3] + [(index, conn)]:
            c.close()


def test_option_errors_are_one_line(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root)
    r = run_cli("study", "run", str(study_file), "--workers", "2", "--trials-per-device", "2",
                "--root", str(tmp_path / "runs"), *QUIET)
    assert r.returncode == 2
    assert r.stderr.strip() == ("vpsearch: error: --workers and --trials-per-device both set how many workers "
                                "run; give one")
    r = run_cli("worker", "--study", "tiny", "--device", "cpu", "--trials-per-device", "2",
                "--storage", journal(tmp_path))
    assert r.returncode == 2 and r.stderr.strip() == (
        "vpsearch: error: --trials-per-device needs --device cuda:free (with --device cpu the device is fixed: "
        "start as many workers on it as you like)")
    r = run_cli("study", "run", str(study_file), "--trials-per-device", "0")
    assert r.returncode == 2 and "expected 1 or more, got 0" in r.stderr


@pytest.mark.slow
def test_study_run_puts_k_workers_on_one_device(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root, workers=1)
    root = tmp_path / "runs"
    r = run_cli("study", "run", str(study_file), "--devices", "cpu", "--trials-per-device", "2", "--root",
                str(root), *QUIET)
    assert r.returncode == 0, r.stderr
    assert re.search(r"2 worker\(s\) on cpu x 1 thread\(s\)", r.stdout)
    trials = open_study(journal(root), "tiny").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert len({TrialRecord.of(t).worker for t in trials}) == 2  # one trial each, side by side
