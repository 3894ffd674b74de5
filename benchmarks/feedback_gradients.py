"""Gradient norm of a training step fed the model's own frames, with and without detaching.

For each config: one batch of its training windows, BatchNorm in train mode, the global
gradient norm (before clipping) of the sequence loss when every step is fed
  teacher   the true previous frame (teacher forcing on),
  own       the model's own previous frame, gradients flowing back through it,
  detached  the model's own previous frame as a constant (schedule.detach_predictions).
Measured at initialisation and again after --warmup teacher-forced steps at the config's
lr (when teacher forcing turns off mid-training), over --seeds initialisations; the
median and the maximum over seeds are printed. Built-in data stand in for the real sets.

  python benchmarks/feedback_gradients.py [--configs dance dancer-small] [--seeds 3] [--warmup 30]
"""

from __future__ import annotations

import argparse
import json

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


def measure(name: str, seeds: int, warmup: int, batch_size: int | None) -> dict:
    cfg = load_config(name, [f"data.root={BUILTIN[load_config(name).data.format]}"])
    data = load_split(cfg.data, cfg.data.train_split)
    windows = data.windows(cfg.data.window, cfg.data.window_stride)
    b = batch_size or cfg.train.batch_size
    n_past, beta, red = cfg.data.n_past, cfg.loss.beta, cfg.loss.kl_reduction
    out: dict[str, dict[str, list[float]]] = {"init": {m: [] for m in MODES}, "warm": {m: [] for m in MODES}}
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = build_model(cfg.model, data_shape(data)).train()
        pick = np.random.default_rng(seed).choice(len(windows), b, replace=len(windows) < b)
        batch = data.batch(windows[pick], cfg.data.window)
        frames, cond = batch["frames"], batch.get("cond")
        for mode, (teacher, detach) in MODES.items():
            torch.manual_seed(100 + seed)  # the same z draws in every mode
            out["init"][mode].append(grad_norm(model, frames, cond, n_past, teacher, detach, beta, red))
        if warmup:
            opt = make_optimizer(model, cfg)
            for i in range(warmup):
                w = data.batch(windows[np.random.default_rng([seed, i]).choice(len(windows), b)], cfg.data.window)
                grad_norm(model, w["frames"], w.get("cond"), n_past, True, False, beta, red)
                if cfg.optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(list(model.parameters()), cfg.optim.grad_clip)
                opt.step()
            for mode, (teacher, detach) in MODES.items():
                torch.manual_seed(100 + seed)
                out["warm"][mode].append(grad_norm(model, frames, cond, n_past, teacher, detach, beta, red))
    summary = {"config": name, "batch": b, "window": cfg.data.window, "seeds": seeds, "warmup_steps": warmup}
    for when, by_mode in out.items():
        for mode, vals in by_mode.items():
            if vals:
                summary[f"{when}_{mode}_median"] = float(np.median(vals))
                summary[f"{when}_{mode}_max"] = float(np.max(vals))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["dance", "dancer-small", "pushing-small", "bair"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=30, help="teacher-forced steps before the second measurement")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    set_threads(args.threads)
    for name in args.configs:
        print(json.dumps(measure(name, args.seeds, args.warmup, args.batch_size)), flush=True)


if __name__ == "__main__":
    main()
