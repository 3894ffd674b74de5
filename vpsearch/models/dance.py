"""The pose-conditioned model of the dance lab: every map stays at frame resolution.

Step t (predicting frame t from frame t-1 and the pose label of frame t):
  f_{t-1} = rgb_encoder(x_{t-1})                   (B, F, H, W)
  l_t     = label_encoder(label_t)                 (B, L, H, W)
  z_t ~ q(z | f_t, l_t) (training)  or N(0, I)     (B, N, H, W) spatial latent
  x_t = generator(fusion([f_{t-1}, l_t, z_t]))     (B, 3, H, W), sigmoid keeps [0, 1]
With anchor "last_context" the fusion also takes f of the last given frame (the first
frame of a test video), the appearance reference a long rollout must not lose. With
composite sources the generator also paints a mask per source and x_t is their softmax
blend with the painted frame (pixels of the anchor frame and/or of x_{t-1}).
With flow_gate k a step that continues from a true frame may warp only the pixels within
k of where the label image changed between t-1 and t (the raw labels ride along with their
features in encode_cond); one that continues from the model's own frame, any pixel.
With norm "group" every BatchNorm is a GroupNorm: a frame is normalised by its own maps,
in training and generation alike. The lab's generator had no output sigmoid and its
frames left [0, 1]; ours cannot.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vpsearch.config import DanceModelConfig
from vpsearch.models.base import Gaussians, StepwiseCVAE, cond_width, reparameterize, whole
from vpsearch.models.compose import Compositor, change_gate


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm that normalises channels_last maps on the CPU in the default layout: there
    torch 2.13's channels_last kernel made the backward ~4x slower (45% of a dancer-small
    step with bf16; the two layout copies cost a few percent)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)
        return super().forward(x)


def normalisation(kind: str, ch: int) -> nn.Module:
    """DanceModelConfig.norm: BatchNorm, or GroupNorm of up to 8 groups (per-frame statistics)."""
    return nn.BatchNorm2d(ch) if kind == "batch" else FrameGroupNorm(math.gcd(ch, 8), ch)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False), normalisation(norm, cout), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), normalisation(norm, cout))
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class DepthConvBlock(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, residual: cheap spatial mixing."""

    def __init__(self, ch: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1, groups=ch, bias=False), nn.Conv2d(ch, ch, 1, bias=False),
            normalisation(norm, ch), nn.LeakyReLU(0.2, inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def pyramid(cin: int, widths: list[int], norm: str) -> list[nn.Module]:
    """ResidualBlock to each width, a DepthConvBlock between them."""
    layers: list[nn.Module] = []
    for i, w in enumerate(widths):
        layers.append(ResidualBlock(cin, w, norm))
        if i < len(widths) - 1:
            layers.append(DepthConvBlock(w, norm))
        cin = w
    return layers


def quarter_half_full(n: int) -> list[int]:
    return [max(1, n // 4), max(1, n // 2), n]


class DanceCVAE(StepwiseCVAE):
    def __init__(self, cfg: DanceModelConfig, channels: int = 3, label_channels: int = 3):
        super().__init__()
        self.cfg, self.cond_parts = cfg, whole(cfg.cond_index)
        f, l, n, d, norm = cfg.f_dim, cfg.l_dim, cfg.n_dim, cfg.d_out_dim, cfg.norm
        self.label_channels = label_channels
        self.rgb_encoder = nn.Sequential(*pyramid(channels, [max(1, f // 8), max(1, f // 4), max(1, f // 2)], norm),
                                         nn.Conv2d(max(1, f // 2), f, 3, 1, 1))
        self.label_encoder = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(label_channels, max(1, l // 2), 7), normalisation(norm, max(1, l // 2)),
            nn.LeakyReLU(0.2, inplace=True), ResidualBlock(max(1, l // 2), l, norm))
        lc = cond_width(self.cond_parts, l)  # label features the step receives
        self.posterior = nn.Sequential(*pyramid(f + lc, quarter_half_full(n * 4), norm), nn.Conv2d(n * 4, n * 2, 1))
        # start q at the prior N(0, I): a random head puts a KL of thousands on the spatial z,
        # and under grad clipping that term would starve the reconstruction for whole epochs
        nn.init.zeros_(self.posterior[-1].weight)
        nn.init.zeros_(self.posterior[-1].bias)
        fused = f + lc + n + (f if cfg.anchor == "last_context" else 0)
        self.fusion = nn.Sequential(DepthConvBlock(fused, norm), *pyramid(fused, quarter_half_full(d), norm),
                                    nn.Conv2d(d, d, 1))
        self.generator = nn.Sequential(
            DepthConvBlock(d, norm), *pyramid(d, [max(1, d // 2), max(1, d // 4), max(1, d // 8)], norm),
            nn.Conv2d(max(1, d // 8), channels + Compositor.extra_channels(cfg.composite), 1))
        self.compositor = Compositor(cfg.composite, channels, cfg.max_flow)
        self.compositor.init_head(self.generator[-1], cfg.copy_bias)

    def encode(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        # composite needs the pixels of the reference frame too
        return (self.rgb_encoder(x), x) if self.cfg.composite else self.rgb_encoder(x)

    def encode_cond(self, c: Tensor) -> Tensor:
        features = self.label_encoder(c)
        if self.cfg.flow_gate is None:
            return features
        return torch.cat([features, c.to(features.dtype)], 1)  # the gate needs the label's pixels

    def split_cond(self, cond: Tensor, own: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The step's condition -> (label features, flow gate or None). With a gate each row is
        [features, label pixels] (encode_cond) and the rows are t-1 and t (cond_index both).
        The gate holds for a true previous frame only: the model's own frame may stray from
        its label anywhere, and the flow is what moves it back (own (B,) True: ungated)."""
        if self.cfg.flow_gate is None:
            return cond, None
        l = self.cfg.l_dim
        before, after = cond.split(l + self.label_channels, 1)
        features = torch.cat([before[:, :l], after[:, :l]], 1)
        if own is not None and bool(own.all()):  # every later generation step: nothing to gate
            return features, None
        gate = change_gate(before[:, l:], after[:, l:], self.cfg.flow_gate)
        if own is not None:
            gate = torch.where(own.to(gate.device).view(-1, 1, 1, 1), 1.0, gate)
        return features, gate

    def init_state(self, batch: int, device: torch.device) -> dict:
        return {}  # no recurrence: the previous frame carries everything

    def step(self, prev, target, cond, state, t, n_past, own=None):
        if t <= n_past:
            state["anchor"] = prev  # ends as the last context frame's encoding
        anchor = state["anchor"]
        pixels: dict[str, Tensor] = {}
        cond, flow_gate = self.split_cond(cond, own)
        if self.cfg.composite:
            (prev, pixels["previous"]), (anchor, pixels["anchor"]) = prev, anchor
            target = None if target is None else target[0]
        if target is not None:
            mu, logvar = self.posterior(torch.cat([target, cond], 1)).chunk(2, dim=1)
            z = reparameterize(mu, logvar)
            gauss = Gaussians(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar))
        else:
            shape = (prev.shape[0], self.cfg.n_dim, *prev.shape[2:])
            z = torch.randn(shape, device=prev.device, dtype=prev.dtype)
            gauss = None
        parts = [prev, cond, z.to(prev.dtype)]
        if self.cfg.anchor == "last_context":
            parts.append(anchor)
        out = self.generator(self.fusion(torch.cat(parts, 1)))
        return self.compositor(out, pixels, flow_gate), gauss, state
