"""A real video in the dance layout: frames cropped to the layout's 1:2 shape, the pose drawn as labels.

    vpsearch data make dance --from-video clip.mp4 --out data/clip [--poses poses.json]

The pose comes from a real detector: MediaPipe's pose landmarker (data/pose_detector.py, run here
when mediapipe imports, else with --detector-python), or a keypoint file of any detector in the
same form. The label draws each limb in its own colour, scaled by the detector's confidence in its
two ends (a limb it barely saw is dim, one it did not see is absent), so a model can learn how far
to trust it. Frames where no person was found take the pose of the nearest frame that had one,
and are counted.

The clip is split in time, never interleaved: the first part trains, the next stretch validates,
the last stretch is the test video (its first frame given, every frame kept in test_gt, as the
built-in generator does), so scores are on moments the model never saw.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vpsearch.data.base import DataError
from vpsearch.data.generators import MANIFEST, dataset_folder

# BlazePose's 33 points: (a, b, colour) of the limbs drawn; the face is one nose-to-shoulders mark
BLAZEPOSE_LIMBS = [
    (11, 12, (255, 255, 0)), (11, 13, (255, 0, 0)), (13, 15, (255, 128, 0)), (12, 14, (0, 0, 255)),
    (14, 16, (0, 128, 255)), (11, 23, (255, 0, 255)), (12, 24, (0, 255, 255)), (23, 24, (128, 255, 0)),
    (23, 25, (255, 0, 128)), (25, 27, (128, 0, 255)), (24, 26, (0, 255, 128)), (26, 28, (0, 128, 128)),
    (0, 11, (255, 255, 255)), (0, 12, (192, 192, 192)), (7, 8, (128, 128, 255)),
]
MIN_CONFIDENCE = 0.2  # a limb whose weaker end the detector gives less than this is not drawn
MAX_SIDE = 512  # pixels: a video is decoded no larger
SPLIT = (0.7, 0.15, 0.15)  # train, validation, test: consecutive stretches of the clip


@dataclass
class VideoReport:
    source: str
    frames: int
    fps: float
    input_size: tuple[int, int]  # width, height
    crop: tuple[int, int, int, int]  # left, top, right, bottom of the window kept
    written_size: tuple[int, int]
    detector: str
    detected: int  # frames where the detector found a person
    held: int  # frames that took the nearest detected frame's pose
    mean_confidence: float  # over detected frames: the mean keypoint confidence
    split: dict[str, int]

    def lines(self) -> list[str]:
        (w, h), (cw, ch) = self.input_size, self.written_size
        rate = f"{self.fps:.2f} fps" if self.fps else "an unknown frame rate (a folder of frames)"
        return [f"{self.source}: {self.frames} frames, {w}x{h} at {rate}; kept the window "
                f"{self.crop} (the 1:2 shape of the layout), written at {cw}x{ch}",
                f"pose: {self.detector}; person found in {self.detected}/{self.frames} frames, mean keypoint "
                f"confidence {self.mean_confidence:.2f}; {self.held} frames took the nearest detected frame's pose",
                "split in time: " + ", ".join(f"{k} {n} frames" for k, n in self.split.items())]


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """uint8 RGB frames (N, H, W, 3) and the frame rate, of a video file or a folder of images."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not files:
            raise DataError(f"{path}: no .png or .jpg frames in the folder")
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files]), 0.0
    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    try:
        import av
    except ImportError:
        raise DataError(f"reading {path} needs PyAV: pip install 'vpsearch[video]' (or give a folder of "
                        "frames)") from None
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # decoded at most MAX_SIDE wide or high: the detector looks at 256x256 and the layout keeps
            # 128x64, so a minute of 1080p costs a few hundred MB here instead of 20 GB
            w, h = stream.codec_context.width, stream.codec_context.height
            scale = min(1.0, MAX_SIDE / max(w, h, 1))
            size = {"width": round(w * scale) // 2 * 2, "height": round(h * scale) // 2 * 2} if scale < 1 else {}
            frames = [f.to_ndarray(format="rgb24", **size) for f in container.decode(stream)]
            fps = float(stream.average_rate or 0)
    except (av.error.FFmpegError, IndexError) as e:
        raise DataError(f"{path}: not a readable video ({e})") from None
    if not frames:
        raise DataError(f"{path}: the video holds no frames")
    return np.stack(frames), fps


def detect_poses(frames: np.ndarray, python: str | None = None) -> dict:
    """MediaPipe's keypoints per frame (pose_detector.py), in this process or with `python`."""
    from vpsearch.data import pose_detector

    if python is None:
        try:
            return pose_detector.detect(frames)
        except ImportError:
            raise DataError("the pose needs mediapipe 0.10.x (pip install 'mediapipe==0.10.21', which pins "
                            "NumPy < 2: in an environment of its own, then --detector-python ITS_PYTHON), "
                            "or keypoints of any detector with --poses FILE") from None
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "frames.npy", frames)
        proc = subprocess.run([python, pose_detector.__file__, str(Path(tmp) / "frames.npy"),
                               str(Path(tmp) / "poses.json")], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"the pose detector in {python} failed: {last}")
        return json.loads((Path(tmp) / "poses.json").read_text())


def load_poses(path: Path, n_frames: int) -> dict:
    try:
        poses = json.loads(Path(path).read_text())
        keypoints = poses["keypoints"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: expected a JSON object with 'keypoints' (one entry per frame): {e}") from None
    if len(keypoints) != n_frames:
        raise DataError(f"{path}: {len(keypoints)} keypoint entries for a video of {n_frames} frames")
    return poses


def _filled(keypoints: list) -> tuple[np.ndarray, int]:
    """(N, 33, 3) keypoints with every missed frame given its nearest detected frame's pose."""
    found = [i for i, k in enumerate(keypoints) if k is not None]
    if not found:
        raise DataError("the pose detector found no person in any frame")
    for i, k in ((i, keypoints[i]) for i in found):
        if np.shape(k) != (33, 3):
            raise DataError(f"keypoints of frame {i}: expected 33 points of [x, y, confidence] "
                            f"(BlazePose), got shape {np.shape(k)}")
    idx = np.array(found)
    nearest = idx[np.abs(np.arange(len(keypoints))[:, None] - idx[None, :]).argmin(1)]
    return np.array([keypoints[j] for j in nearest], dtype=np.float64), len(keypoints) - len(found)


def crop_window(points: np.ndarray, width: int, height: int, aspect: float = 2.0) -> tuple[int, int, int, int]:
    """The largest window of width/height `aspect` in the frame, centred on the median pose."""
    seen = points[..., 2] >= MIN_CONFIDENCE
    cx = float(np.median(points[..., 0][seen])) * width if seen.any() else width / 2
    cy = float(np.median(points[..., 1][seen])) * height if seen.any() else height / 2
    cw = min(width, round(height * aspect))
    ch = min(height, round(cw / aspect))
    left = int(np.clip(round(cx - cw / 2), 0, width - cw))
    top = int(np.clip(round(cy - ch / 2), 0, height - ch))
    return left, top, left + cw, top + ch


def render_pose(points: np.ndarray, crop: tuple[int, int, int, int], size: tuple[int, int],
                frame_size: tuple[int, int]) -> Image.Image:
    """The label: each limb in its colour scaled by its weaker end's confidence."""
    (w, h), (fw, fh) = size, frame_size
    left, top, right, bottom = crop
    xy = np.stack([(points[:, 0] * fw - left) / (right - left) * w,
                   (points[:, 1] * fh - top) / (bottom - top) * h], 1)
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    lw = max(2, round(3 * h / 64))  # survives the loader's 2x nearest downscale, as the generator's does
    for a, b, colour in BLAZEPOSE_LIMBS:
        conf = min(points[a, 2], points[b, 2])
        if conf >= MIN_CONFIDENCE:
            draw.line([tuple(xy[a]), tuple(xy[b])], fill=tuple(int(c * conf) for c in colour), width=lw)
    return img


def make_dance_from_video(video: Path, out: Path, *, poses: Path | None = None, detector_python: str | None = None,
                          height: int = 64, width: int = 128) -> VideoReport:
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():  # before the slow part
        raise DataError(f"{out}: exists and is not a dataset vpsearch wrote; pass an empty or new --out")
    frames, fps = read_video(video)
    n = len(frames)
    n_val, n_test = max(2, round(n * SPLIT[1])), max(2, round(n * SPLIT[2]))
    if n - n_val - n_test < 2:
        raise DataError(f"{video}: {n} frames; a split in time needs at least 6")
    raw = load_poses(poses, n) if poses else detect_poses(frames, detector_python)
    points, held = _filled(raw["keypoints"])
    fh, fw = frames.shape[1:3]
    crop = crop_window(points, fw, fh, width / height)
    detected = [np.asarray(k)[:, 2].mean() for k in raw["keypoints"] if k is not None]
    stretches = {"train": range(0, n - n_val - n_test), "val": range(n - n_val - n_test, n - n_test),
                 "test": range(n - n_test, n)}
    with dataset_folder(out) as (tmp, meta):
        folders = {"train": ("train/train_img", "train/train_label"), "val": ("val/val_img", "val/val_label"),
                   "test": ("test/test_gt/0", "test/test_label/0")}
        for split, frames_at in stretches.items():
            img_dir, label_dir = (tmp / f for f in folders[split])
            img_dir.mkdir(parents=True)
            label_dir.mkdir(parents=True)
            for k, i in enumerate(frames_at):
                name = f"{i if split == 'train' else k}.png"  # each video's frames count from 0
                Image.fromarray(frames[i]).crop(crop).resize((width, height), Image.Resampling.BOX).save(img_dir / name)
                render_pose(points[i], crop, (width, height), (fw, fh)).save(label_dir / name)
        (tmp / "test/test_img/0").mkdir(parents=True)
        shutil.copy(tmp / "test/test_gt/0/0.png", tmp / "test/test_img/0/0.png")  # the given first frame
        report = VideoReport(source=str(video), frames=n, fps=fps, input_size=(fw, fh), crop=crop,
                             written_size=(width, height), detector=str(raw.get("detector", "keypoints file")),
                             detected=len(detected), held=held,
                             mean_confidence=float(np.mean(detected)), split={k: len(r) for k, r in stretches.items()})
        meta.update({"generator": "from-video", "format": "dance", "height": height, "width": width,
                     "counts": {f"{k}_frames": len(r) for k, r in stretches.items()}, "video": asdict(report),
                     "note": "split in time: train, then validation, then test (test/test_gt holds its frames)"})
    return report

