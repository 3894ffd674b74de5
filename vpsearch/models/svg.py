"""SVG-LP / SVG-FP (Denton & Fergus 2018) with an optional per-step condition.

Step t (predicting frame t from frame t-1):
  h_{t-1}, skips = encoder(x_{t-1})                       h: (B, g_dim)
  z_t ~ q(z | h_t)        (training / context)  Gaussian LSTM, 1 layer of rnn_size
  z_t ~ p(z | h_{t-1})    (generation)          learned (LP) or N(0, I) (FP)
  g_t = predictor([h_{t-1}, z_t, c_t])          2 LSTM layers -> g_dim, tanh
      c_t: the action and position rows that model.action_index / position_index choose
  x_t = decoder(g_t, skips of the last context frame[, c_t and pixel coordinates as maps])
With composite sources the decoder also paints masks (and a flow) and x_t is their blend
with the last context frame and/or x_{t-1} (vpsearch.models.compose); the encoding then
carries the frame's pixels too: (h, skips, x).
Recurrent state is created per call from the batch size: no batch size is baked in.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from vpsearch.config import SVGModelConfig
from vpsearch.models.backbones import BACKBONES
from vpsearch.models.base import CondPart, Gaussians, StepwiseCVAE, cond_width, reparameterize
from vpsearch.models.compose import Compositor

LSTMState = list[tuple[Tensor, Tensor]]


def condition_parts(cfg: SVGModelConfig, kinds: Sequence[tuple[str, int]]) -> tuple[CondPart, ...]:
    """Columns of each kind of condition with the row index the config gives that kind."""
    index = {"action": cfg.action_index, "position": cfg.position_index}
    parts, start = [], 0
    for kind, width in kinds:
        if kind not in index:
            raise ValueError(f"condition columns of kind {kind!r}: the SVG model knows {sorted(index)}")
        parts.append(CondPart(start, start + width, index[kind]))
        start += width
    return tuple(parts)


class StackedLSTM(nn.Module):
    """Linear embed -> LSTMCell layers -> linear head(s); state passed in and out."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int, layers: int, gaussian: bool, tanh: bool = False):
        super().__init__()
        self.hidden, self.layers, self.gaussian = hidden, layers, gaussian
        self.embed = nn.Linear(in_dim, hidden)
        self.cells = nn.ModuleList(nn.LSTMCell(hidden, hidden) for _ in range(layers))
        if gaussian:
            self.mu = nn.Linear(hidden, out_dim)
            self.logvar = nn.Linear(hidden, out_dim)
        else:
            self.out = nn.Sequential(nn.Linear(hidden, out_dim), nn.Tanh() if tanh else nn.Identity())

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> LSTMState:
        return [(torch.zeros(batch, self.hidden, device=device, dtype=dtype),
                 torch.zeros(batch, self.hidden, device=device, dtype=dtype)) for _ in range(self.layers)]

    def forward(self, x: Tensor, state: LSTMState):
        h = self.embed(x)
        new_state = []
        for cell, (hx, cx) in zip(self.cells, state):
            hx, cx = cell(h, (hx.to(h.dtype), cx.to(h.dtype)))
            new_state.append((hx, cx))
            h = hx
        if self.gaussian:
            return self.mu(h), self.logvar(h), new_state
        return self.out(h), new_state


class SVG(StepwiseCVAE):
    def __init__(self, cfg: SVGModelConfig, channels: int = 3, cond_parts: Sequence[tuple[str, int]] = ()):
        """cond_parts: the condition's columns in order, (kind, width) per kind (DataShape)."""
        super().__init__()
        self.cfg, self.cond_parts = cfg, condition_parts(cfg, cond_parts)
        self.cond_dim = cond_width(self.cond_parts, sum(w for _, w in cond_parts))
        enc_cls, dec_cls = BACKBONES[cfg.backbone]
        self.encoder = enc_cls(cfg.g_dim, channels, cfg.nf)
        side = self.cond_dim + 2 if cfg.cond_to_decoder else 0
        self.decoder = dec_cls(cfg.g_dim, channels, cfg.nf, channels + Compositor.extra_channels(cfg.composite), side)
        self.compositor = Compositor(cfg.composite, channels, cfg.max_flow)
        self.compositor.init_head(self.decoder.upc5[-1], cfg.copy_bias)
        self.predictor = StackedLSTM(cfg.g_dim + cfg.z_dim + self.cond_dim, cfg.g_dim, cfg.rnn_size,
                                     cfg.predictor_layers, gaussian=False, tanh=True)
        self.posterior = StackedLSTM(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.posterior_layers, gaussian=True)
        self.prior = (StackedLSTM(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.prior_layers, gaussian=True)
                      if cfg.prior == "learned" else None)

    def encode(self, x: Tensor):
        h, skips = self.encoder(x)
        return (h, skips, x) if self.cfg.composite else (h, skips)

    def init_state(self, batch: int, device: torch.device) -> dict:
        state = {"pred": self.predictor.init_state(batch, device),
                 "post": self.posterior.init_state(batch, device), "skip": None}
        if self.prior is not None:
            state["prior"] = self.prior.init_state(batch, device)
        return state

    def step(self, prev, target, cond, state, t, n_past, own=None):
        h_prev, skips_prev = prev[:2]
        if t <= n_past or self.cfg.skip_from == "previous" or state["skip"] is None:
            state["skip"] = skips_prev  # ends as the last context frame's skips
        if t <= n_past and self.cfg.composite:
            state["anchor"] = prev[2]  # ends as the last context frame
        if self.prior is not None:
            mu_p, logvar_p, state["prior"] = self.prior(h_prev, state["prior"])
        else:
            mu_p = torch.zeros(h_prev.shape[0], self.cfg.z_dim, device=h_prev.device, dtype=h_prev.dtype)
            logvar_p = torch.zeros_like(mu_p)
        gauss = None
        if target is not None:
            mu_q, logvar_q, state["post"] = self.posterior(target[0], state["post"])
            z = reparameterize(mu_q, logvar_q)
            gauss = Gaussians(mu_q, logvar_q, mu_p, logvar_p)
        else:
            z = reparameterize(mu_p, logvar_p)
        parts = [h_prev, z.to(h_prev.dtype)]
        if cond is not None and self.cond_dim:
            parts.append(cond.to(h_prev.dtype))
        g, state["pred"] = self.predictor(torch.cat(parts, 1), state["pred"])
        pixels = {"anchor": state["anchor"], "previous": prev[2]} if self.cfg.composite else {}
        side = None
        if self.cfg.cond_to_decoder:  # no condition: the coordinates alone
            side = cond.to(g.dtype) if cond is not None and self.cond_dim else g.new_zeros(g.shape[0], 0)
        x_hat = self.compositor(self.decoder(g, state["skip"], side), pixels)
        return x_hat, gauss, state
