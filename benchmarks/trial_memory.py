"""Peak memory of one trial of each shipped config, on CPU: the proxy for sizing --trials-per-device.

Each config trains in a fresh process for a few steps at its own batch size, window, model size
and precision (bf16/channels_last where the config sets them), then evaluates a short rollout.
The process reports its resident memory when training starts (interpreter, torch, data, model)
and its peak (ru_maxrss), plus the model's parameter count. What one more trial adds on a GPU is
about the training part, peak - start (weights, gradients, Adam's two moments, one batch's
activations), plus a CUDA context per process (0.3-0.5 GB); see docs/scale-out.md.

  python benchmarks/trial_memory.py [--configs bair dance dancer-small pushing-small] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the shipped configs that name a real dataset train here on the built-in one of the same format
DATA = {"bair": "builtin:pushing", "dance": "builtin:dancer"}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(name: str, steps: int, threads: int) -> dict:
    import torch

    from vpsearch.config import load_config
    from vpsearch.training import Reporter, fit
    from vpsearch.training.checkpoint import model_from_checkpoint

    overrides = ["train.epochs=1", f"train.steps_per_epoch={steps}", "train.device=cpu", "train.progress=false",
                 f"train.num_threads={threads}", "eval.max_sequences=1", "eval.n_future=20", "eval.gif_sequences=1"]
    if name in DATA:
        overrides.append(f"data.root={DATA[name]}")
    cfg = load_config(name, overrides)
    seen: dict = {}

    class AtStart(Reporter):
        def started(self, run_dir, config):
            seen["start_mb"] = rss_mb()

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        fit(cfg, Path(out) / "run", reporter=AtStart())
        model = model_from_checkpoint(Path(out) / "run" / "checkpoints" / "last.pt", torch.device("cpu"))[0]
        params = sum(p.numel() for p in model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"config": name, "params_m": round(params / 1e6, 2), "batch_size": cfg.train.batch_size,
            "window": cfg.data.window, "frame": f"{cfg.data.height}x{cfg.data.width}", "amp": cfg.train.amp,
            "weights_grads_adam_mb": round(params * 4 * 4 / 2**20, 1), "rss_at_start_mb": round(seen["start_mb"]),
            "peak_rss_mb": round(peak), "trial_adds_mb": round(peak - seen["start_mb"]),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["bair", "dance", "dancer-small", "pushing-small"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.threads)))
        return
    from vpsearch.data.builtin import resolve_root
    for root in set(DATA.values()):
        resolve_root(root)  # generated here, so no child's peak includes making the data
    rows = []
    for name in args.configs:
        r = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps),
                            "--threads", str(args.threads)], capture_output=True, text=True)
        if r.returncode != 0:
            rows.append({"config": name, "error": (r.stderr.strip().splitlines() or ["?"])[-1]})
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"steps": args.steps, "threads": args.threads, "device": "cpu", "trials": rows}, indent=2))


if __name__ == "__main__":
    main()
