"""In-memory view of a decoded split and the batches cut from it.

Every loader (BAIR, dance) returns a :class:`VideoSet`: all frames of all sequences of
one split back to back in one uint8 array (usually a memory map of the cache), with
offsets marking where each sequence starts. Windows of consecutive frames are cut
from single sequences, never across two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from vpsearch.errors import UserError


class DataError(UserError):
    """A dataset on disk is malformed; the message names the file and what was expected."""


@dataclass
class VideoSet:
    frames: np.ndarray  # (F, H, W, C) uint8: every frame of the split, sequence after sequence
    starts: np.ndarray  # (N + 1,) int64: sequence i is frames[starts[i]:starts[i + 1]]
    names: list[str]  # one per sequence (its folder, relative to the split)
    cond: np.ndarray | None = None  # (F, D) float32 vectors or (F, H, W, C) uint8 label images
    cond_kind: Literal["vector", "image"] | None = None
    # per sequence, how many leading frames are real; None: all. The real dance test set
    # gives only each video's first frame (the rest are zeros, to be predicted).
    truth_frames: list[int] | None = None
    # what the vector condition's columns are, in order: (kind, width), e.g. BAIR's
    # [("action", 4), ("position", 3)]; models index each kind on its own
    cond_parts: list[tuple[str, int]] | None = None

    def __post_init__(self) -> None:
        assert self.starts.ndim == 1 and len(self.starts) == len(self.names) + 1
        if self.cond is not None:
            assert len(self.cond) == len(self.frames)

    def __len__(self) -> int:
        return len(self.names)

    def known_frames(self, i: int) -> int:
        return int(self.lengths[i]) if self.truth_frames is None else int(self.truth_frames[i])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        h, w, c = self.frames.shape[1:]
        return int(h), int(w), int(c)

    @property
    def cond_dim(self) -> int:
        """Vector condition width (0 when unconditional or when the condition is an image)."""
        return int(self.cond.shape[1]) if self.cond_kind == "vector" else 0

    def windows(self, length: int, stride: int | None = None) -> np.ndarray:
        """(K, 2) array of [sequence, first frame] for every window that fits.

        stride defaults to the window length (non-overlapping, as the dance lab does);
        sequences shorter than the window contribute none.
        """
        stride = stride or length
        rows = []
        for i, n in enumerate(self.lengths):
            for s in range(0, int(n) - length + 1, stride):
                rows.append((i, s))
        return np.asarray(rows, dtype=np.int64).reshape(-1, 2)

    def batch(self, windows: np.ndarray, length: int, gaps: np.ndarray | None = None,
              n_past: int = 0) -> dict[str, torch.Tensor]:
        """Frames (B, T, C, H, W) float in [0, 1] and cond (B, T, D) or (B, T, C, H, W).

        gaps (B,): the first n_past frames of window i come from gaps[i] frames earlier (the
        anchor gap, see data.augment); the window's start must leave that room.
        """
        idx = self.starts[windows[:, 0]][:, None] + windows[:, 1][:, None] + np.arange(length)
        if gaps is not None:
            assert (gaps <= windows[:, 1]).all(), "an anchor gap reaches before its sequence"
            idx[:, :n_past] -= gaps[:, None]
        out = {"frames": to_float_video(self.frames[idx])}
        if self.cond is not None:
            c = self.cond[idx]
            out["cond"] = to_float_video(c) if self.cond_kind == "image" else torch.from_numpy(
                np.ascontiguousarray(c, dtype=np.float32))
        return out

    def sequence(self, i: int, start: int = 0, length: int | None = None) -> dict[str, torch.Tensor]:
        """One whole sequence (or a slice) as a batch of one."""
        n = int(self.lengths[i]) - start if length is None else length
        return self.batch(np.array([[i, start]]), n)


def training_windows(data: VideoSet, n_past: int, length: int, stride: int, min_windows: int,
                     split: str) -> tuple[np.ndarray, int, str | None]:
    """Windows [sequence, start] to train on, their length, and a note when they differ
    from the config's: a split whose sequences are all shorter than a window trains on
    windows as long as its longest sequence; one giving fewer than min_windows windows at
    `stride` uses every start. A split too short for one predicted frame is an error."""
    longest = int(data.lengths.max()) if len(data) else 0
    if longest < n_past + 1:
        raise DataError(f"{split} split: its longest sequence has {longest} frame(s); training needs at "
                        f"least data.n_past + 1 = {n_past + 1}")
    notes = []
    if longest < length:
        notes.append(f"{split} sequences are at most {longest} frames: training windows shortened from "
                     f"{length} (data.n_past + data.n_future) to {longest}")
        length = longest
    windows = data.windows(length, stride)
    if len(windows) < min_windows and stride > 1:
        dense = data.windows(length, 1)
        notes.append(f"only {len(windows)} training window(s) at data.window_stride {stride}: using every "
                     f"start instead ({len(dense)} overlapping windows)")
        windows = dense
    return windows, length, "; ".join(notes) or None


def to_float_video(x: np.ndarray) -> torch.Tensor:
    """(..., H, W, C) uint8 -> (..., C, H, W) float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t.movedim(-1, -3).float().div_(255.0)


def to_uint8_video(x: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) float in [0, 1] -> (..., H, W, C) uint8 (values clamped first)."""
    return x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


class WindowSampler:
    """Random batches of windows; the generator state makes resume exact."""

    def __init__(self, n_windows: int, batch_size: int, generator: torch.Generator):
        if n_windows == 0:
            raise DataError("no training windows: every sequence is shorter than the window")
        self.n = n_windows
        self.batch_size = batch_size
        self.generator = generator

    def epoch(self, steps: int | None, limit: int | None = None) -> list[np.ndarray]:
        """Index batches for one epoch.

        steps=None: one shuffled pass over the windows (the last batch may be smaller;
        nothing in the models ties state to a fixed batch size). limit: use only that many
        windows this epoch (the dance lab's "fast train").
        """
        n = self.n if limit is None else max(1, min(self.n, limit))
        if steps is None:
            perm = torch.randperm(self.n, generator=self.generator)[:n].numpy()
            return [perm[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        pool = torch.randperm(self.n, generator=self.generator)[:n]
        draws = torch.randint(0, n, (steps, self.batch_size), generator=self.generator)
        return [pool[d].numpy() for d in draws]
