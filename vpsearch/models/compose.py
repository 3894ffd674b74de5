"""Compositing output head shared by both model families (CDNA / SAVP / vid2vid style).

A decoder that composes paints, besides its C colour channels, one mask logit per
candidate and, for "warped", a flow; the frame is the per-pixel softmax blend of the
candidates. Copying a static background from a known frame is then one mask value per
pixel instead of a repainting that blurs, and a moving part can keep its colours by
being warped along the flow. Sources (frames the output may copy):
  anchor    the last context frame (the given first frame of a dance video)
  previous  the previous frame x_{t-1} (true or the model's own, as fed to the step)
  warped    x_{t-1} resampled along a predicted flow of at most max_flow pixels
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

SOURCES = ("anchor", "previous", "warped")


class Compositor(nn.Module):
    """Decoder output (B, C + extra_channels, H, W) -> frame (B, C, H, W) in [0, 1].

    No sources: the painted frame sigmoid(out[:, :C]), the plain decoder. With sources,
    out[:, C:C+K] are mask logits for [painted, *sources] (K = 1 + len(sources)) and, for
    "warped", out[:, C+K:C+K+2] a flow (dx, dy) squashed to max_flow pixels by tanh.
    """

    def __init__(self, sources: Sequence[str], channels: int, max_flow: float):
        super().__init__()
        unknown = [s for s in sources if s not in SOURCES]
        if unknown or len(set(sources)) != len(sources):
            raise ValueError(f"composite sources {list(sources)}: expected distinct names from {list(SOURCES)}")
        self.sources, self.channels, self.max_flow = list(sources), channels, max_flow
        self.flow_sizes: list[Tensor] | None = None  # a list while recording_flow is on

    def init_head(self, head: nn.Module, copy_bias: float | Mapping[str, float]) -> None:
        """copy_bias != 0: start the decoder's last layer (conv or transposed conv) with mask
        logits of copy_bias for every source (or copy_bias[source], 0 where it has none), the
        painted pixels' left at their small initial value, and a zero flow (zero weights: its
        gradient still flows), so an untrained model copies."""
        bias = [copy_bias.get(s, 0.0) if isinstance(copy_bias, Mapping) else copy_bias for s in self.sources]
        if not any(bias):
            return
        c, k = self.channels, 1 + len(self.sources)
        out_dim = 1 if isinstance(head, nn.ConvTranspose2d) else 0  # where the output channels are
        with torch.no_grad():
            head.bias[c + 1:c + k] = torch.tensor(bias)
            head.weight.narrow(out_dim, c + k, head.weight.shape[out_dim] - c - k).zero_()
            head.bias[c + k:] = 0.0

    @staticmethod
    def extra_channels(sources: Sequence[str]) -> int:
        return (1 + len(sources) + 2 * ("warped" in sources)) if sources else 0

    def forward(self, out: Tensor, pixels: dict[str, Tensor], flow_gate: Tensor | None = None) -> Tensor:
        """pixels: {"anchor": (B, C, H, W), "previous": (B, C, H, W)}, as the sources need;
        flow_gate (B, 1, H, W) in [0, 1] scales the flow per pixel (see change_gate)."""
        c = self.channels
        painted = torch.sigmoid(out[:, :c])
        if not self.sources:
            return painted
        k = 1 + len(self.sources)
        weights = torch.softmax(out[:, c:c + k].float(), dim=1).to(out.dtype)  # (B, K, H, W)
        candidates = [painted]
        for name in self.sources:
            if name == "warped":
                flow = torch.tanh(out[:, c + k:c + k + 2].float()) * self.max_flow
                if flow_gate is not None:
                    flow = flow * flow_gate.float()
                if self.flow_sizes is not None:
                    self.flow_sizes.append(flow.abs().sum(1).mean())
                candidates.append(warp(pixels["previous"].float(), flow).to(out.dtype))
            else:
                candidates.append(pixels[name].to(out.dtype))
        return (weights.unsqueeze(2) * torch.stack(candidates, 1)).sum(1)


@contextmanager
def recording_flow(model: nn.Module) -> Iterator[list[Tensor]]:
    """Within: every step of a warping head in model appends its mean flow size (|dx| + |dy|,
    pixels; differentiable) to the yielded list, for loss.flow_penalty."""
    heads = [m for m in model.modules() if isinstance(m, Compositor)]
    sizes: list[Tensor] = []
    for head in heads:
        head.flow_sizes = sizes
    try:
        yield sizes
    finally:
        for head in heads:
            head.flow_sizes = None


CHANGE_THRESHOLD = 0.1  # summed |difference| over channels above which a condition pixel has changed


def change_gate(before: Tensor, after: Tensor, reach: int) -> Tensor:
    """1 within reach pixels (a square) of where the condition image changed between before
    and after (B, C, H, W), else 0: (B, 1, H, W). The threshold ignores compression noise."""
    changed = ((after.float() - before.float()).abs().sum(1, keepdim=True) > CHANGE_THRESHOLD).float()
    return nn.functional.max_pool2d(changed, 2 * reach + 1, 1, reach) if reach else changed


def warp(frame: Tensor, flow: Tensor) -> Tensor:
    """Sample frame (B, C, H, W) at each pixel + flow (B, 2, H, W; dx, dy in pixels)."""
    h, w = frame.shape[-2:]
    ys = torch.linspace(-1.0, 1.0, h, device=frame.device)
    xs = torch.linspace(-1.0, 1.0, w, device=frame.device)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2) as (x, y)
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=frame.device)
    grid = base + flow.permute(0, 2, 3, 1) * scale
    # a diverged model's NaN flow: CPU grid_sample's backward segfaults on NaN coordinates (torch
    # 2.13), killing the worker instead of failing the trial; the frame is NaN through its mask anyway
    grid = torch.nan_to_num(grid, nan=0.0)
    return nn.functional.grid_sample(frame, grid, mode="bilinear", padding_mode="border", align_corners=True)
