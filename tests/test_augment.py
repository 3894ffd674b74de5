"""Training augmentation and the anchor gap: what each transform keeps, known values."""

import numpy as np
import pytest
import torch

from vpsearch.config import ConfigError, DataConfig, load_config
from vpsearch.data.augment import augment, draw_gaps
from vpsearch.data.base import VideoSet


def batch(b=4, t=5, h=6, w=7):
    torch.manual_seed(0)
    return {"frames": torch.rand(b, t, 3, h, w), "cond": torch.rand(b, t, 3, h, w)}


def test_off_is_the_identity_and_draws_nothing():
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    x = batch()
    out = augment(x, DataConfig(format="dance"), g)
    assert torch.equal(out["frames"], x["frames"]) and torch.equal(out["cond"], x["cond"])
    assert torch.equal(g.get_state(), before)  # teacher-forcing coins are unchanged
    assert draw_gaps(np.array([[0, 5]]), 0, g) is None


def test_hflip_mirrors_frame_and_label_of_a_window_together():
    x = batch(b=16)
    out = augment(x, DataConfig(format="dance", hflip=True), torch.Generator().manual_seed(1))
    flipped = [torch.equal(out["frames"][i], x["frames"][i].flip(-1)) for i in range(16)]
    kept = [torch.equal(out["frames"][i], x["frames"][i]) for i in range(16)]
    assert all(f != k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 16
    for i in range(16):  # the label goes with its frame, every frame of the window alike
        assert torch.equal(out["cond"][i], x["cond"][i].flip(-1) if flipped[i] else x["cond"][i])


def test_colour_jitter_changes_frames_only_and_the_same_way_at_every_step():
    x = batch()
    x["frames"][:, :, :, 0, 0] = torch.tensor([0.2, 0.5, 0.8])  # a known pixel, every frame
    out = augment(x, DataConfig(format="dance", colour_jitter=0.3), torch.Generator().manual_seed(2))
    assert torch.equal(out["cond"], x["cond"])  # limb colours are the label's vocabulary
    f = out["frames"]
    assert ((f >= 0) & (f <= 1)).all() and not torch.allclose(f, x["frames"])
    assert torch.allclose(f[:, :1, :, 0, 0].expand(-1, 5, -1), f[:, :, :, 0, 0])  # one transform per window
    # each output channel is an affine map of one input channel: a permutation with gain and offset
    for i in range(4):
        src, dst = x["frames"][i].transpose(0, 1).flatten(1), f[i].transpose(0, 1).flatten(1)
        for c in range(3):
            inside = (dst[c] > 0) & (dst[c] < 1)
            fits = [np.corrcoef(src[k][inside], dst[c][inside])[0, 1] for k in range(3)]
            assert max(fits) > 0.999


def point_batch(b=8, t=5):
    """One bright pixel at (row 3, col 4) in every frame and label of 8x9 images."""
    x = {"frames": torch.zeros(b, t, 3, 8, 9), "cond": torch.zeros(b, t, 3, 8, 9)}
    x["frames"][..., 3, 4] = 1.0
    x["cond"][..., 3, 4] = 1.0
    return x


def where(x):  # (B, T, 2): the bright pixel's row and column
    flat = x[:, :, 0].flatten(2).argmax(-1)
    return torch.stack([flat // x.shape[-1], flat % x.shape[-1]], -1)


def test_shift_moves_frames_and_labels_of_a_window_together_within_the_bound():
    x = point_batch()
    out = augment(x, DataConfig(format="dance", shift=2), torch.Generator().manual_seed(3))
    pf, pc = where(out["frames"]), where(out["cond"])
    assert torch.equal(pf, pc)  # the label stays on its frame
    assert torch.equal(pf, pf[:, :1].expand_as(pf))  # one offset per window
    moved = pf[:, 0] - torch.tensor([3, 4])
    assert moved.abs().max() <= 2 and (moved != 0).any(1).sum() >= 4


def test_label_jitter_moves_each_label_alone():
    x = point_batch()
    out = augment(x, DataConfig(format="dance", label_jitter=1), torch.Generator().manual_seed(4))
    assert torch.equal(out["frames"], x["frames"])
    pc = where(out["cond"]) - torch.tensor([3, 4])
    assert pc.abs().max() <= 1
    assert len({tuple(v.tolist()) for v in pc.flatten(0, 1)}) > 3  # drawn per frame, not per window


def test_hflip_is_refused_for_vector_conditions():
    with pytest.raises(ConfigError, match="data.hflip: BAIR actions and positions are in robot coordinates"):
        load_config("pushing-small", ["data.hflip=true"])


def test_gaps_stay_in_the_sequence_and_reach_the_maximum():
    windows = np.array([[0, 0], [0, 3], [1, 100]] * 200)
    gaps = draw_gaps(windows, 10, torch.Generator().manual_seed(0))
    assert (gaps[0::3] == 0).all() and set(gaps[1::3]) == {0, 1, 2, 3} and set(gaps[2::3]) == set(range(11))


def test_gap_moves_the_context_frames_back():
    frames = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1).repeat(3, -1)
    data = VideoSet(frames=frames, starts=np.array([0, 20]), names=["v"],
                    cond=frames.copy(), cond_kind="image")
    b = data.batch(np.array([[0, 8], [0, 3]]), 4, gaps=np.array([5, 0]), n_past=2)
    got = (b["frames"][:, :, 0, 0, 0] * 255).round().int().tolist()
    assert got == [[3, 4, 10, 11], [3, 4, 5, 6]]  # context 5 frames earlier, then the window's future
    assert torch.equal(b["cond"], b["frames"])  # labels come from the same frames
