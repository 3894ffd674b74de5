"""Training-step time of the dance model per normalisation (model.norm), measured in one run.

  batch         the lab's BatchNorm
  group         GroupNorm as shipped (FrameGroupNorm: channels_last CPU maps normalised in the
                default layout)
  group-native  plain nn.GroupNorm on channels_last maps (torch's own channels_last kernel)

Each is one forward + backward + Adam step of the config's model at its batch, window,
precision and memory format, on random frames, 1 thread by default; the median of --repeats
timed steps after 2 warm-up steps.

  python benchmarks/dance_norm_step.py [--config dancer-small] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import vpsearch.models.dance as dance
from vpsearch.config import load_config
from vpsearch.models import DataShape, build_model
from vpsearch.training.device import autocast


def step_seconds(cfg, norm: str, native_group: bool, repeats: int) -> float:
    model_cfg = cfg.model.model_copy(update={"norm": "batch" if norm == "batch" else "group"})
    original = dance.FrameGroupNorm
    if native_group:
        dance.FrameGroupNorm = nn.GroupNorm  # what FrameGroupNorm exists to avoid
    try:
        torch.manual_seed(0)
        model = build_model(model_cfg, DataShape(height=cfg.data.height, width=cfg.data.width, cond_channels=3))
    finally:
        dance.FrameGroupNorm = original
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.memory_format = torch.channels_last
    opt = torch.optim.Adam(model.parameters(), cfg.optim.lr)
    b, t = cfg.train.batch_size, cfg.data.window
    frames = torch.rand(b, t, 3, cfg.data.height, cfg.data.width)
    labels = torch.rand(b, t, 3, cfg.data.height, cfg.data.width)
    own_frames = torch.zeros(b, t, dtype=torch.bool)  # every step fed its own frame, as late in training
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        with autocast(torch.device("cpu"), cfg.train.amp):
            preds, _ = model(frames, labels, cfg.data.n_past, own_frames)
        loss = (preds.float() - frames[:, 1:]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="dancer-small")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [])
    rows = {name: step_seconds(cfg, name, name == "group-native", args.repeats)
            for name in ("batch", "group", "group-native")}
    print(f"{args.config}: {cfg.train.batch_size} x {cfg.data.window} frames, {cfg.train.amp}, "
          f"channels_last {cfg.train.channels_last}, {args.threads} thread(s), median of {args.repeats} steps")
    for name, sec in rows.items():
        print(f"  {name:13s} {sec:.3f} s/step  ({sec / rows['batch']:.2f} x batch)")


if __name__ == "__main__":
    main()
