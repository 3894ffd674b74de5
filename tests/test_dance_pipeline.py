"""The dance family through the same trainer, evaluation and predict, and the submission file."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vpsearch.config import DanceModelConfig
from vpsearch.data.base import VideoSet
from vpsearch.models import DataShape, build_model
from vpsearch.training import fit
from vpsearch.training.predict import SubmissionWriter, rollout_to_files


def test_dance_trains_and_evaluates_the_whole_video(tiny_dance_cfg, tmp_path):
    result = fit(tiny_dance_cfg(), tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run/frame_psnr.csv").open()))
    assert len(rows) == 39  # every frame of the 40-frame validation video after the first
    assert np.isfinite(result.best_psnr)


def test_evaluate_and_predict_cli_with_submission(tiny_dance_cfg, tmp_path):
    fit(tiny_dance_cfg(), tmp_path / "run")
    ckpt = tmp_path / "run/checkpoints/best.pt"
    run = lambda *a: subprocess.run([sys.executable, "-m", "vpsearch.cli", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True, timeout=600)
    ev = run("evaluate", "--checkpoint", ckpt, "--split", "val")
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout)
    assert len(res["psnr_per_frame"]) == 39 and "baseline_copy_first_psnr" in res
    sub = tmp_path / "submission.csv"
    pr = run("predict", "--checkpoint", ckpt, "--split", "test", "--out", tmp_path / "pred", "--submission", sub)
    assert pr.returncode == 0, pr.stderr
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.gif")) == ["0.gif", "1.gif"]
    with sub.open() as f:
        header = next(csv.reader(f))
        ids = [int(r[0]) for r in csv.reader(f)]
    assert header == ["id", *map(str, range(3 * 32 * 64))]
    assert ids == list(range(80))  # 2 videos x 40 frames (the given first frame included)


def test_submission_values_channel_major():
    """index c*H*W + h*W + w, values round(x*255) of the clamped frame."""
    frame = torch.zeros(3, 2, 4)
    frame[0, 1, 2] = 0.5  # -> index 0*8 + 1*4 + 2 = 6 -> round(127.5) = 128
    frame[2, 0, 3] = 1.7  # clamped to 1 -> index 2*8 + 0 + 3 = 19 -> 255
    frame[1, 1, 0] = -0.2  # clamped to 0
    frame[1, 0, 1] = 0.1  # index 8 + 1 = 9 -> round(25.5) = 26
    import tempfile
    from pathlib import Path
    path = Path(tempfile.mkdtemp()) / "s.csv"
    w = SubmissionWriter(path, 3, 2, 4)
    w.add(frame)
    w.add(torch.ones(3, 2, 4))
    w.close()
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["id", *map(str, range(24))]
    values = list(map(int, rows[1][1:]))
    expected = [0] * 24
    expected[6], expected[19], expected[9] = 128, 255, 26
    assert rows[1][0] == "0" and values == expected
    assert rows[2][0] == "1" and set(rows[2][1:]) == {"255"}


MEMORY_PROBE = """
import os, sys, numpy as np, torch
from pathlib import Path
from vpsearch.config import DanceModelConfig, load_config
from vpsearch.data.base import VideoSet
from vpsearch.models import DataShape, build_model
from vpsearch.training.predict import rollout_to_files
out = Path(sys.argv[1]); leak = sys.argv[2] == "leak"
cfg = load_config("dancer-small", ["train.amp=none"])
model = build_model(DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8), DataShape(3, 32, 64, 0, 3))
rng = np.random.default_rng(0)
frames = rng.integers(0, 255, (630, 32, 64, 3), dtype=np.uint8)
video = VideoSet(frames=frames, starts=np.array([0, 630]), names=["0"], cond=frames.copy(), cond_kind="image")
page = os.sysconf("SC_PAGE_SIZE")
held, samples = [], []
orig = model.generate
def sampled(*a, **k):  # current RSS after every frame: the peak of this rollout, not of the process
    for x in orig(*a, **k):
        if leak:  # a leaky variant proves the probe sees growth
            held.append(x.double())
        samples.append(int(open("/proc/self/statm").read().split()[1]) * page)
        yield x
model.generate = sampled
torch.set_num_threads(1)
peaks = []
for h in (20, 99, 629):  # the first rollout warms up allocators and kernels
    samples.clear()
    rollout_to_files(model, cfg, video, torch.device("cpu"), out / str(h), h, 1, submission=out / f"{h}.csv")
    peaks.append(max(samples))
print((peaks[2] - peaks[1]) / 2**20)
"""


@pytest.mark.parametrize("variant", ["flat", "leak"])
def test_long_rollout_memory_is_flat(tmp_path, variant):
    """Peak RSS during a 630-frame rollout vs during a 100-frame one, in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path), variant], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    growth_mb = float(proc.stdout.strip().splitlines()[-1])
    # keeping 530 more frames would cost >= 530*6144*4 B = 13 MB (the leak variant keeps float64: 26 MB)
    if variant == "flat":
        # a few MB of allocator noise are normal; keeping the frames would be >= 13 MB
        assert growth_mb < 10, f"RSS grew {growth_mb:.1f} MB between 100 and 630 frames"
        assert sum(1 for _ in (tmp_path / "629.csv").open()) == 631
    else:
        assert growth_mb > 20


def test_predict_refuses_an_empty_test_set(tmp_path, tiny_dance_cfg):
    from vpsearch.data import DataError
    empty = VideoSet(frames=np.zeros((0, 32, 64, 3), np.uint8), starts=np.array([0]), names=[])
    model = build_model(DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8),
                        DataShape(height=32, width=64, cond_channels=3))
    with pytest.raises(DataError, match="no sequence"):
        rollout_to_files(model, tiny_dance_cfg(), empty, torch.device("cpu"), tmp_path, "all", None)


def test_frame_table_shows_the_first_frames_then_spaced_out_to_the_last():
    from vpsearch.training.predict import frame_table

    n = 629
    res = {"psnr_per_frame": [30.0 - k / 100 for k in range(n)], "baseline_per_frame": [25.0] * n,
           "psnr": 27.0, "baseline_copy_last_psnr": 25.0, "gain_db": 2.0, "samples": 1, "n_sequences": 5}
    lines = frame_table(res, "copy-first").splitlines()
    frames = [int(ln.split()[0]) for ln in lines[1:-1]]
    assert frames[:3] == [1, 2, 3] and frames[-1] == 629 and frames == sorted(set(frames)) and len(frames) <= 12
    assert lines[1].split() == ["1", "30.00", "25.00", "+5.00"] and lines[0].split()[2] == "copy-first"


def test_one_long_validation_video_scored_on_consecutive_windows():
    """eval.windows_per_video: stretches 0-4, 5-9, 10-14 of one video; copy-first from each stretch's first frame."""
    from vpsearch.config import load_config
    from vpsearch.training.engine import evaluate, evaluation_plan

    frames = np.zeros((16, 32, 64, 3), dtype=np.uint8)
    frames[:] = (np.arange(16) * 10)[:, None, None, None]  # frame t is flat grey 10*t
    video = VideoSet(frames=frames, starts=np.array([0, 16]), names=["0"], cond=frames.copy(), cond_kind="image")
    cfg = load_config("dancer-small", ["train.amp=none", "eval.n_future=4", "eval.windows_per_video=3"])
    assert evaluation_plan(video, cfg, 4, 64) == [(0, 0, 4), (0, 5, 4), (0, 10, 4)]
    assert evaluation_plan(video, cfg, 4, 2) == [(0, 0, 4), (0, 5, 4)]  # max_sequences caps the windows
    assert evaluation_plan(video, cfg, "all", 64) == [(0, 0, 15)]  # the whole video is one rollout
    model = build_model(DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8), DataShape(3, 32, 64, 0, 3))
    ev = evaluate(model, video, cfg, torch.device("cpu"), horizon=4, max_sequences=64)
    assert ev.n_sequences == 3
    # frame k after a window's first frame differs from it by 10*k grey levels in every window
    expected = [20 * np.log10(255 / (10 * k)) for k in range(1, 5)]
    np.testing.assert_allclose(ev.baseline_per_frame, expected, atol=0.05)
