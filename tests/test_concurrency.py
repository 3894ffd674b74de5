"""Starts at the same moment (issue 12, item 4).

Two `study run` of one study on a fresh root both run (MLflow's sqlite store is created
once, under a lock), and workers building one dataset cache at once neither fail nor
delete each other's cache.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vpsearch.config import DataConfig
from vpsearch.data import cache
from vpsearch.data.bair import load_bair


@pytest.fixture()
def root(tmp_path, pushing_root) -> Path:
    dst = tmp_path / "bair"
    shutil.copytree(pushing_root, dst, ignore=shutil.ignore_patterns(".vpsearch-cache"))
    return dst


def test_two_builds_of_one_cache_at_once_both_open_it(root, monkeypatch):
    # both builders finish decoding before either renames its result into place: the old code
    # then failed the second rename (ENOTEMPTY); with the lock the second waits and opens the first's
    real_replace = os.replace
    meet = threading.Barrier(2, timeout=3)

    def replace_together(src, dst):
        try:
            meet.wait()
        except threading.BrokenBarrierError:
            pass  # the other builder is waiting for the lock, not for us
        real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", replace_together)
    cfg = DataConfig(root=str(root))
    results, errors = [], []

    def load():
        try:
            results.append(load_bair(root, "train", cfg))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(results) == 2 and np.array_equal(results[0].frames, results[1].frames)
    built = [p for p in (root / ".vpsearch-cache").iterdir() if p.name.startswith("bair-train")]
    assert len(built) == 1 and (built[0] / "meta.json").is_file()
    assert not [p for p in (root / ".vpsearch-cache").iterdir() if p.name.startswith(".bair-train")]  # no temp


def _load_in_process(root: str, height: int, go: float, out) -> None:
    while time.time() < go:
        time.sleep(0.001)
    try:
        data = load_bair(Path(root), "train", DataConfig(root=root, height=height, width=height))
        out.put((height, int(data.frames.shape[1]), None))
    except BaseException as e:  # noqa: BLE001
        out.put((height, None, f"{type(e).__name__}: {e}"))


def test_four_processes_loading_one_cache_at_once_all_succeed(root):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    go = time.time() + 3.0  # all start decoding together, after their imports
    procs = [ctx.Process(target=_load_in_process, args=(str(root), h, go, out)) for h in (64, 64, 32, 32)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert all(err is None for _, _, err in got), got
    assert sorted(shape for _, shape, _ in got) == [32, 32, 64, 64]


def test_caches_of_other_decode_parameters_are_kept(root, monkeypatch):
    # a study searching data.height: each trial's load must not delete the other size's cache
    load_bair(root, "train", DataConfig(root=str(root), height=64, width=64))
    load_bair(root, "train", DataConfig(root=str(root), height=32, width=32))

    def boom(*a, **k):
        raise AssertionError("decoded a PNG although a cache of these parameters exists")

    monkeypatch.setattr("vpsearch.data.bair.read_rgb", boom)
    assert load_bair(root, "train", DataConfig(root=str(root), height=64, width=64)).frames.shape[1] == 64
    assert load_bair(root, "train", DataConfig(root=str(root), height=32, width=32)).frames.shape[1] == 32


# -- MLflow's embedded store -------------------------------------------------------------------------------
CREATE = """
import sys, time
from vpsearch.tracking import make_tracker
go = float(sys.argv[2])
while time.time() < go:
    time.sleep(0.001)
t = make_tracker(None, sys.argv[1], "race")
print(t.experiment())
t.close()
"""


def test_processes_creating_the_embedded_store_at_once_all_succeed(tmp_path):
    root = tmp_path / "runs"
    go = time.time() + 4.0  # after every interpreter has imported mlflow
    procs = [subprocess.Popen([sys.executable, "-c", CREATE, str(root), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert len({out.strip() for out, _ in outs}) == 1  # one experiment, whoever created it


@pytest.mark.slow
def test_two_study_runs_started_at_once_on_a_fresh_root_both_run(tmp_path, pushing_root):
    from test_study_run import cli, open_study, journal, write_study
    study = write_study(tmp_path / "s.yaml", pushing_root, budget={"n_trials": 2, "epochs": 1, "steps_per_epoch": 2})
    root = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the embedded sqlite store
    procs = [subprocess.Popen(cli("study", "run", str(study), "--workers", "1", "--threads", "1", "--root",
                                  str(root)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    trials = open_study(journal(root), "tiny").get_trials()
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("vpsearch.role") == "study"]
    assert len(parents) == 1, [r.info.run_id for r in parents]  # one parent run, both trials under it
    assert sum(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in runs) == 2
