"""`vpsearch data make dance --from-video`: a clip in the dance layout, split in time, the pose drawn
by the detector's confidence; the detector run in another Python; bad input in one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import one_line, vp
from vpsearch.config import load_config
from vpsearch.data.dance import load_dance
from vpsearch.data.from_video import BLAZEPOSE_LIMBS, make_dance_from_video

N = 40


def clip_frames(n: int = N) -> np.ndarray:
    """A bright square (the 'person') moving right on a grey background, 96x80."""
    frames = np.full((n, 80, 96, 3), 90, np.uint8)
    for t in range(n):
        frames[t, 30:50, 20 + t:40 + t] = 230
    return frames


def keypoints(n: int = N, missing: tuple[int, ...] = (), confidence: float = 0.9) -> list:
    """BlazePose's 33 points: shoulders and hips around the square, the rest unseen (confidence 0)."""
    out = []
    for t in range(n):
        if t in missing:
            out.append(None)
            continue
        pts = [[0.5, 0.5, 0.0]] * 33
        x0, x1 = (22 + t) / 96, (38 + t) / 96
        for i, (x, y) in {11: (x1, 32 / 80), 12: (x0, 32 / 80), 23: (x1, 48 / 80), 24: (x0, 48 / 80)}.items():
            pts[i] = [x, y, confidence]
        out.append(pts)
    return out


def write_clip(tmp_path: Path, poses: list) -> tuple[Path, Path]:
    folder = tmp_path / "frames"
    folder.mkdir(parents=True)
    for t, f in enumerate(clip_frames(len(poses))):
        Image.fromarray(f).save(folder / f"{t:04d}.png")
    (tmp_path / "poses.json").write_text(json.dumps({"detector": "test points", "keypoints": poses}))
    return folder, tmp_path / "poses.json"


def test_a_clip_becomes_the_dance_layout_split_in_time(tmp_path):
    folder, poses = write_clip(tmp_path, keypoints(missing=(3, 4)))
    report = make_dance_from_video(folder, tmp_path / "dance", poses=poses)
    assert report.split == {"train": 28, "val": 6, "test": 6}
    assert (report.frames, report.detected, report.held) == (N, 38, 2)
    assert report.mean_confidence == pytest.approx(4 * 0.9 / 33)
    # the layout the loader reads: training is frames 0-27, validation 28-33, the test video 34-39
    cfg = load_config("dancer-small", [f"data.root={tmp_path / 'dance'}"]).data
    train, val = load_dance(tmp_path / "dance", "train", cfg), load_dance(tmp_path / "dance", "val", cfg)
    assert (len(train.frames), len(val.frames)) == (28, 6)
    first_val = np.asarray(Image.open(tmp_path / "dance/val/val_img/0.png"))
    square = np.argwhere(first_val[..., 0] > 160)[:, 1]
    # the crop is the full width (96 -> 1:2 is 96x48): frame 28's square starts at x = 48 of 96
    assert report.crop == (0, 16, 96, 64)
    assert square.min() == pytest.approx(48 * 128 / 96, abs=2)
    assert sorted(p.name for p in (tmp_path / "dance/test/test_img/0").iterdir()) == ["0.png"]
    assert len(list((tmp_path / "dance/test/test_gt/0").iterdir())) == 6
    manifest = json.loads((tmp_path / "dance/vpsearch-dataset.json").read_text())
    assert manifest["video"]["held"] == 2 and manifest["counts"] == {"train_frames": 28, "val_frames": 6,
                                                                     "test_frames": 6}


def test_a_limb_is_as_bright_as_the_detector_is_sure(tmp_path):
    colours = {}
    for conf in (1.0, 0.5, 0.1):
        folder, poses = write_clip(tmp_path / str(conf), keypoints(confidence=conf))
        make_dance_from_video(folder, tmp_path / str(conf) / "dance", poses=poses)
        label = np.asarray(Image.open(tmp_path / str(conf) / "dance/train/train_label/0.png"))
        colours[conf] = label.reshape(-1, 3).max(0)
    shoulders = np.array(next(c for a, b, c in BLAZEPOSE_LIMBS if (a, b) == (11, 12)))
    assert (colours[1.0] >= shoulders).all()  # the shoulder line drawn in full
    assert np.abs(colours[0.5].astype(int) - np.round(colours[1.0] * 0.5)).max() <= 1
    assert not colours[0.1].any()  # below MIN_CONFIDENCE nothing is drawn


def test_an_mp4_is_read_frame_by_frame(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 80, "yuv420p"
        for f in clip_frames(12):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode(None))
    from vpsearch.data.from_video import read_video

    frames, fps = read_video(path)
    assert frames.shape == (12, 80, 96, 3) and fps == pytest.approx(10)
    assert abs(int(frames[5, 40, 30, 0]) - 230) < 20 and abs(int(frames[5, 10, 80, 0]) - 90) < 20

    big = tmp_path / "big.mp4"  # decoded no larger than MAX_SIDE: memory stays bounded on long HD clips
    with av.open(str(big), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        frame = np.zeros((720, 1280, 3), np.uint8)
        frame[:, :640] = 200
        out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    frames, _ = read_video(big)
    assert frames.shape == (1, 288, 512, 3) and frames[0, 100, 100, 0] > 180 and frames[0, 100, 400, 0] < 20


FAKE_MEDIAPIPE = '''
import numpy as np
__version__ = "fake"
class _P:
    def __init__(self, x, y, v): self.x, self.y, self.visibility = x, y, v
class _Found:
    def __init__(self, frame):
        x = float(np.argwhere(frame[..., 0] > 160)[:, 1].mean()) / frame.shape[1]
        self.landmark = [_P(x, 0.5, 0.9)] * 33
class _R:
    def __init__(self, frame): self.pose_landmarks = None if frame.mean() < 1 else _Found(frame)
class Pose:
    def __init__(self, **kw): pass
    def __enter__(self): return self
    def __exit__(self, *a): return False
    def process(self, frame): return _R(frame)
class solutions:
    class pose:
        Pose = Pose
'''


def test_the_detector_runs_in_another_python_and_its_misses_are_counted(tmp_path, monkeypatch):
    """--detector-python: pose_detector.py in a Python of its own (here one whose mediapipe is a stand-in
    that finds the square's centre, and nobody in black frames)."""
    (tmp_path / "mp/mediapipe").mkdir(parents=True)
    (tmp_path / "mp/mediapipe/__init__.py").write_text(FAKE_MEDIAPIPE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "mp"))
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(clip_frames()):
        Image.fromarray(f if t != 10 else np.zeros_like(f)).save(folder / f"{t:04d}.png")
    proc = vp("data", "make", "dance", "--from-video", folder, "--out", tmp_path / "dance",
              "--detector-python", sys.executable)
    assert proc.returncode == 0, proc.stderr
    assert "person found in 39/40 frames, mean keypoint confidence 0.90; 1 frames took" in proc.stdout
    assert "split in time: train 28 frames, val 6 frames, test 6 frames" in proc.stdout
    assert "next: vpsearch train -c dancer-real-small --set data.root=" in proc.stdout


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    folder, poses = write_clip(tmp_path, keypoints())
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"keypoints": keypoints(N - 1)}))
    one_line(vp("data", "make", "dance", "--from-video", folder, "--out", tmp_path / "a", "--poses", short),
             "short.json", "39 keypoint entries for a video of 40 frames")
    nobody = tmp_path / "nobody.json"
    nobody.write_text(json.dumps({"keypoints": [None] * N}))
    one_line(vp("data", "make", "dance", "--from-video", folder, "--out", tmp_path / "a", "--poses", nobody),
             "found no person in any frame")
    one_line(vp("data", "make", "dance", "--from-video", tmp_path / "none.mp4", "--out", tmp_path / "a"),
             "none.mp4", "no such video file")
    (tmp_path / "bad.mp4").write_text("not a video")
    if __import__("importlib").util.find_spec("av"):
        one_line(vp("data", "make", "dance", "--from-video", tmp_path / "bad.mp4", "--out", tmp_path / "a",
                    "--poses", poses), "bad.mp4", "not a readable video")
    assert not (tmp_path / "a").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    one_line(vp("data", "make", "dance", "--from-video", folder, "--out", mine, "--poses", poses),
             "mine", "not a dataset vpsearch wrote")
    assert (mine / "notes.txt").read_text() == "keep"
