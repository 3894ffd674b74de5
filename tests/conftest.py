"""Shared fixtures: tiny generated datasets and a tiny-model config for fast end-to-end runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vpsearch.config import load_config

# Small enough that a 2-epoch run takes a few seconds on 2 CPU cores.
TINY_SVG = ["model.nf=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "train.epochs=2",
            "train.steps_per_epoch=2", "train.batch_size=4", "eval.max_sequences=4", "eval.gif_sequences=2",
            "train.progress=false", "train.amp=none", "train.channels_last=false", "train.num_threads=1"]


@pytest.fixture(scope="session", autouse=True)
def isolated_data_home(tmp_path_factory):
    """Built-in data and the per-machine caches (the precision probe's answers) that tests make go
    to temp folders, never ~/.cache."""
    home = tmp_path_factory.mktemp("data-home")
    cache = tmp_path_factory.mktemp("cache-home")
    old = {k: os.environ.get(k) for k in ("VPSEARCH_DATA_HOME", "XDG_CACHE_HOME")}
    os.environ["VPSEARCH_DATA_HOME"], os.environ["XDG_CACHE_HOME"] = str(home), str(cache)
    yield home
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def pushing_root(tmp_path_factory) -> Path:
    from vpsearch.data.generators.pushing import make_pushing

    return make_pushing(tmp_path_factory.mktemp("pushing"), train=8, validate=4, test=4, seed=3)


@pytest.fixture()
def tiny_cfg(pushing_root):
    def make(*extra: str):
        return load_config("pushing-small", [*TINY_SVG, f"data.root={pushing_root}", *extra])
    return make


TINY_DANCE = ["model.f_dim=8", "model.l_dim=4", "model.n_dim=2", "model.d_out_dim=8", "train.epochs=2",
              "train.steps_per_epoch=2", "train.batch_size=2", "train.progress=false", "train.amp=none",
              "train.channels_last=false", "train.num_threads=1", "data.n_future=7", "data.window_stride=8"]


@pytest.fixture(scope="session")
def dancer_root(tmp_path_factory) -> Path:
    from vpsearch.data.generators.dancer import make_dancer

    return make_dancer(tmp_path_factory.mktemp("dancer"), train_frames=96, val_frames=40, test_videos=2,
                       test_frames=40, seed=5)


@pytest.fixture()
def tiny_dance_cfg(dancer_root):
    def make(*extra: str):
        return load_config("dancer-small", [*TINY_DANCE, f"data.root={dancer_root}", *extra])
    return make


def vp(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`vpsearch ARGS` through the real entry point, in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "vpsearch.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=None if env is None else {**os.environ, **env})


def one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error: exit status 2, one line on stderr holding every needle, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and len(err.splitlines()) == 1, err[-3000:]
    for needle in needles:
        assert needle in err, err
    return err
