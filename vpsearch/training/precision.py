"""train.amp resolved by what the device can do, once per run, before anything is written.

  auto on CUDA -> bf16 where the GPU supports it, else fp16 with the grad scaler
  auto on CPU  -> bf16 only where the CPU runs it natively (AVX512-BF16 or AMX) *and* a probe
                  of the model's own convolution runs faster in bf16; else fp32 ("none")
  bf16 on a CPU without native bf16 -> runs, with one warning naming the measured slowdown
  fp16 on a CPU -> refused (autocast has no CPU fp16 path worth running)

Why a probe and not the flag alone: emulated bf16 autocast was measured 13-45x slower than fp32,
and a CPU may carry the flag yet run a given convolution no faster. The probe times forward and
backward of one convolution of the model's width at its frame size, batch and threads, in both
precisions; its answer is cached per machine (CPU model, torch version, shape, threads) in
$XDG_CACHE_HOME/vpsearch/precision.json, so a study pays for it once.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vpsearch import machine
from vpsearch.config import Config, ConfigError

log = logging.getLogger(__name__)

BF16_FASTER = 0.95  # bf16 is picked on a CPU only when it takes at most this fraction of fp32's time
_memo: dict[str, float] = {}
_warned: set[str] = set()


@dataclass(frozen=True)
class Precision:
    amp: str  # what runs: none (fp32), bf16 or fp16
    asked: str  # what the config said (auto, none, bf16, fp16)
    reason: str  # one clause a header can print
    bf16_over_fp32: float | None = None  # the probe's time ratio, when it ran

    @property
    def shown(self) -> str:
        name = "fp32" if self.amp == "none" else self.amp
        return name if self.asked == self.amp else f"{name} ({self.reason})"


def decide(asked: str, device_type: str, cuda_bf16: bool, native_bf16: tuple[str, ...],
           ratio: float | None) -> Precision:
    """Pure: the precision for `asked` on a device. ratio is the probe's bf16 / fp32 time (None:
    not probed; needed only for auto on a CPU with native bf16, and for the bf16 warning)."""
    if asked == "fp16" and device_type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device (this run is on the CPU); use auto, bf16 or none")
    if device_type == "cuda":
        if asked != "auto":
            return Precision(asked, asked, "as set")
        if cuda_bf16:
            return Precision("bf16", asked, "the GPU supports bf16")
        return Precision("fp16", asked, "the GPU has no bf16: fp16 with loss scaling")
    if asked == "auto":
        if not native_bf16:
            return Precision("none", asked, "this CPU has no native bf16", ratio)
        if ratio is not None and ratio <= BF16_FASTER:
            return Precision("bf16", asked, f"native {'+'.join(native_bf16)}, {1 / ratio:.1f}x fp32's speed in "
                                            "a probe", ratio)
        shown = f"{ratio:.2f}x fp32's time" if ratio is not None else "not probed"
        return Precision("none", asked, f"bf16 is not faster here ({shown})", ratio)
    return Precision(asked, asked, "as set", ratio)


def probe_shape(cfg: Config) -> tuple[int, int, int, int]:
    """(batch, channels, height, width) of the model's first inner convolution: the encoder's
    width at half the frame size."""
    channels = getattr(cfg.model, "nf", None) or getattr(cfg.model, "f_dim", 64)
    return cfg.train.batch_size, int(channels), max(4, cfg.data.height // 2), max(4, cfg.data.width // 2)


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vpsearch" / "precision.json"


def _time(conv: torch.nn.Module, x: torch.Tensor, bf16: bool, seconds: float = 0.15) -> float:
    """Median seconds of one forward + backward (after a warm-up), over about `seconds`."""
    def once() -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = conv(x)
        y.float().square().mean().backward()
        return time.perf_counter() - t0

    once()
    times = [once()]
    while sum(times) < seconds and len(times) < 50:
        times.append(once())
    return statistics.median(times)


def probe_ratio(cfg: Config) -> float:
    """bf16 / fp32 time of the probe convolution on this CPU at the current thread count (cached)."""
    b, c, h, w = probe_shape(cfg)
    key = (f"{machine.cpu().model}|torch {torch.__version__}|threads {torch.get_num_threads()}|"
           f"{b}x{c}x{h}x{w}|{'channels_last' if cfg.train.channels_last else 'contiguous'}")
    if key in _memo:
        return _memo[key]
    path = _cache_file()
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict):
            stored = {}
    except (OSError, ValueError):
        stored = {}
    if isinstance(stored.get(key), (int, float)):
        _memo[key] = float(stored[key])
        return _memo[key]
    with torch.random.fork_rng(devices=[]):  # the probe must not move the run's draws
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(c, c, 3, padding=1)
        x = torch.randn(b, c, h, w)
        if cfg.train.channels_last:
            conv, x = conv.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        ratio = _time(conv, x, bf16=True) / _time(conv, x, bf16=False)
    _memo[key] = ratio
    try:  # a read-only home only costs the next process another probe
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({**stored, key: round(ratio, 4)}, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
    return ratio


def resolve_precision(cfg: Config, device: torch.device) -> Precision:
    """What train.amp means for this run on `device` (probing the CPU only where it decides)."""
    asked = cfg.train.amp
    cpu = machine.cpu()
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    needs_probe = device.type == "cpu" and ((asked == "auto" and cpu.native_bf16) or
                                            (asked == "bf16" and not cpu.native_bf16))
    ratio = probe_ratio(cfg) if needs_probe else None
    chosen = decide(asked, device.type, cuda_bf16, cpu.native_bf16, ratio)
    if asked == "bf16" and device.type == "cpu" and not cpu.native_bf16 and cpu.model not in _warned:
        _warned.add(cpu.model)
        log.warning("train.amp=bf16: %s has no native bf16, so autocast emulates it; the model's convolution "
                    "ran %.1fx slower than fp32 here (train.amp=auto picks fp32 on this CPU)", cpu.model, ratio)
    return chosen


def with_precision(cfg: Config, device: torch.device, inference: bool = False) -> tuple[Config, Precision]:
    """A copy of cfg whose train.amp is what runs on `device` (what config.yaml, the checkpoints
    and the trial records then show). inference=True: a checkpoint scored on another device than
    it trained on keeps its precision where that device can run it, else gets auto's choice
    (fp16 from a GPU on a CPU), since precision there decides speed, not what was learnt."""
    resolved = cfg.model_copy(deep=True)  # the caller's config is left as written
    if inference and resolved.train.amp == "fp16" and device.type != "cuda":
        resolved.train.amp = "auto"
    chosen = resolve_precision(resolved, device)
    resolved.train.amp = chosen.amp
    return resolved, chosen
