"""Built-in pose-conditioned dance data: an articulated figure dancing, in the lab's layout.

Writes what the dance loader reads (``vpsearch.data.dance``)::

    ROOT/train/train_img/<k>.png   ROOT/train/train_label/<k>.png   one long video
    ROOT/val/val_img/<k>.png       ROOT/val/val_label/<k>.png       one video
    ROOT/test/test_img/<i>/0.png   ROOT/test/test_label/<i>/<k>.png first frame + all labels
    ROOT/test/test_gt/<i>/<k>.png  every RGB frame of test video i (vpsearch extension:
                                   the real set withholds these; we keep them to score tests)
    ROOT/vpsearch-dataset.json     generator, version, seed, counts

The figure is 15 joints / 14 limbs moved by forward kinematics: every joint angle is a
sum of sinusoids at harmonics of a per-video tempo (coordinated, dance-like), plus a slow
sway across the frame and a bounce on the beat. The label image is the skeleton, one
fixed colour per limb on black (the label vocabulary never changes). The RGB frame draws
the same pose with thick shaded limbs and a filled head in a per-video palette over a
per-video background, so appearance must come from the first frame and motion from the
labels; a frame is a deterministic function of (labels, appearance of frame 0).

The training video changes style (tempo, energy, palette, background) every
``SEGMENT`` frames, a multiple of 16, so the lab's non-overlapping 16-frame windows never
straddle a cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vpsearch.data.generators import dataset_folder
from vpsearch.errors import UserError

VERSION = 1
SEGMENT = 320  # training frames per style; a multiple of 16 (see module docstring)
FPS = 30.0  # nominal frame rate the tempi below are expressed in

JOINTS = ("head", "neck", "pelvis", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder",
          "r_elbow", "r_wrist", "l_hip", "l_knee", "l_ankle", "r_hip", "r_knee", "r_ankle")
# (from, to, label colour): OpenPose-like, one distinct colour per limb.
LIMBS: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ("neck", "head", (255, 0, 85)), ("neck", "pelvis", (255, 0, 0)),
    ("neck", "l_shoulder", (255, 85, 0)), ("l_shoulder", "l_elbow", (255, 170, 0)),
    ("l_elbow", "l_wrist", (255, 255, 0)), ("neck", "r_shoulder", (170, 255, 0)),
    ("r_shoulder", "r_elbow", (85, 255, 0)), ("r_elbow", "r_wrist", (0, 255, 0)),
    ("pelvis", "l_hip", (0, 255, 170)), ("l_hip", "l_knee", (0, 255, 255)),
    ("l_knee", "l_ankle", (0, 170, 255)), ("pelvis", "r_hip", (0, 85, 255)),
    ("r_hip", "r_knee", (0, 0, 255)), ("r_knee", "r_ankle", (170, 0, 255)),
)
# Bone lengths as fractions of the frame height.
_LEN = {"head": 0.10, "torso": 0.28, "shoulder": 0.09, "upper_arm": 0.16, "forearm": 0.15,
        "hip": 0.06, "thigh": 0.20, "shin": 0.19}
# Angle (radians, 0 = hanging down, positive = towards +x) -> (centre, half range).
_ANGLES = {"torso": (0.0, 0.30), "head": (0.0, 0.35),
           "l_upper": (1.3, 1.4), "l_elbow": (0.9, 0.9), "r_upper": (1.3, 1.4), "r_elbow": (0.9, 0.9),
           "l_thigh": (0.3, 0.45), "l_knee": (0.6, 0.6), "r_thigh": (0.3, 0.45), "r_knee": (0.6, 0.6)}


@dataclass
class Appearance:
    background: np.ndarray  # (H, W, 3) uint8
    shirt: np.ndarray  # (3,) each a body-part colour
    skin: np.ndarray
    pants: np.ndarray
    hair: np.ndarray


def _trajectory(rng: np.random.Generator, t: np.ndarray, tempo: float, energy: float,
                centre: float, half: float) -> np.ndarray:
    """centre + half * energy * (weighted sum of 3 sinusoids at harmonics of the tempo)."""
    mult = rng.choice([0.5, 1.0, 1.0, 2.0, 3.0], size=3)
    w = rng.dirichlet(np.ones(3))
    phase = rng.uniform(0, 2 * np.pi, size=3)
    s = (w[:, None] * np.sin(2 * np.pi * tempo * mult[:, None] * t[None] / FPS + phase[:, None])).sum(0)
    return centre + half * energy * s


def dance_poses(rng: np.random.Generator, n: int, height: int, width: int) -> dict[str, np.ndarray]:
    """Joint positions {name: (n, 2) float [x, y] pixels} for one video (or segment)."""
    t = np.arange(n, dtype=np.float64)
    tempo = rng.uniform(0.6, 1.4)  # beats per second
    energy = rng.uniform(0.55, 1.0)
    a = {k: _trajectory(rng, t, tempo, energy, c, h) for k, (c, h) in _ANGLES.items()}
    H = float(height)
    # Slow sway across the frame plus a bounce on the beat.
    reach = max(0.0, width / 2 - 0.35 * H) * rng.uniform(0.4, 1.0)
    cx = width / 2 + reach * np.sin(2 * np.pi * rng.uniform(0.04, 0.12) * t / FPS + rng.uniform(0, 6.3))
    cy = 0.52 * H + 0.04 * H * np.sin(2 * np.pi * tempo * t / FPS + rng.uniform(0, 6.3))

    def step(p: np.ndarray, angle: np.ndarray, length: float) -> np.ndarray:
        return p + length * H * np.stack([np.sin(angle), np.cos(angle)], -1)

    j: dict[str, np.ndarray] = {"pelvis": np.stack([cx, cy], -1)}
    up = np.pi + a["torso"]  # torso points up from the pelvis
    j["neck"] = step(j["pelvis"], up, _LEN["torso"])
    j["head"] = step(j["neck"], up + a["head"], _LEN["head"])
    for side, sign in (("l", 1.0), ("r", -1.0)):
        # shoulders and hips sit perpendicular to the torso
        j[f"{side}_shoulder"] = step(j["neck"], a["torso"] + sign * np.pi / 2, _LEN["shoulder"])
        upper = a["torso"] + sign * a[f"{side}_upper"]
        j[f"{side}_elbow"] = step(j[f"{side}_shoulder"], upper, _LEN["upper_arm"])
        j[f"{side}_wrist"] = step(j[f"{side}_elbow"], upper + sign * a[f"{side}_elbow"], _LEN["forearm"])
        j[f"{side}_hip"] = step(j["pelvis"], a["torso"] + sign * np.pi / 2, _LEN["hip"])
        thigh = sign * a[f"{side}_thigh"]
        j[f"{side}_knee"] = step(j[f"{side}_hip"], thigh, _LEN["thigh"])
        j[f"{side}_ankle"] = step(j[f"{side}_knee"], thigh - sign * a[f"{side}_knee"], _LEN["shin"])
    return j


def _colour(rng: np.random.Generator, away_from: np.ndarray, min_dist: float = 110.0) -> np.ndarray:
    # Rejection sampling keeps the body visible against the background.
    for _ in range(100):
        c = rng.integers(0, 256, size=3)
        if np.linalg.norm(c - away_from) >= min_dist:
            return c
    return 255 - away_from.astype(np.int64)


def appearance(rng: np.random.Generator, height: int, width: int) -> Appearance:
    c1, c2 = rng.integers(20, 236, size=(2, 3)).astype(np.float64)
    kind = rng.integers(4)
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    if kind == 0:  # vertical gradient
        f = np.broadcast_to(y, (height, width, 1))
    elif kind == 1:  # horizontal gradient
        f = np.broadcast_to(x, (height, width, 1))
    elif kind == 2:  # diagonal gradient
        f = (x + y) / 2
    else:  # vertical stripes, period scaled with the frame
        period = rng.uniform(0.15, 0.4) * height
        f = np.broadcast_to((np.arange(width)[None, :, None] // (period / 2)) % 2, (height, width, 1))
    bg = (c1 * (1 - f) + c2 * f).round().astype(np.uint8)
    mean = bg.reshape(-1, 3).mean(0)
    return Appearance(bg, *(_colour(rng, mean) for _ in range(4)))


def render_label(joints: dict[str, np.ndarray], k: int, height: int, width: int) -> Image.Image:
    img = Image.new("RGB", (width, height))
    d = ImageDraw.Draw(img)
    lw = max(2, round(3 * height / 64))  # survives the loader's 2x NEAREST downscale
    for a, b, colour in LIMBS:
        d.line([tuple(joints[a][k]), tuple(joints[b][k])], fill=colour, width=lw)
    return img


def render_frame(joints: dict[str, np.ndarray], k: int, app: Appearance) -> Image.Image:
    height, width = app.background.shape[:2]
    img = Image.fromarray(app.background)
    d = ImageDraw.Draw(img)
    p = {name: tuple(v[k]) for name, v in joints.items()}

    def limb(a: str, b: str, colour: np.ndarray, width_frac: float, shade: float) -> None:
        c = tuple(int(v) for v in (colour * shade).clip(0, 255))
        hi = tuple(int(v) for v in (colour * shade * 0.6 + 255 * 0.4).clip(0, 255))
        w = max(2, round(width_frac * height))
        d.line([p[a], p[b]], fill=c, width=w)
        r = w / 2  # round the joint so the bent limb stays closed
        d.ellipse([p[b][0] - r, p[b][1] - r, p[b][0] + r, p[b][1] + r], fill=c)
        d.line([p[a], p[b]], fill=hi, width=max(1, w // 3))  # highlight along the limb axis

    def side(s: str, shade: float, legs: bool) -> None:
        if legs:
            limb(f"{s}_hip", f"{s}_knee", app.pants, 0.09, shade)
            limb(f"{s}_knee", f"{s}_ankle", app.pants, 0.08, shade * 0.8)
        else:
            limb(f"{s}_shoulder", f"{s}_elbow", app.shirt, 0.07, shade)
            limb(f"{s}_elbow", f"{s}_wrist", app.skin, 0.06, shade)

    # Fixed painter's order: far (right) side, torso, head, near (left) side.
    side("r", 0.7, legs=False)
    side("r", 0.7, legs=True)
    torso = [p["l_shoulder"], p["r_shoulder"], p["r_hip"], p["l_hip"]]
    d.polygon(torso, fill=tuple(int(v) for v in app.shirt))
    r = 0.075 * height
    hx, hy = p["head"]
    d.ellipse([hx - r, hy - r, hx + r, hy + r], fill=tuple(int(v) for v in app.skin))
    d.chord([hx - r, hy - r, hx + r, hy + r], 180, 360, fill=tuple(int(v) for v in app.hair))
    side("l", 1.0, legs=True)
    side("l", 1.0, legs=False)
    return img


def _write_video(rng: np.random.Generator, n: int, height: int, width: int, label_dir: Path,
                 img_dir: Path, first_dir: Path | None = None, offset: int = 0) -> None:
    """Render n frames of one style as ``<offset + k>.png``: labels to label_dir, RGB to
    img_dir, and the first RGB frame also to first_dir (the test split's given frame)."""
    joints = dance_poses(rng, n, height, width)
    app = appearance(rng, height, width)
    for d in (label_dir, img_dir, first_dir):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        name = f"{offset + k}.png"
        render_label(joints, k, height, width).save(label_dir / name, compress_level=1)
        frame = render_frame(joints, k, app)
        frame.save(img_dir / name, compress_level=1)
        if k == 0 and first_dir is not None:
            frame.save(first_dir / name, compress_level=1)


def make_dancer(out: Path, *, train_frames: int = 3000, val_frames: int = 630, test_videos: int = 5,
                test_frames: int = 630, seed: int = 0, height: int = 64, width: int = 128) -> Path:
    """Write the dance layout under ``out`` and return it.

    Every video draws from its own seeded stream, so changing one count leaves the
    other splits unchanged. The set is built in a sibling temporary folder and moved into
    place; an existing ``out`` is replaced only if it is empty or a previous generator
    output (it holds ``vpsearch-dataset.json``).
    """
    if min(train_frames, val_frames, test_videos, test_frames) < 1:
        raise UserError("make_dancer: every count must be at least 1")
    with dataset_folder(out) as (tmp, meta):
        # Training is one long video whose style changes every SEGMENT frames.
        for s, start in enumerate(range(0, train_frames, SEGMENT)):
            _write_video(np.random.default_rng([seed, 0, s]), min(SEGMENT, train_frames - start),
                         height, width, tmp / "train/train_label", tmp / "train/train_img", offset=start)
        _write_video(np.random.default_rng([seed, 1]), val_frames, height, width,
                     tmp / "val/val_label", tmp / "val/val_img")
        for i in range(test_videos):
            _write_video(np.random.default_rng([seed, 2, i]), test_frames, height, width,
                         tmp / f"test/test_label/{i}", tmp / f"test/test_gt/{i}",
                         first_dir=tmp / f"test/test_img/{i}")
        meta.update({"generator": "dancer", "version": VERSION, "format": "dance", "seed": seed,
                     "height": height, "width": width,
                     "counts": {"train_frames": train_frames, "val_frames": val_frames,
                                "test_videos": test_videos, "test_frames": test_frames},
                     "joints": len(JOINTS), "limbs": len(LIMBS), "train_segment": SEGMENT,
                     "note": "test/test_gt holds every RGB test frame: a vpsearch extension the real set lacks"})
    return Path(out)
