"""Gradient norm of a training step fed the model's own frames, with and without detaching.

For each config: one batch of its training windows, BatchNorm in train mode, the global
gradient norm (before clipping) of the sequence loss (and of its MSE part alone, `_mse`:
the KL term does not depend on what is fed back) when every step is fed
  teacher   the true previous frame (teacher forcing on),
  own       the model's own previous frame, gradients flowing back through it,
  detached  the model's own previous frame as a constant (schedule.detach_predictions).
Measured at initialisation and again after --warmup teacher-forced steps at the config's
lr (when teacher forcing turns off mid-training), over --seeds initialisations; the
median and the maximum over seeds are printed as a table. Built-in data stand in for the real sets.

  python benchmarks/feedback_gradients.py [--configs dance dancer-small] [--seeds 3] [--warmup 30]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from vpsearch.config import load_config
from vpsearch.data import load_split
from vpsearch.models import build_model
from vpsearch.training.device import set_threads
from vpsearch.training.engine import sequence_loss
from vpsearch.training.trainer import data_shape, make_optimizer

BUILTIN = {"bair": "builtin:pushing", "dance": "builtin:dancer"}
MODES = {"teacher": (True, False), "own": (False, False), "detached": (False, True)}


def grad_norm(model, frames, cond, n_past: int, teacher: bool, detach: bool, beta: float, reduction: str) -> float:
    model.zero_grad(set_to_none=True)
    mask = torch.full(frames.shape[:2], teacher)
    preds, stats = model(frames, cond, n_past, mask, detach)
    sequence_loss(preds, frames, stats, beta, reduction)[0].backward()
    return float(torch.nn.utils.clip_grad_norm_(list(model.parameters()), float("inf")))


def record(into: dict[str, list[float]], model, frames, cond, n_past: int, beta: float, red: str, seed: int) -> None:
    for mode, (teacher, detach) in MODES.items():
        for suffix, b in (("", beta), ("_mse", 0.0)):
            torch.manual_seed(100 + seed)  # the same z draws in every mode
            into.setdefault(mode + suffix, []).append(grad_norm(model, frames, cond, n_past, teacher, detach, b, red))


def measure(name: str, seeds: int, warmup: int, batch_size: int | None) -> list[dict]:
    cfg = load_config(name, [f"data.root={BUILTIN[load_config(name).data.format]}"])
    data = load_split(cfg.data, cfg.data.train_split)
    windows = data.windows(cfg.data.window, cfg.data.window_stride)
    b = batch_size or cfg.train.batch_size
    n_past, beta, red = cfg.data.n_past, cfg.loss.beta, cfg.loss.kl_reduction
    out: dict[str, dict[str, list[float]]] = {"init": {}, "warm": {}}
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = build_model(cfg.model, data_shape(data)).train()
        pick = np.random.default_rng(seed).choice(len(windows), b, replace=len(windows) < b)
        batch = data.batch(windows[pick], cfg.data.window)
        frames, cond = batch["frames"], batch.get("cond")
        record(out["init"], model, frames, cond, n_past, beta, red, seed)
        if warmup:
            opt = make_optimizer(model, cfg)
            for i in range(warmup):
                w = data.batch(windows[np.random.default_rng([seed, i]).choice(len(windows), b)], cfg.data.window)
                grad_norm(model, w["frames"], w.get("cond"), n_past, True, False, beta, red)
                if cfg.optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(list(model.parameters()), cfg.optim.grad_clip)
                opt.step()
            record(out["warm"], model, frames, cond, n_past, beta, red, seed)
    rows = []
    for when, by_mode in out.items():
        for mode in MODES if by_mode else ():
            loss, mse = by_mode[mode], by_mode[mode + "_mse"]
            rows.append({"config": name, "when": when if when == "init" else f"after {warmup} steps", "feed": mode,
                         "loss_median": np.median(loss), "loss_max": max(loss),
                         "mse_median": np.median(mse), "mse_max": max(mse)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["dance", "dancer-small", "pushing-small", "bair"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=30, help="teacher-forced steps before the second measurement")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    print(f"gradient norm before clipping, median / max over {args.seeds} initialisations")
    print(f"{'config':<14} {'when':<16} {'feed':<9} {'loss':>21} {'mse part':>21}")
    for name in args.configs:
        for r in measure(name, args.seeds, args.warmup, args.batch_size):
            print(f"{r['config']:<14} {r['when']:<16} {r['feed']:<9} {r['loss_median']:10.3g} {r['loss_max']:10.3g} "
                  f"{r['mse_median']:10.3g} {r['mse_max']:10.3g}", flush=True)


if __name__ == "__main__":
    main()
