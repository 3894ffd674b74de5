"""Training speed of the dance model per normalisation (model.norm), measured in one run.

  batch         the lab's BatchNorm
  group         GroupNorm as shipped (FrameGroupNorm: channels_last CPU maps normalised in the
                default layout)
  group-native  plain nn.GroupNorm on channels_last maps (torch's own channels_last kernel)

Each runs the engine's own training step (train_throughput.time_engine: the config's data,
batch, window, loss, precision and memory format) for --steps steps after one warm-up step,
1 thread by default, and reports frames/s and the time per step relative to batch.

  python benchmarks/dance_norm_step.py [--config dancer-small] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from train_throughput import time_engine  # this folder is on sys.path when run as a script

from vpsearch.config import load_config
from vpsearch.models.dance import FrameGroupNorm


def torch_group_norm(model: nn.Module) -> None:
    """Swap every FrameGroupNorm for torch's own GroupNorm (same parameters)."""
    for module in model.modules():
        if isinstance(module, FrameGroupNorm):
            module.__class__ = nn.GroupNorm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="dancer-small")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = {"batch": ("batch", None), "group": ("group", None), "group-native": ("group", torch_group_norm)}
    rows = {}
    for name, (norm, adapt) in variants.items():
        cfg = load_config(args.config, [f"model.norm={norm}", f"train.num_threads={args.threads}"])
        rows[name] = time_engine(cfg, args.steps, adapt)
    print(f"{args.config}: {cfg.train.batch_size} x {cfg.data.window} frames, {cfg.train.amp}, "
          f"channels_last {cfg.train.channels_last}, {args.threads} thread(s), {args.steps} steps each")
    for name, fps in rows.items():
        print(f"  {name:13s} {fps:7.1f} frames/s  ({rows['batch'] / fps:.2f} x the time of batch)")


if __name__ == "__main__":
    main()
