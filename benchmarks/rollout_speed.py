"""Time of a 630-frame dance rollout on CPU, fp32 NCHW vs bf16 autocast + channels_last.

Same weights, same labels, z from the prior, no gradients; prints seconds and the ratio
measured in one run.

  python benchmarks/rollout_speed.py [--config dance] [--frames 630] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from vpsearch.config import load_config
from vpsearch.models import DataShape, build_model
from vpsearch.training.device import autocast


def rollout_seconds(model, first, labels, frames: int, amp: str) -> float:
    start = time.perf_counter()
    with torch.no_grad(), autocast(torch.device("cpu"), amp):
        for _ in model.generate(first, labels, frames - 1):
            pass
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="dance", help="dance (lab sizes) or dancer-small")
    ap.add_argument("--frames", type=int, default=630)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    h, w = cfg.data.height, cfg.data.width
    torch.manual_seed(0)
    model = build_model(cfg.model, DataShape(3, h, w, 0, 3)).eval()
    first = torch.rand(1, 1, 3, h, w)
    labels = torch.rand(1, args.frames, 3, h, w)
    times = {}
    for name, amp, cl in (("fp32", "none", False), ("bf16+channels_last", "bf16", True)):
        m = model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        m.memory_format = torch.channels_last if cl else torch.contiguous_format
        rollout_seconds(m, first, labels[:, :8], 8, amp)  # warm-up
        times[name] = min(rollout_seconds(m, first, labels, args.frames, amp) for _ in range(args.repeats))
    print(json.dumps({"config": args.config, "frames": args.frames, "threads": args.threads,
                      **{f"{k}_seconds": round(v, 2) for k, v in times.items()},
                      "speedup": round(times["fp32"] / times["bf16+channels_last"], 2)}, indent=2))


if __name__ == "__main__":
    main()
