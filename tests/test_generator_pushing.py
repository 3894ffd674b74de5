"""Built-in pushing data: the physics, the condition convention, and a useful difficulty.

Layout, per-seed determinism and the sign of the action/position link are tested in
test_generators.py; these tests pin the exact numbers behind them.
"""

import json

import numpy as np
import pytest
from PIL import Image

from vpsearch.data.generators.pushing import (GROUP, PUSHER_R, REACH, SPEED, WALL, make_pushing,
                                              sequence_dir, step)


def video(seq, n):
    return np.stack([np.asarray(Image.open(seq / f"{t}.png")) for t in range(n)]).astype(np.float64)


def csv(path):
    return np.loadtxt(path, delimiter=",", ndmin=2)


@pytest.fixture(scope="module")
def validate_split(tmp_path_factory):
    """The first 16 validate sequences of the default dataset, cut to the 12 frames of a window
    (the simulation runs frame by frame, so they are the first 12 frames of the full set)."""
    root = make_pushing(tmp_path_factory.mktemp("pushing-val"), train=0, validate=16, test=0,
                        frames=12)
    return sorted((p.parent for p in (root / "validate").rglob("0.png")), key=lambda p: int(p.name))


def test_copy_last_context_frame_is_clearly_imperfect(validate_split):
    # PSNR per (sequence, future frame) of frame 1 (the last of n_past=2) against frames 2..11
    psnr = np.array([[10 * np.log10(255.0 ** 2 / max(((v[t] - v[1]) ** 2).mean(), 1e-10))
                      for t in range(2, 12)] for v in (video(s, 12) for s in validate_split)])
    assert 18 < psnr.mean() < 25  # far from perfect, far from noise
    per_step = psnr.mean(0)
    assert per_step[0] > per_step[-1] + 3  # error grows with the horizon: the scene moves on


def test_positions_are_the_clipped_sum_of_the_actions(validate_split):
    lo, hi = np.array([-REACH, -REACH, 0.0]), np.array([REACH, REACH, 1.0])
    for seq in validate_split:
        act, pos = csv(seq / "actions.csv"), csv(seq / "endeffector_positions.csv")
        assert act.shape == (12, 4) and pos.shape == (12, 3)
        assert set(np.unique(act[:, 3])) <= {0.0, 1.0}
        assert np.abs(act[:, :3]).max() <= 1
        # the real set's timing: row t of actions moves the position shown in frame t to the
        # one shown in frame t+1, and the last row is a real command too
        expect = np.clip(pos[:-1] + SPEED * act[:-1, :3], lo, hi)
        assert np.allclose(pos[1:], expect, atol=2e-6)
        assert np.abs(act[-1, :3]).max() > 0 and np.abs(act[0, :3]).max() > 0
        # the previous convention (row t = command between t-1 and t) does not fit the data
        assert not np.allclose(pos[1:], np.clip(pos[:-1] + SPEED * act[1:, :3], lo, hi), atol=1e-3)


def test_gripper_pushes_an_object_only_when_low():
    q, v, r = np.array([[0.3, 0.0]]), np.zeros((1, 2)), np.array([0.2])
    right = np.array([1.0, 0.0, 0.0])
    for z, moves in ((0.1, True), (0.8, False)):
        p, qq, vv = np.array([0.0, 0.0, z]), q, v
        for _ in range(3):
            p, qq, vv = step(p, right, qq, vv, r)
        assert np.isclose(p[0], 3 * SPEED[0])
        if moves:  # pushed ahead of the gripper, never left overlapping it
            assert qq[0, 0] > 0.3 + 0.2 and abs(qq[0, 1]) < 1e-9
            assert np.hypot(*(qq[0] - p[:2])) >= PUSHER_R + r[0] - 1e-9
        else:  # a lifted gripper passes over it
            assert np.array_equal(qq, q)


def test_friction_stops_objects_and_walls_hold_them():
    p = np.array([-0.8, -0.8, 1.0])  # lifted and far away: no contact
    q, v, r = np.array([[0.5, 0.0]]), np.array([[1.0, 0.3]]), np.array([0.2])
    for _ in range(25):
        p, q, v = step(p, np.zeros(3), q, v, r)
        assert np.all(np.abs(q) <= WALL - r[0] + 1e-12)
    assert np.abs(v).max() < 1e-3


def test_colliding_objects_are_separated():
    p = np.array([-0.8, -0.8, 1.0])
    q, v, r = np.array([[0.0, 0.0], [0.1, 0.0]]), np.zeros((2, 2)), np.array([0.2, 0.2])
    _, q, _ = step(p, np.zeros(3), q, v, r)
    assert np.hypot(*(q[1] - q[0])) >= 0.4 - 1e-9


def test_sequences_do_not_depend_on_split_sizes_or_the_pool(tmp_path):
    kw = dict(validate=0, test=0, frames=2, size=16, seed=4)
    small = make_pushing(tmp_path / "small", train=2, **kw)  # drawn in this process
    big = make_pushing(tmp_path / "big", train=66, **kw)  # drawn by the worker pool
    for i in (0, 1):
        for name in ("0.png", "1.png", "actions.csv", "endeffector_positions.csv"):
            a = sequence_dir(small, "train", i) / name
            assert a.read_bytes() == (sequence_dir(big, "train", i) / name).read_bytes()
    assert (big / "train/traj_0_to_255.tfrecords/65/1.png").is_file()
    meta = json.loads((big / "vpsearch-dataset.json").read_text())
    assert meta["counts"] == {"train": 66, "validate": 0, "test": 0}
    assert meta["generator"] == "pushing" and meta["frames"] == 2 and meta["size"] == 16


@pytest.mark.parametrize("index,rel", [(0, "traj_0_to_255.tfrecords/0"),
                                       (GROUP - 1, "traj_0_to_255.tfrecords/255"),
                                       (GROUP, "traj_256_to_511.tfrecords/0"),
                                       (700, "traj_512_to_767.tfrecords/188")])
def test_sequences_are_grouped_like_the_real_set(tmp_path, index, rel):
    assert sequence_dir(tmp_path, "train", index) == tmp_path / "train" / rel


def test_splits_differ_and_bad_arguments_are_refused(tmp_path):
    root = make_pushing(tmp_path / "p", train=1, validate=1, test=1, frames=1, size=16)
    firsts = {sequence_dir(root, s, 0).joinpath("0.png").read_bytes()
              for s in ("train", "validate", "test")}
    assert len(firsts) == 3
    with pytest.raises(ValueError, match="seed >= 0"):
        make_pushing(tmp_path / "q", seed=-1)


def test_gripper_and_position_rows_describe_the_frames_as_drawn(monkeypatch):
    """Position row t is drawn in frame t; the gripper of action row t is drawn in frame t+1."""
    from vpsearch.data.generators import pushing

    drawn = []
    orig = pushing._Scene.render

    def spy(self, p, grip, *a):
        drawn.append((np.array(p), grip))
        return orig(self, p, grip, *a)

    monkeypatch.setattr(pushing._Scene, "render", spy)
    toggles = 0
    for seed in range(4):
        drawn.clear()
        _, act, pos = pushing.simulate(np.random.default_rng(seed), 30, 16)
        assert np.allclose(np.stack([p for p, _ in drawn]), pos)
        assert [g for _, g in drawn[1:]] == act[:-1, 3].tolist()
        toggles += int(np.abs(np.diff(act[:, 3])).sum())
    assert toggles > 0  # the gripper did change, so the timing above was tested
