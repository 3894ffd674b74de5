"""Training-step throughput: the vpsearch engine vs a loop written the way the labs do it.

Both train the same SVG model on the same batches of the same data:
  reference: fp32 NCHW, the encoder called on x_{t-1} and on x_t at every time step,
             PNG frames decoded per item by a torch Dataset/DataLoader (as the labs did)
  vpsearch:  frames from the decode-once uint8 cache, every true frame encoded in one
             batched call, bf16 autocast + channels_last (the engine's options)
Prints frames/s of each and their ratio, measured in one run. With --quality it also
trains the config with and without bf16/channels_last and reports both validation PSNRs.

  python benchmarks/train_throughput.py [--config pushing-small] [--steps 6] [--quality]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vpsearch.config import load_config
from vpsearch.data import WindowSampler, load_split
from vpsearch.data.bair import find_sequences
from vpsearch.data.builtin import resolve_root
from vpsearch.models import DataShape, build_model
from vpsearch.models.base import cond_at
from vpsearch.training.device import autocast
from vpsearch.training.engine import StepContext, sequence_loss, train_epoch
from vpsearch.schedules import KLAnnealing, LearningRate, TeacherForcing
from vpsearch.training.trainer import data_shape, make_optimizer


class PngWindows(torch.utils.data.Dataset):
    """The labs' loader: opens every PNG and CSV of a window on every __getitem__."""

    def __init__(self, split_dir: Path, length: int):
        self.seqs, self.length = find_sequences(split_dir), length

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int):
        d = self.seqs[i]
        frames = np.stack([np.asarray(Image.open(d / f"{t}.png").convert("RGB")) for t in range(self.length)])
        act = np.loadtxt(d / "actions.csv", delimiter=",", dtype=np.float32)[:self.length]
        pos = np.loadtxt(d / "endeffector_positions.csv", delimiter=",", dtype=np.float32)[:self.length]
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        return x, torch.from_numpy(np.concatenate([act, pos], 1))


def reference_step(model, opt, x, c, n_past: int, beta: float, reduction: str) -> None:
    """SVG-LP training step as in the lab template: fp32, the encoder called on x_{t-1} and on
    x_t at every time step (the model's own step and loss, so both loops compute the same)."""
    state = model.init_state(x.shape[0], x.device)
    preds, stats = [], []
    for t in range(1, x.shape[1]):
        x_hat, gauss, state = model.step(model.encode(x[:, t - 1]), model.encode(x[:, t]),
                                         cond_at(c, t, model.cond_parts), state, t, n_past)
        preds.append(x_hat)
        stats.append(gauss)
    loss = sequence_loss(torch.stack(preds, 1), x, stats, beta, reduction)[0]
    opt.zero_grad()
    loss.backward()
    opt.step()


def time_reference(cfg, root: Path, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg.model, DataShape(cond_dim=7, cond_parts=(("action", 4), ("position", 3))))
    opt = make_optimizer(model, cfg)
    loader = torch.utils.data.DataLoader(PngWindows(root / cfg.data.train_split, cfg.data.window),
                                         batch_size=cfg.train.batch_size, shuffle=True, num_workers=0)
    it = iter(loader)
    frames, start = 0, None
    for i in range(steps + 1):
        if i == 1:  # the first step warms up allocators and kernels
            start = time.perf_counter()
        x, c = next(it)
        reference_step(model, opt, x, c, cfg.data.n_past, cfg.loss.beta, cfg.loss.kl_reduction)
        frames += x.shape[0] * (x.shape[1] - 1) if i else 0
    return frames / (time.perf_counter() - start)


def time_engine(cfg, steps: int, adapt=None) -> float:
    """Frames/s of the engine's own training step; adapt(model) may change the model first."""
    torch.manual_seed(0)
    data = load_split(cfg.data, cfg.data.train_split)
    model = build_model(cfg.model, data_shape(data))
    if adapt:
        adapt(model)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.memory_format = torch.channels_last
    windows = data.windows(cfg.data.window, cfg.data.window_stride)
    sampler = WindowSampler(len(windows), cfg.train.batch_size, torch.Generator().manual_seed(0))
    ctx = StepContext(model, make_optimizer(model, cfg), torch.amp.GradScaler("cpu", enabled=False), cfg,
                      torch.device("cpu"), torch.Generator().manual_seed(1),
                      TeacherForcing.from_config(cfg.schedule), KLAnnealing.from_config(cfg),
                      LearningRate.from_config(cfg))
    train_epoch(ctx, data, windows, sampler.epoch(1), 0)  # warm-up
    return train_epoch(ctx, data, windows, sampler.epoch(steps), 0)["frames_per_second"]


def quality(config: str, overrides: list[str]) -> dict:
    from vpsearch.training import fit
    out = {}
    for name, opts in (("fp32", ["train.amp=none", "train.channels_last=false"]),
                       ("bf16+channels_last", ["train.amp=bf16", "train.channels_last=true"])):
        cfg = load_config(config, [*overrides, *opts, "train.progress=false"])
        res = fit(cfg, Path("runs/bench") / f"quality-{name}")
        out[name] = {"best_val_psnr": round(res.best_psnr, 3), "seconds": round(res.seconds, 1),
                     "baseline_psnr": round(res.history[-1].get("baseline_psnr", float("nan")), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="pushing-small")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--quality", action="store_true", help="also train with and without bf16/channels_last")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = load_config(args.config, args.overrides)
    root = resolve_root(base.data.root)
    ref_cfg = load_config(args.config, [*args.overrides, "train.amp=none", "train.channels_last=false"])
    fast_cfg = load_config(args.config, [*args.overrides, "train.amp=bf16", "train.channels_last=true"])
    ref = time_reference(ref_cfg, root, args.steps)
    eng32 = time_engine(ref_cfg, args.steps)  # same fp32 settings as the reference
    fast = time_engine(fast_cfg, args.steps)
    result = {"config": args.config, "batch_size": base.train.batch_size, "window": base.data.window,
              "threads": args.threads, "reference_frames_per_s": round(ref, 1),
              "engine_fp32_frames_per_s": round(eng32, 1), "engine_bf16_cl_frames_per_s": round(fast, 1),
              "speedup_engine_fp32": round(eng32 / ref, 2), "speedup_engine_bf16_cl": round(fast / ref, 2)}
    if args.quality:
        result["quality"] = quality(args.config, args.overrides)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
