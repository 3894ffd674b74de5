"""Training-time augmentation of a batch of windows, and the anchor gap.

Every transform is drawn once per window and applied to all of its frames alike, so the
relation the model learns (appearance from the context frame, motion from the condition)
is kept:
  hflip          frames and pose labels mirrored together. Vector conditions (BAIR actions
                 and positions) are in robot coordinates, which a mirrored image would
                 contradict, so config validation allows it for image conditions only.
  colour_jitter  frames only: a channel permutation and a per-channel gain and offset of
                 up to +-strength. Labels are not touched (their colours name limbs). Sound
                 because the future frames' colours follow from the context frame's.
  shift          frames and labels moved together by up to N pixels, edges repeated.
  label_jitter   each frame's label alone moved by up to N pixels: a detector's keypoints jitter
                 from frame to frame, and a model that trusts them to the pixel memorises it.
The anchor gap (data.anchor_gap) moves a window's context frames up to G frames earlier,
so the first predicted frame is far from the frame the model is given, as at test time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from vpsearch.config import DataConfig


def draw_gaps(windows: np.ndarray, max_gap: int, generator: torch.Generator) -> np.ndarray | None:
    """Per window [sequence, start]: frames its context moves back, uniform in 0..min(G, start)."""
    if max_gap <= 0:
        return None
    room = np.minimum(windows[:, 1], max_gap)
    u = torch.rand(len(windows), generator=generator, dtype=torch.float64).numpy()
    return np.floor(u * (room + 1)).astype(np.int64)


def augment(batch: dict[str, Tensor], cfg: DataConfig, generator: torch.Generator) -> dict[str, Tensor]:
    """batch["frames"] (B, T, C, H, W) in [0, 1], batch["cond"] (B, T, ...) -> augmented copy."""
    frames, cond = batch["frames"], batch.get("cond")
    b, ch = frames.shape[0], frames.shape[2]
    if cfg.hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        frames = torch.where(flip.view(b, 1, 1, 1, 1), frames.flip(-1), frames)
        if cond is not None and cond.dim() == 5:
            cond = torch.where(flip.view(b, 1, 1, 1, 1), cond.flip(-1), cond)
    if cfg.colour_jitter > 0:
        s = cfg.colour_jitter
        perm = torch.argsort(torch.rand(b, ch, generator=generator), dim=1)  # (B, C)
        gain = 1 + s * (2 * torch.rand(b, ch, generator=generator) - 1)
        offset = s / 2 * (2 * torch.rand(b, ch, generator=generator) - 1)
        frames = frames.gather(2, perm.view(b, 1, ch, 1, 1).expand_as(frames))
        frames = (frames * gain.view(b, 1, ch, 1, 1) + offset.view(b, 1, ch, 1, 1)).clamp_(0, 1)
    image_cond = cond is not None and cond.dim() == 5
    if cfg.shift > 0:
        dy, dx = _offsets(b, 1, cfg.shift, generator)
        frames = _translate(frames, dy, dx, cfg.shift)
        if image_cond:
            cond = _translate(cond, dy, dx, cfg.shift)
    if cfg.label_jitter > 0 and image_cond:
        dy, dx = _offsets(b, cond.shape[1], cfg.label_jitter, generator)
        cond = _translate(cond, dy, dx, cfg.label_jitter)
    out = dict(batch)
    out["frames"] = frames
    if cond is not None:
        out["cond"] = cond
    return out


def _offsets(b: int, t: int, most: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(B, T) vertical and horizontal offsets, uniform in -most..most (t = 1: one per window)."""
    draw = torch.randint(-most, most + 1, (2, b, t), generator=generator)
    return draw[0], draw[1]


def _translate(x: Tensor, dy: Tensor, dx: Tensor, most: int) -> Tensor:
    """x (B, T, C, H, W) moved by (dy, dx) pixels per window (T of offsets 1) or per frame, edges repeated."""
    b, t, c, h, w = x.shape
    padded = torch.nn.functional.pad(x.reshape(b * t, c, h, w), (most,) * 4, mode="replicate").view(
        b, t, c, h + 2 * most, w + 2 * most)
    dy, dx = dy.expand(b, t), dx.expand(b, t)
    rows = (torch.arange(h).view(1, 1, h) + most - dy.unsqueeze(-1))  # (B, T, H)
    cols = (torch.arange(w).view(1, 1, w) + most - dx.unsqueeze(-1))  # (B, T, W)
    bi = torch.arange(b).view(b, 1, 1, 1)
    ti = torch.arange(t).view(1, t, 1, 1)
    # gather rows then columns: out[b, t, :, i, j] = padded[b, t, :, rows[b, t, i], cols[b, t, j]]
    out = padded.permute(0, 1, 3, 4, 2)[bi, ti, rows.unsqueeze(-1), cols.unsqueeze(-2)]
    return out.permute(0, 1, 4, 2, 3).contiguous()
