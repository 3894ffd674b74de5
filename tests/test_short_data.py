"""Very short training sets: fewer or shorter windows, or one clear line saying why not."""

import logging
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_DANCE
from vpsearch.data.base import DataError, VideoSet, training_windows
from vpsearch.data.generators.dancer import make_dancer
from vpsearch.training import fit


def video_set(*lengths):
    n = sum(lengths)
    return VideoSet(frames=np.zeros((n, 2, 2, 3), np.uint8), starts=np.concatenate([[0], np.cumsum(lengths)]),
                    names=[str(i) for i in range(len(lengths))])


def test_enough_windows_are_kept_as_configured():
    w, length, note = training_windows(video_set(64), n_past=1, length=16, stride=16, min_windows=2, split="train")
    assert w[:, 1].tolist() == [0, 16, 32, 48] and length == 16 and note is None


def test_few_windows_use_every_start():
    w, length, note = training_windows(video_set(20), n_past=1, length=16, stride=16, min_windows=2, split="train")
    assert w[:, 1].tolist() == [0, 1, 2, 3, 4] and length == 16
    assert "only 1 training window(s) at data.window_stride 16: using every start" in note


def test_videos_shorter_than_a_window_train_on_shorter_windows():
    w, length, note = training_windows(video_set(5, 9), n_past=1, length=16, stride=16, min_windows=2, split="train")
    assert length == 9 and w.tolist() == [[1, 0]]
    assert "at most 9 frames: training windows shortened from 16" in note


def test_a_split_without_one_predicted_frame_is_an_error():
    with pytest.raises(DataError, match=r"train split: its longest sequence has 2 frame\(s\); training needs "
                                        r"at least data.n_past \+ 1 = 3"):
        training_windows(video_set(2, 1), n_past=2, length=12, stride=1, min_windows=1, split="train")


@pytest.fixture(scope="module")
def short_dancer(tmp_path_factory):
    """A 6-frame training video (shorter than the 8-frame window) and a 1-frame one."""
    kw = dict(val_frames=10, test_videos=1, test_frames=10, seed=2)
    return (make_dancer(tmp_path_factory.mktemp("six") / "d", train_frames=6, **kw),
            make_dancer(tmp_path_factory.mktemp("one") / "d", train_frames=1, **kw))


def test_a_video_shorter_than_a_window_trains(short_dancer, tiny_dance_cfg, tmp_path, caplog):
    # one 6-frame window: a batch of one (a larger batch would repeat it, below)
    with caplog.at_level(logging.WARNING):
        result = fit(tiny_dance_cfg(f"data.root={short_dancer[0]}", "train.batch_size=1"), tmp_path / "run")
    assert result.epochs_done == 2 and np.isfinite(result.best_psnr)
    assert "training windows shortened from 8 (data.n_past + data.n_future) to 6" in caplog.text
    with pytest.raises(DataError, match=r"train.batch_size=2 is larger than the 1 training windows of .* \(6 frames "
                                        r"each, every start used\); lower train.batch_size"):
        fit(tiny_dance_cfg(f"data.root={short_dancer[0]}"), tmp_path / "run2")


def test_a_one_frame_video_fails_in_one_line(short_dancer, tmp_path):
    args = ["train", "-c", "dancer-small", "--out", str(tmp_path / "run"), "--set", f"data.root={short_dancer[1]}"]
    for o in TINY_DANCE:
        args += ["--set", o]
    r = subprocess.run([sys.executable, "-m", "vpsearch.cli", *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "vpsearch: error: train split: its longest sequence has 1 frame(s); training needs at least "
        "data.n_past + 1 = 2"]
