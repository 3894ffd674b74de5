"""The GPU path checked for real, in one command and a few minutes; prints one JSON summary.

On a machine with a CUDA GPU and its own PyTorch (plus this package's dependencies):
  python benchmarks/gpu_check.py [--steps 30] [--out gpu_check.json]

Checks, each reported on its own (one failing does not hide the others):
  device_selection      auto/cuda/cuda:N, the visible GPUs and their UUIDs, cuda:free's claim order
  train_bf16, train_fp16, train_channels_last
                        a few training steps of a small pushing model in each mode: finite losses,
                        fp16's GradScaler scale, host synchronisations per step (sync debug mode)
  amp_auto              train.amp=auto resolves to bf16 where the GPU supports it, else fp16 with
                        the scaler; a run resumes from one precision into the other, both ways
  bair_frames_per_second
                        the `bair` model (VGG-64, batch 12) training on generated pushing data:
                        fp32 vs bf16 vs bf16 + channels_last, peak GPU memory of each
  dance_rollout_630     the `dance` model rolling out 629 frames from one (fp32 and bf16), seconds
  study_2_trials_per_device
                        `vpsearch study run` of 2 trials on cuda:0 with --trials-per-device 2:
                        both complete, side by side, and each worker's peak GPU memory (nvidia-smi)
Without CUDA it still runs: the CUDA-only checks say "skipped: no CUDA device" and the rest
(bf16 and channels_last steps, the 2-worker study) run on the CPU, so the script is tested here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import torch

NO_CUDA = "skipped: no CUDA device"


def timed_check(fn: Callable[[], dict]) -> dict:
    t0 = time.perf_counter()
    try:
        out = fn()
        out.setdefault("ok", None if "skipped" in out else True)  # None: not run here
    except Exception as e:  # each check reports its own failure
        out = {"ok": False, "error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}",
               "where": traceback.format_exc().strip().splitlines()[-3:]}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def sync_now(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_selection(cuda: bool) -> dict:
    from vpsearch.search.gpus import claim_order, gpu_uuids
    from vpsearch.training.device import select_device, split_devices

    out = {"auto": str(select_device("auto")), "cuda_available": cuda}
    if not cuda:
        return {**out, "ok": out["auto"] == "cpu", "note": NO_CUDA + " (auto picks cpu)"}
    uuids = gpu_uuids()
    out.update(visible=split_devices("cuda", None), names=[torch.cuda.get_device_name(i) for i in
                                                           range(torch.cuda.device_count())],
               uuids=uuids, cuda0=str(select_device("cuda:0")), bf16_supported=torch.cuda.is_bf16_supported(),
               cuda_free_order_k2=claim_order(len(uuids), 2), two_per_gpu=split_devices("cuda:0", None, 2))
    out["ok"] = out["auto"].startswith("cuda") and len(uuids) == torch.cuda.device_count()
    return out


def validation_stream(device: torch.device) -> dict:
    """Validation's own random stream on the device: the same draws for the same seed, and the
    caller's stream (CPU and this GPU) where it was."""
    from vpsearch.training.device import own_random_stream

    torch.manual_seed(7)
    before = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
    draws = []
    for _ in range(2):
        with own_random_stream(0, device):
            draws.append(torch.randn(4, device=device).cpu())
    after = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
    same = torch.equal(draws[0], draws[1])
    untouched = torch.equal(before[0], after[0]) and (before[1] is None or torch.equal(before[1], after[1]))
    return {"device": str(device), "same_draws": same, "caller_untouched": untouched, "ok": same and untouched}


class Bench:
    """A model, its optimizer and data, stepped with the engine's own train_epoch."""

    def __init__(self, config: str, overrides: list[str], device: torch.device):
        from vpsearch.config import load_config
        from vpsearch.training.trainer import prepare_training

        cfg = load_config(config, [*overrides, f"train.device={device}", "train.progress=false"])
        setup = prepare_training(cfg)  # the trainer's own set-up: train.amp resolved for this device
        self.cfg, self.device, self.precision = setup.cfg, setup.device, setup.precision
        self.data, self.windows, self.sampler, self.ctx = setup.train_set, setup.windows, setup.sampler, setup.ctx

    def epoch(self, steps: int) -> dict:
        from vpsearch.training.engine import train_epoch

        return train_epoch(self.ctx, self.data, self.windows, self.sampler.epoch(steps), 0)

    def measure(self, steps: int, warmup: int = 2) -> dict:
        """Warm-up steps, then `steps` timed ones: frames/s, mean loss, host syncs per step, peak memory."""
        self.epoch(warmup)
        cuda = self.device.type == "cuda"
        if cuda:
            sync_now(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            torch.cuda.set_sync_debug_mode("warn")  # each host synchronisation warns: count them
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = self.epoch(steps)
        out = {"frames_per_second": round(stats["frames_per_second"], 1), "loss": stats["loss"],
               "grad_norm": stats["grad_norm"]}
        if cuda:
            torch.cuda.set_sync_debug_mode(0)
            syncs = [w for w in caught if "synchroniz" in str(w.message)]
            out.update(host_syncs_per_step=round(len(syncs) / steps, 2),
                       peak_gpu_mb=round(torch.cuda.max_memory_allocated(self.device) / 2**20),
                       peak_gpu_reserved_mb=round(torch.cuda.max_memory_reserved(self.device) / 2**20))
        if self.ctx.scaler.is_enabled():
            out["grad_scale"] = float(self.ctx.scaler.get_scale())
        out["ok"] = all(map(_finite, (stats["loss"], stats["mse"], stats["kl"])))
        return out


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def small(device: torch.device) -> list[str]:
    """pushing-small as shipped on a GPU; on the CPU a model just big enough to show the path works."""
    if device.type == "cuda":
        return ["eval.max_sequences=8"]
    return ["model.nf=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "train.batch_size=4",
            "eval.max_sequences=4", "eval.gif_sequences=1"]


def train_mode(data: Path, device: torch.device, amp: str, channels_last: bool, steps: int) -> dict:
    if amp == "fp16" and device.type != "cuda":
        return {"skipped": NO_CUDA + " (fp16 with a GradScaler is CUDA only)"}
    b = Bench("pushing-small", [*small(device), f"data.root={data}", f"train.amp={amp}",
                                f"train.channels_last={str(channels_last).lower()}"], device)
    out = {"amp": amp, "channels_last": channels_last, **b.measure(steps)}
    if channels_last:
        conv = next(m for m in b.ctx.model.modules() if isinstance(m, torch.nn.Conv2d))
        out["weights_channels_last"] = conv.weight.is_contiguous(memory_format=torch.channels_last)
        out["ok"] = out["ok"] and out["weights_channels_last"]
    return out


def amp_auto(data: Path, device: torch.device, tmp: Path) -> dict:
    """train.amp=auto resolves by the device (bf16 where the GPU supports it, else fp16 with the
    scaler; on a CPU bf16 only where native and faster), and a run resumes across precisions:
    one epoch in one, the next in the other, each way (on a CPU: bf16 and fp32)."""
    from vpsearch.config import load_config
    from vpsearch.training import fit
    from vpsearch.training.precision import with_precision
    from vpsearch.training.reporter import Reporter

    class FirstEpochOnly(Reporter):  # stops like a killed run, leaving last.pt after epoch 0
        def report(self, epoch, metrics):
            return True

    base = [*small(device), f"data.root={data}", f"train.device={device}", "train.progress=false",
            "train.steps_per_epoch=2", "eval.max_sequences=2", "train.epochs=2"]
    _, chosen = with_precision(load_config("pushing-small", [*base, "train.amp=auto"]), device)
    if device.type == "cuda":
        expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        pairs = [("bf16", "fp16"), ("fp16", "bf16")]
    else:
        expected = chosen.amp if chosen.amp in ("bf16", "none") else "bf16 or none"
        pairs = [("bf16", "none"), ("none", "bf16")]
    out = {"resolved": chosen.amp, "reason": chosen.reason, "expected": expected, "resumed": {}}
    ok = chosen.amp == expected
    for first, second in pairs:
        run = tmp / f"amp-{first}-{second}"
        fit(load_config("pushing-small", [*base, f"train.amp={first}"]), run, reporter=FirstEpochOnly())
        res = fit(load_config("pushing-small", [*base, f"train.amp={second}"]), run, resume=True)
        losses = [row["loss"] for row in res.history]
        stored = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["config"]["train"]["amp"]
        out["resumed"][f"{first}->{second}"] = {"epochs": res.epochs_done, "losses": losses, "last_amp": stored}
        ok = ok and res.epochs_done == 2 and all(map(_finite, losses)) and stored == second
    out["ok"] = ok
    return out


def bair_throughput(data: Path, device: torch.device, steps: int) -> dict:
    if device.type != "cuda":
        return {"skipped": NO_CUDA + " (CPU throughput: benchmarks/train_throughput.py)"}
    out = {}
    for name, amp, cl in (("fp32", "none", False), ("bf16", "bf16", False), ("bf16_channels_last", "bf16", True)):
        b = Bench("bair", [f"data.root={data}", f"train.amp={amp}", f"train.channels_last={str(cl).lower()}"],
                  device)
        out[name] = b.measure(steps)
        del b
        torch.cuda.empty_cache()
    out["bf16_speedup"] = round(out["bf16"]["frames_per_second"] / out["fp32"]["frames_per_second"], 2)
    out["bf16_channels_last_speedup"] = round(out["bf16_channels_last"]["frames_per_second"]
                                              / out["fp32"]["frames_per_second"], 2)
    out["ok"] = all(out[k]["ok"] for k in ("fp32", "bf16", "bf16_channels_last"))
    return out


def dance_rollout(device: torch.device, frames: int = 630) -> dict:
    if device.type != "cuda":
        return {"skipped": NO_CUDA + " (CPU time: benchmarks/rollout_speed.py)"}
    from vpsearch.config import load_config
    from vpsearch.models import DataShape, build_model
    from vpsearch.training.device import autocast

    cfg = load_config("dance")
    h, w = cfg.data.height, cfg.data.width
    torch.manual_seed(0)
    model = build_model(cfg.model, DataShape(3, h, w, 0, 3)).to(device).eval()
    first = torch.rand(1, 1, 3, h, w, device=device)
    labels = torch.rand(1, frames, 3, h, w, device=device)
    out = {"frames": frames}
    for name, amp in (("fp32", "none"), ("bf16", "bf16")):
        with torch.no_grad(), autocast(device, amp):
            for _ in model.generate(first, labels[:, :8], 7):  # warm-up
                pass
            sync_now(device)
            torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            n = 0
            for x in model.generate(first, labels, frames - 1):
                n += 1
            sync_now(device)
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        out[f"{name}_peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        out["ok"] = n == frames - 1 and bool(torch.isfinite(x).all())
    return out


def gpu_memory_by_pid() -> dict[int, int]:
    try:
        r = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    out = {}
    for line in r.stdout.splitlines():
        pid, _, mb = line.partition(",")
        if pid.strip().isdigit() and mb.strip().isdigit():
            out[int(pid)] = int(mb)
    return out


def study_two_per_device(data: Path, device: torch.device, tmp: Path) -> dict:
    import optuna
    import yaml

    from vpsearch.search.recovery import tally
    from vpsearch.search.storage import open_storage

    cuda = device.type == "cuda"
    study = {"name": "gpu_check", "base": "pushing-small", "overrides": [*small(device), f"data.root={data}"],
             "budget": {"n_trials": 2, "epochs": 3 if cuda else 2, "steps_per_epoch": 20 if cuda else 3},
             "search_space": {"optim.lr": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True}},
             "sampler": "random"}
    (tmp / "study.yaml").write_text(yaml.safe_dump(study))
    target = "cuda:0" if device.type == "cuda" else "cpu"
    cmd = [sys.executable, "-m", "vpsearch.cli", "study", "run", str(tmp / "study.yaml"), "--devices", target,
           "--trials-per-device", "2", "--root", str(tmp / "runs"), "--tracking-uri", "off", "--threads", "1"]
    peaks: dict[int, int] = {}
    done = threading.Event()

    def poll() -> None:  # each worker's GPU memory, CUDA context included, as nvidia-smi sees it
        while not done.is_set():
            for pid, mb in gpu_memory_by_pid().items():
                peaks[pid] = max(peaks.get(pid, 0), mb)
            done.wait(0.5)
    poller = threading.Thread(target=poll, daemon=True)
    if device.type == "cuda":
        poller.start()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    seconds = time.perf_counter() - t0
    done.set()
    storage = open_storage(f"journal:{tmp / 'runs' / 'optuna-journal.log'}").storage
    trials = optuna.load_study(study_name="gpu_check", storage=storage).get_trials()
    spans = [(t.datetime_start, t.datetime_complete) for t in trials if t.datetime_complete]
    overlap = (min(e for _, e in spans) - max(s for s, _ in spans)).total_seconds() if len(spans) == 2 else 0.0
    out = {"command": " ".join(cmd[2:]), "exit": r.returncode, "wall_seconds": round(seconds, 1),
           "states": [t.state.name for t in trials], "devices": [t.user_attrs.get("device") for t in trials],
           "workers": len({t.user_attrs.get("worker") for t in trials}), "overlap_seconds": round(max(0, overlap), 1),
           "trial_seconds": [round((e - s).total_seconds(), 1) for s, e in spans]}
    if device.type == "cuda":
        out["peak_gpu_mb_per_worker"] = sorted(peaks.values()) or "nvidia-smi not available"
    else:
        out["peak_gpu_mb_per_worker"] = NO_CUDA
    t = tally(trials)
    out["ok"] = r.returncode == 0 and t.complete == 2 and out["workers"] == 2 and overlap > 0
    if not out["ok"]:
        out["stderr_tail"] = r.stderr.strip().splitlines()[-3:]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per measurement (default 30)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")
    steps = args.steps if cuda else min(args.steps, 3)  # the CPU run only shows the path works
    torch.set_num_threads(4 if cuda else 1)  # CPU: a path check; one thread does not fight the workers
    from vpsearch.data.generators.pushing import make_pushing

    with tempfile.TemporaryDirectory(prefix="vpsearch-gpu-check-") as tmp_dir:
        tmp = Path(tmp_dir)
        data = make_pushing(tmp / "pushing", train=48, validate=8, test=2, seed=0)
        checks = {
            "device_selection": timed_check(lambda: device_selection(cuda)),
            "validation_stream": timed_check(lambda: validation_stream(device)),
            "train_bf16": timed_check(lambda: train_mode(data, device, "bf16", False, steps)),
            "train_fp16": timed_check(lambda: train_mode(data, device, "fp16", False, steps)),
            "train_channels_last": timed_check(lambda: train_mode(data, device, "bf16", True, steps)),
            "amp_auto": timed_check(lambda: amp_auto(data, device, tmp)),
            "bair_frames_per_second": timed_check(lambda: bair_throughput(data, device, steps)),
            "dance_rollout_630": timed_check(lambda: dance_rollout(device)),
            "study_2_trials_per_device": timed_check(lambda: study_two_per_device(data, device, tmp)),
        }
    summary = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0)
               if cuda else "cpu", "ok": all(c["ok"] for c in checks.values() if c["ok"] is not None),
               "skipped": [k for k, c in checks.items() if "skipped" in c],
               "seconds": round(time.perf_counter() - t0, 1), "checks": checks}
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
