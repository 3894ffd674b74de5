"""The recurrence every CVAE video predictor here shares, written once.

A model predicts frame t from (the encoding of frame t-1, a latent z_t, the condition
c_t). c_t is cut from the condition rows of the window by one rule, select_cond: each
CondPart (a span of columns: BAIR's actions, positions; the dance labels) takes row t,
t-1 or both. Subclasses define four hooks; this class runs the time loop for training
(with teacher forcing) and for generation (z from the prior, memory flat in video length).

Hooks:
  encode(x (N, C, H, W))          -> encoding, a tensor or tuple of tensors with leading N
  encode_cond(c (N, ...))         -> condition features with leading N
  init_state(batch, device)       -> fresh recurrent state (sized from the batch: no fixed batch)
  step(prev, target, cond, state, t, n_past, own) -> (x_hat (B, C, H, W), Gaussians or None, state)
      target is the encoding of the true frame t (posterior z) or None (prior z); own (B,)
      bool is True where prev encodes the model's own prediction, None where every prev is
      a true frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

Encoding = Any  # Tensor or tuple of Tensors, leading dimension = batch


@dataclass
class Gaussians:
    """Posterior q(z_t | x_t) and prior p(z_t | x_<t) parameters of one step."""

    mu_q: Tensor
    logvar_q: Tensor
    mu_p: Tensor
    logvar_p: Tensor


def map_encoding(fn, enc: Encoding) -> Encoding:
    if isinstance(enc, (tuple, list)):
        return type(enc)(map_encoding(fn, e) for e in enc)
    return fn(enc)


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


@dataclass(frozen=True)
class CondPart:
    """Columns [start, stop) of the condition features (dim 1; None: to the end) and which
    rows of them the step predicting frame t takes (`index`, see cond_rows)."""

    start: int | None
    stop: int | None
    index: str


def whole(index: str) -> tuple[CondPart, ...]:
    """One part covering every condition column (the dance labels)."""
    return (CondPart(None, None, index),)


def cond_rows(t: int, index: str) -> list[int]:
    """current: c_t; previous: c_{t-1}; both: c_{t-1} and c_t side by side (the motion)."""
    return {"current": [t], "previous": [t - 1], "both": [t - 1, t]}[index]


def rows_needed(t: int, parts: Sequence[CondPart]) -> list[int]:
    return sorted({i for p in parts for i in cond_rows(t, p.index)})


def select_cond(row: Callable[[int], Tensor], t: int, parts: Sequence[CondPart]) -> Tensor:
    """Condition fed to the step that predicts frame t: for each part in order, its columns
    of each of its rows, concatenated on dim 1. row(i) -> features of frame i (B, D, ...).

    The single place the c_t / c_{t-1} choice is made, for training and generation alike.
    """
    return torch.cat([row(i)[:, p.start:p.stop] for p in parts for i in cond_rows(t, p.index)], 1)


def cond_at(cond: Tensor | None, t: int, parts: Sequence[CondPart]) -> Tensor | None:
    """select_cond over a whole window of features cond (B, T, D, ...)."""
    if cond is None:
        return None
    return select_cond(lambda i: cond[:, i], t, parts)


def cond_width(parts: Sequence[CondPart], width: int) -> int:
    """Width of the step's condition when each row holds `width` features."""
    return sum(len(range(width)[p.start:p.stop]) * len(cond_rows(1, p.index)) for p in parts)


class StepwiseCVAE(nn.Module):
    cond_parts: tuple[CondPart, ...] = whole("current")  # which condition rows each step sees
    memory_format: torch.memory_format = torch.contiguous_format  # channels_last when asked

    # --- hooks -------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Encoding:
        raise NotImplementedError

    def encode_cond(self, c: Tensor) -> Tensor:
        return c

    def init_state(self, batch: int, device: torch.device) -> dict:
        raise NotImplementedError

    def step(self, prev: Encoding, target: Encoding | None, cond: Tensor | None, state: dict,
             t: int, n_past: int, own: Tensor | None = None) -> tuple[Tensor, Gaussians | None, dict]:
        raise NotImplementedError

    # --- shared loops --------------------------------------------------------------------
    def encode_video(self, frames: Tensor) -> Encoding:
        """(B, T, C, H, W) -> per-frame encodings (B, T, ...), one batched encoder call."""
        b, t = frames.shape[:2]
        enc = self.encode(frames.flatten(0, 1).contiguous(memory_format=self.memory_format))
        return map_encoding(lambda e: e.unflatten(0, (b, t)), enc)

    def encode_cond_video(self, cond: Tensor | None) -> Tensor | None:
        if cond is None:
            return None
        b, t = cond.shape[:2]
        return self.encode_cond(cond.flatten(0, 1)).unflatten(0, (b, t))

    def forward(self, frames: Tensor, cond: Tensor | None, n_past: int,
                teacher: Tensor, detach_predictions: bool = False) -> tuple[Tensor, list[Gaussians]]:
        """Training pass: predict frames 1..T-1 with posterior z.

        frames (B, T, C, H, W); cond (B, T, ...) or None; teacher (B, T) bool: True where
        the step predicting frame t is fed the true frame t-1 (context steps always are); keep
        it on the CPU, where its branches below are decided without waiting for the GPU.
        detach_predictions: a fed-back own frame enters the next step as a constant (no
        gradient flows back through it into earlier steps).
        Returns predictions (B, T-1, C, H, W) and one Gaussians per step.
        """
        b, length = frames.shape[:2]
        enc = self.encode_video(frames)  # true frames, encoded once for all steps
        cfeat = self.encode_cond_video(cond)
        state = self.init_state(b, frames.device)
        preds: list[Tensor] = []
        stats: list[Gaussians] = []
        for t in range(1, length):
            prev = map_encoding(lambda e: e[:, t - 1], enc)
            feed_truth = teacher[:, t] if t > n_past else None  # frame t-1 is context up to t = n_past
            own = None
            if feed_truth is not None and not bool(feed_truth.all()):
                own = ~feed_truth
                own_enc = self.encode(preds[-1].detach() if detach_predictions else preds[-1])
                if bool(feed_truth.any()):  # per-sample mix (scheduled sampling)
                    prev = zip_encodings(lambda a, o: _mix(feed_truth, a, o), prev, own_enc)
                else:
                    prev = own_enc
            target = map_encoding(lambda e: e[:, t], enc)
            x_hat, g, state = self.step(prev, target, cond_at(cfeat, t, self.cond_parts), state, t, n_past, own)
            preds.append(x_hat)
            stats.append(g)
        return torch.stack(preds, 1), stats

    @torch.no_grad()
    def generate(self, context: Tensor, cond: Tensor | Sequence | None, n_future: int) -> Iterator[Tensor]:
        """Yield predicted frames n_past .. n_past+n_future-1, one (B, C, H, W) at a time.

        context (B, n_past, C, H, W) true frames; cond indexable on dim 1 up to
        n_past + n_future (a tensor, or a lazy sequence for long videos). Only the last
        frame and the recurrent state are kept, so memory does not grow with length.
        """
        b, n_past = context.shape[:2]
        state = self.init_state(b, context.device)
        ctx = self.encode_video(context)
        prev = map_encoding(lambda e: e[:, 0], ctx)
        encoded: dict[int, Tensor] = {}  # condition rows already encoded ("both" reuses c_{t-1})
        own = None  # the first predicted frame continues from the last true one
        all_own = torch.ones(b, dtype=torch.bool)  # every later one from the model's own
        for t in range(1, n_past + n_future):
            c = None if cond is None else self._cond_step(cond, t, context.device, encoded)
            if t < n_past:  # warm the recurrences up on true frames, posterior z
                target = map_encoding(lambda e: e[:, t], ctx)
                _, _, state = self.step(prev, target, c, state, t, n_past, None)
                prev = target
                continue
            x_hat, _, state = self.step(prev, None, c, state, t, n_past, own)
            yield x_hat
            prev, own = self.encode(x_hat), all_own

    def _cond_step(self, cond, t: int, device: torch.device, encoded: dict[int, Tensor]) -> Tensor:
        rows = rows_needed(t, self.cond_parts)
        for i in rows:
            if i not in encoded:
                row = cond[:, i] if isinstance(cond, Tensor) else cond[i]
                encoded[i] = self.encode_cond(torch.as_tensor(row).to(device))
        for i in [i for i in encoded if i not in rows]:
            del encoded[i]  # keep memory flat over a long video
        return select_cond(encoded.__getitem__, t, self.cond_parts)


def zip_encodings(fn, a: Encoding, b: Encoding) -> Encoding:
    if isinstance(a, (tuple, list)):
        return type(a)(zip_encodings(fn, x, y) for x, y in zip(a, b))
    return fn(a, b)


def _mix(mask: Tensor, truth: Tensor, own: Tensor) -> Tensor:
    m = mask.to(truth.device, non_blocking=True).view(-1, *([1] * (truth.dim() - 1)))
    return torch.where(m, truth, own)
