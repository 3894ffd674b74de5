"""CI guard: the precision train.amp=auto resolves to is not slower than fp32 on this machine.

    python benchmarks/precision_guard.py            # every shipped small config, exit 1 on a miss
    python benchmarks/precision_guard.py --limit 1.3 --steps 4 --rounds 3

For each shipped small config, the trainer's own set-up (prepare_training) at 1 thread is built
twice, at the resolved precision and at fp32, and the same training steps are timed in both,
alternating `--rounds` times; the median ratio (resolved / fp32) must stay at or under
`--limit`. A ratio measured in one run on one machine, not a wall-clock threshold: it catches a
shipped default that emulates bf16 on a CPU without it (13-45x slower), whatever the CI
machine's speed. Where auto resolves to fp32 the two sides are the same precision and the
ratio only shows the noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from vpsearch import machine
from vpsearch.config import load_config
from vpsearch.training.engine import train_epoch
from vpsearch.training.trainer import prepare_training

CONFIGS = ("pushing-small", "dancer-small")


def seconds_per_step(setup, steps: int) -> float:
    batches = setup.sampler.epoch(steps)
    t0 = time.perf_counter()
    train_epoch(setup.ctx, setup.train_set, setup.windows, batches, 0, length=setup.length)
    return (time.perf_counter() - t0) / steps


def guard(config: str, steps: int, rounds: int) -> tuple[str, float]:
    common = ["train.num_threads=1", "train.device=cpu", "train.progress=false"]
    resolved = prepare_training(load_config(config, common))
    fp32 = prepare_training(load_config(config, [*common, "train.amp=none"]))
    for s in (resolved, fp32):
        seconds_per_step(s, 1)  # warm-up
    ratios = [seconds_per_step(resolved, steps) / seconds_per_step(fp32, steps) for _ in range(rounds)]
    return resolved.precision.shown, statistics.median(ratios)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=float, default=1.3, help="largest allowed resolved / fp32 time (default 1.3)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side and round (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two sides (default 3)")
    ap.add_argument("configs", nargs="*", default=list(CONFIGS))
    args = ap.parse_args()
    print(f"machine: {machine.cpu().describe()}; torch {torch.__version__}")
    missed = []
    for config in args.configs:
        shown, ratio = guard(config, args.steps, args.rounds)
        verdict = "ok" if ratio <= args.limit else f"SLOWER than fp32 by more than {args.limit}x"
        print(f"{config}: train.amp=auto -> {shown}; time per step {ratio:.2f}x fp32's (median of "
              f"{args.rounds}, {args.steps} steps each, 1 thread): {verdict}")
        if ratio > args.limit:
            missed.append(config)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
