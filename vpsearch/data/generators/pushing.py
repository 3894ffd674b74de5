"""Built-in action-conditioned pushing scene, written in the processed BAIR format.

Layout (what :func:`vpsearch.data.bair.load_bair` reads)::

    OUT/{train,validate,test}/traj_<a>_to_<b>.tfrecords/<n>/0.png ... <T-1>.png
                                                          actions.csv
                                                          endeffector_positions.csv
    OUT/vpsearch-dataset.json   written last: its presence marks a complete dataset

Sequences are grouped 256 to a ``traj_*`` folder like the real set; ``<n>`` counts
within the group.

Scene: a table top seen from above (wood-like texture and a gradient, varied a little
per sequence) inside darker bin walls; 1-3 coloured discs or boxes; a robot arm coming
in from the top edge and ending in a two-fingered gripper. The gripper is drawn lifted
by its height z (bigger, lighter, shifted up the image) while its shadow marks its
(x, y) on the table. Objects move only when the gripper, low enough to touch them
(z < Z_CONTACT), runs into them; friction stops them within a few frames and the bin
walls keep them on the table. Boxes collide as discs (the physics stays one rule).

Condition convention: the real BAIR set's (one row per frame, written at frame t):

* ``actions.csv`` row t = (dx, dy, dz, gripper): the command applied AFTER frame t, which
  takes the scene from frame t to frame t+1 (the last row is a command whose result is
  never filmed). dx, dy, dz are fractions of the top speed SPEED, in [-1, 1]; gripper is
  1 closed, 0 open (the state drawn in frame t+1).
* ``endeffector_positions.csv`` row t = (x, y, z): the gripper position shown in frame t;
  x, y in [-1, 1] (left to right, top to bottom of the table), z in [0, 1].
  Hence position[t+1] = clip(position[t] + SPEED * action[t, :3]): predicting frame t
  needs action row t-1 and/or position row t (``model.action_index: previous``,
  ``model.position_index: current``).

Determinism: sequence i of split s draws from ``SeedSequence([seed, crc32(s), i])``,
so its bytes do not depend on the split sizes or on how work is spread over processes.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from vpsearch.errors import UserError

GENERATOR = "pushing"
VERSION = 3  # 3: action row t is the command after frame t (the real set); 2: faster drawing
GROUP = 256  # sequences per traj_<a>_to_<b>.tfrecords folder, as in the real set

SPEED = np.array([0.12, 0.12, 0.15])  # table units per frame at |command| = 1 (x, y, z)
REACH = 0.85  # the gripper's x, y stay in [-REACH, REACH]
WALL = 0.9  # bin walls start here (table units); objects stay inside
PUSHER_R = 0.12  # contact radius of the gripper on the table
Z_CONTACT = 0.3  # below this height the gripper pushes objects
FRICTION = 0.55  # velocity kept per frame by a sliding object
SUBSTEPS = 4  # physics steps per frame, so a fast gripper cannot tunnel through objects
PALETTE = np.array([[0.85, 0.15, 0.15], [0.15, 0.65, 0.2], [0.15, 0.3, 0.85], [0.9, 0.8, 0.1],
                    [0.6, 0.2, 0.75], [0.95, 0.5, 0.1], [0.1, 0.75, 0.8]])


def make_pushing(out: Path, *, train: int = 2000, validate: int = 64, test: int = 256,
                 seed: int = 0, frames: int = 30, size: int = 64) -> Path:
    """Write the pushing dataset to ``out`` and return ``out``.

    Existing files of the same names are overwritten; nothing else in ``out`` is removed.
    """
    if seed < 0 or frames < 1 or size < 8 or min(train, validate, test) < 0:
        raise UserError(f"make_pushing: need seed >= 0, frames >= 1, size >= 8 and counts >= 0 "
                         f"(got seed={seed}, frames={frames}, size={size})")
    out = Path(out)
    counts = {"train": train, "validate": validate, "test": test}
    jobs = [(out, split, i, seed, frames, size) for split, n in counts.items() for i in range(n)]
    if len(jobs) <= 64:  # a pool costs more to start than a few sequences take to draw
        for job in jobs:
            _write_sequence(job)
    else:
        with get_context().Pool(processes=min(2, os.cpu_count() or 1)) as pool:
            for _ in pool.imap_unordered(_write_sequence, jobs, chunksize=16):
                pass
    meta = {"generator": GENERATOR, "version": VERSION, "seed": seed, "frames": frames,
            "size": size, "counts": counts,
            "cond": ["dx", "dy", "dz", "gripper", "x", "y", "z"]}
    (out / "vpsearch-dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def sequence_dir(out: Path, split: str, index: int) -> Path:
    a = index - index % GROUP
    return out / split / f"traj_{a}_to_{a + GROUP - 1}.tfrecords" / str(index - a)


def _write_sequence(job: tuple[Path, str, int, int, int, int]) -> None:
    out, split, index, seed, frames, size = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))
    video, actions, positions = simulate(rng, frames, size)
    d = sequence_dir(out, split, index)
    d.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(video):
        # compress_level=1: these files are read once into the cache, so speed beats size
        Image.fromarray(frame).save(d / f"{t}.png", compress_level=1)
    _write_csv(d / "actions.csv", actions)
    _write_csv(d / "endeffector_positions.csv", positions)


def _write_csv(path: Path, rows: np.ndarray) -> None:
    path.write_text("".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in rows))


def simulate(rng: np.random.Generator, frames: int, size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sequence: video (T, S, S, 3) uint8, actions (T, 4), positions (T, 3)."""
    n_obj = int(rng.integers(1, 4))
    radius = rng.uniform(0.16, 0.24, n_obj)
    q = _place_objects(rng, radius)  # (n_obj, 2) object centres
    v = np.zeros_like(q)
    box = rng.random(n_obj) < 0.4
    colour = np.clip(PALETTE[rng.choice(len(PALETTE), n_obj, replace=False)]
                     + rng.normal(0, 0.04, (n_obj, 3)), 0, 1)
    p = np.array([*rng.uniform(-REACH, REACH, 2), rng.uniform(0.4, 1.0)])  # start lifted
    scene = _Scene(size, rng)
    actions = np.zeros((frames, 4))
    positions = np.zeros((frames, 3))
    video = np.zeros((frames, size, size, 3), np.uint8)
    grip = 0.0
    goal, hold = p.copy(), 0
    for t in range(frames):
        positions[t] = p
        video[t] = scene.render(p, grip, q, radius, box, colour)
        # the command after frame t, also after the last one (the real set records it too)
        if hold == 0:
            goal, hold = _new_goal(rng, p, q), int(rng.integers(5, 12))
        hold -= 1
        if rng.random() < 0.08:
            grip = 1.0 - grip
        # proportional steering with noise: smooth, but not a straight line. Rounded to
        # what actions.csv stores, so the file determines the motion exactly.
        cmd = np.round(np.clip(0.7 * (goal - p) / SPEED + rng.normal(0, 0.15, 3), -1, 1), 6)
        actions[t] = [*cmd, grip]
        if t < frames - 1:
            p, q, v = step(p, cmd, q, v, radius)
    return video, actions, positions


def _place_objects(rng: np.random.Generator, radius: np.ndarray) -> np.ndarray:
    q = np.zeros((len(radius), 2))
    for i, r in enumerate(radius):
        for _ in range(100):  # rejection sampling; 3 small objects always fit
            q[i] = rng.uniform(-WALL + r, WALL - r, 2)
            if all(np.hypot(*(q[i] - q[j])) > r + radius[j] + 0.05 for j in range(i)):
                break
    return q


def _new_goal(rng: np.random.Generator, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    if rng.random() < 0.65:
        # aim through an object so the gripper pushes it along
        target = q[rng.integers(len(q))]
        d = target - p[:2]
        xy = target + d / (np.hypot(*d) + 1e-6) * rng.uniform(0.2, 0.5)
        z = rng.uniform(0.0, 0.15)
    else:
        xy = rng.uniform(-REACH, REACH, 2)
        z = rng.uniform(0.5, 1.0) if rng.random() < 0.3 else rng.uniform(0.0, 0.2)
    return np.array([*np.clip(xy, -REACH, REACH), z])


def step(p: np.ndarray, cmd: np.ndarray, q: np.ndarray, v: np.ndarray, radius: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Advance one frame: move the gripper by cmd, push, collide, slide with friction.

    p (3,) gripper x, y, z; cmd (3,) in [-1, 1]; q, v (K, 2) object centres and
    velocities; radius (K,). Returns the new p, q, v (the inputs are not changed).
    """
    # Plain floats: numpy's per-call overhead on 2-vectors made this the slow part.
    x, y, z = p.tolist()
    dx, dy, dz = (SPEED * cmd / SUBSTEPS).tolist()
    qs, vs, rs = q.tolist(), v.tolist(), radius.tolist()
    keep = FRICTION ** (1 / SUBSTEPS)
    for _ in range(SUBSTEPS):
        x = min(max(x + dx, -REACH), REACH)
        y = min(max(y + dy, -REACH), REACH)
        z = min(max(z + dz, 0.0), 1.0)
        if z < Z_CONTACT:
            for qi, vi, r in zip(qs, vs, rs):
                nx, ny = qi[0] - x, qi[1] - y
                dist = math.hypot(nx, ny) + 1e-9
                overlap = PUSHER_R + r - dist
                if overlap > 0:  # kinematic push out of the gripper, plus a little momentum
                    nx, ny = nx / dist, ny / dist
                    qi[0] += nx * overlap
                    qi[1] += ny * overlap
                    vi[0] += nx * overlap * SUBSTEPS * 0.5
                    vi[1] += ny * overlap * SUBSTEPS * 0.5
        for i in range(len(qs)):
            for j in range(i + 1, len(qs)):
                nx, ny = qs[j][0] - qs[i][0], qs[j][1] - qs[i][1]
                dist = math.hypot(nx, ny) + 1e-9
                overlap = rs[i] + rs[j] - dist
                if overlap > 0:  # equal masses: split the overlap, swap normal velocity
                    nx, ny = nx / dist, ny / dist
                    for k, n in ((0, nx), (1, ny)):
                        qs[i][k] -= n * overlap / 2
                        qs[j][k] += n * overlap / 2
                    dv = (vs[i][0] - vs[j][0]) * nx + (vs[i][1] - vs[j][1]) * ny
                    if dv > 0:
                        for k, n in ((0, nx), (1, ny)):
                            vs[i][k] -= dv * n
                            vs[j][k] += dv * n
        for qi, vi, r in zip(qs, vs, rs):
            for k in range(2):
                qi[k] += vi[k] / SUBSTEPS
                vi[k] *= keep
                if abs(qi[k]) > WALL - r:  # bin walls: stop at the wall and bounce softly
                    qi[k] = math.copysign(WALL - r, qi[k])
                    vi[k] *= -0.3
    return np.array([x, y, z]), np.array(qs).reshape(q.shape), np.array(vs).reshape(v.shape)


class _Scene:
    """Per-sequence background and the drawing of one frame (pixel maths in numpy).

    Each shape is evaluated only in the pixel window around it: drawing on the whole
    image made rendering the slowest part of generation.
    """

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.unit = size / 2  # pixels per table unit (the table spans [-1, 1])
        c = ((np.arange(size) + 0.5) / size * 2 - 1).astype(np.float32)  # pixel centres
        self.x, self.y = np.meshgrid(c, c)  # (S, S); y grows down the image
        self.base_x = rng.uniform(-0.3, 0.3)  # where the arm enters at the top edge
        wood = np.array([0.62, 0.5, 0.36]) + rng.normal(0, 0.04, 3)
        angle, phase = rng.uniform(0, np.pi, 2)
        along = self.x * np.cos(angle) + self.y * np.sin(angle)
        across = -self.x * np.sin(angle) + self.y * np.cos(angle)
        grain = 0.04 * np.sin(rng.uniform(12, 20) * along + 1.5 * np.sin(3 * across + phase))
        light = 1 + rng.uniform(0, 0.15) * (self.x * np.cos(phase) + self.y * np.sin(phase))
        bg = np.clip(wood * (light + grain)[..., None], 0, 1)
        wall = np.maximum(abs(self.x), abs(self.y)) > WALL
        bg[wall] = np.array([0.32, 0.33, 0.38]) + rng.normal(0, 0.02, 3)
        self.bg = bg.astype(np.float32)

    def _window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        """Pixel rows and columns covering the table rectangle [x0, x1] x [y0, y1]."""
        def span(a: float, b: float) -> slice:
            lo = int(np.floor((a + 1) * self.unit)) - 1
            hi = int(np.ceil((b + 1) * self.unit)) + 1
            return slice(min(max(lo, 0), self.size), min(max(hi, 0), self.size))
        return span(y0, y1), span(x0, x1)

    def _paint(self, img: np.ndarray, win: tuple[slice, slice], dist: np.ndarray, r: float,
               colour: np.ndarray, opacity: float = 1.0) -> None:
        # anti-aliased coverage: 1 inside, 0 outside, a one-pixel ramp across the edge
        a = (r - dist) * self.unit + 0.5
        a = np.minimum(np.maximum(a, 0, out=a), 1, out=a)[..., None] * opacity
        img[win] = img[win] * (1 - a) + colour * a

    def render(self, p: np.ndarray, grip: float, q: np.ndarray, radius: np.ndarray,
               box: np.ndarray, colour: np.ndarray) -> np.ndarray:
        img = self.bg.copy()
        for (qx, qy), r, is_box, col in zip(q, radius, box, colour):
            win = self._window(qx - r, qy - r, qx + r, qy + r)
            dx, dy = self.x[win] - qx, self.y[win] - qy
            dist = np.maximum(abs(dx), abs(dy)) * 1.1 if is_box else np.hypot(dx, dy)
            shade = 1 - 0.25 * np.clip(dist / r, 0, 1)[..., None] ** 2  # rounded look
            self._paint(img, win, dist, r, col * shade)
        x, y, z = p
        # shadow on the table at (x, y): wider and fainter the higher the gripper
        r = PUSHER_R * (1 + 0.6 * z)
        win = self._window(x - r, y - r, x + r, y + r)
        self._paint(img, win, np.hypot(self.x[win] - x, self.y[win] - y), r,
                    np.zeros(3, np.float32), 0.45 * (1 - 0.6 * z))
        gy = y - 0.25 * z  # a lifted gripper appears further up the image
        scale = 1 + 0.5 * z
        win = self._window(min(x, self.base_x) - 0.1, -1, max(x, self.base_x) + 0.1, gy + 0.1)
        arm = _segment_dist(self.x[win], self.y[win], (self.base_x, -1.3), (x, gy))
        self._paint(img, win, arm, 0.08, np.array([0.55, 0.56, 0.6]))
        sep = (0.07 if grip > 0.5 else 0.13) * scale  # closed fingers sit closer
        for side in (-1, 1):  # fingers, below the body (toward the camera)
            fx, fy, fr = x + side * sep, gy + 0.07 * scale, 0.05 * scale
            win = self._window(fx - fr, fy - fr, fx + fr, fy + fr)
            self._paint(img, win, np.hypot(self.x[win] - fx, self.y[win] - fy), fr,
                        np.array([0.85, 0.85, 0.9]))
        body, br = 0.15 + 0.5 * z, 0.1 * scale  # higher means bigger and lighter
        win = self._window(x - br, gy - br, x + br, gy + br)
        self._paint(img, win, np.hypot(self.x[win] - x, self.y[win] - gy), br,
                    np.array([body, body, body + 0.05]))
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _segment_dist(x: np.ndarray, y: np.ndarray, a: tuple[float, float], b: tuple[float, float]
                  ) -> np.ndarray:
    """Distance from every pixel to the segment a-b."""
    abx, aby = b[0] - a[0], b[1] - a[1]
    t = np.clip(((x - a[0]) * abx + (y - a[1]) * aby) / (abx * abx + aby * aby + 1e-12), 0, 1)
    return np.hypot(x - a[0] - t * abx, y - a[1] - t * aby)
