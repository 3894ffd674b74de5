"""Built-in dancer data: hard enough to be worth learning, and every label readable at 32x64."""

import json

import numpy as np
import pytest

from vpsearch.config import DataConfig
from vpsearch.data.dance import load_dance
from vpsearch.data.generators.dancer import JOINTS, LIMBS, SEGMENT, make_dancer


@pytest.fixture(scope="module")
def full_val(tmp_path_factory):
    """A full-length (630-frame) val video, as the lab evaluates, and one style cut in train."""
    root = make_dancer(tmp_path_factory.mktemp("dancer-val"), train_frames=SEGMENT + 32, val_frames=630,
                       test_videos=1, test_frames=2, seed=0)
    cfg = DataConfig(format="dance", root=str(root), height=32, width=64)
    return root, load_dance(root, "val", cfg), load_dance(root, "train", cfg)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR of uint8 (..., H, W, C) arrays."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1)) / 255.0 ** 2
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))


def test_copying_frames_is_clearly_imperfect(full_val):
    _, val, _ = full_val
    f = np.asarray(val.frames)
    # The rollout baseline (only frame 0 is given at test time): the figure sways and dances away.
    assert 15 <= psnr(f[1:], f[:1]).mean() <= 22
    # Motion is smooth (learnable) yet copying the previous frame is far from perfect.
    assert 22 <= psnr(f[1:], f[:-1]).mean() <= 32


def test_skeleton_has_12_plus_joints_and_every_limb_survives_the_resize(full_val):
    _, val, _ = full_val
    assert len(JOINTS) >= 12
    assert {j for a, b, _ in LIMBS for j in (a, b)} == set(JOINTS)  # every joint is drawn
    colours = [c for _, _, c in LIMBS]
    assert len(set(colours)) == len(colours)  # one colour per limb
    cond = np.asarray(val.cond)  # (F, 32, 64, 3): shrunk 2x with NEAREST by the loader
    for a, b, c in LIMBS:
        seen = (cond == np.array(c, np.uint8)).all(-1).any(axis=(1, 2)).mean()
        assert seen >= 0.9, f"limb {a}-{b} visible in only {seen:.0%} of the labels"


def test_labels_change_every_frame(full_val):
    _, val, _ = full_val
    cond = np.asarray(val.cond)
    moved = (cond[1:] != cond[:-1]).any(axis=(1, 2, 3)).mean()
    assert moved > 0.95  # no frozen poses: the labels carry the motion


def test_train_style_changes_only_between_16_frame_windows(full_val):
    _, _, train = full_val
    assert SEGMENT % 16 == 0
    corner = np.asarray(train.frames[:, 0, 0])  # background pixel, never reached by the figure
    assert (corner[:SEGMENT] == corner[0]).all() and (corner[SEGMENT:] == corner[SEGMENT]).all()
    assert not np.array_equal(corner[0], corner[SEGMENT])  # a new background after the cut


def test_metadata_and_overwrite_rules(tmp_path):
    kw = dict(train_frames=4, val_frames=3, test_videos=2, test_frames=3, height=16, width=32)
    out = make_dancer(tmp_path / "d", seed=4, **kw)
    meta = json.loads((out / "vpsearch-dataset.json").read_text())
    assert meta["generator"] == "dancer" and meta["seed"] == 4
    assert meta["counts"] == {"train_frames": 4, "val_frames": 3, "test_videos": 2, "test_frames": 3}
    (out / "stale.txt").write_text("x")
    make_dancer(out, seed=4, **kw)  # a previous output is replaced as a whole
    assert not (out / "stale.txt").exists() and len(list((out / "test/test_label").iterdir())) == 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a generated dataset"):
        make_dancer(foreign, **kw)
    assert (foreign / "notes.txt").read_text() == "keep"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
