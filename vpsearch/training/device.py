"""Device selection and mixed precision, decided once per run."""

from __future__ import annotations

import contextlib

import torch

from vpsearch.config import ConfigError
from vpsearch.machine import threads_per_worker


def select_device(spec: str = "auto") -> torch.device:
    """auto -> the first CUDA device if any, else CPU; cuda[:N] must exist."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={spec}: CUDA is not available on this machine (use cpu or auto)")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device={spec}: only {torch.cuda.device_count()} CUDA device(s) here")
        return dev
    if spec == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"train.device={spec!r}: expected auto, cpu, cuda or cuda:N")


def autocast(device: torch.device, amp: str):
    """bf16 works on CPU and CUDA; fp16 only on CUDA (with a GradScaler). amp is resolved
    (precision.with_precision): auto never reaches here."""
    if amp == "auto":
        raise ValueError("autocast: train.amp=auto must be resolved first (training/precision.py)")
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device; use bf16 on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16" and device.type == "cuda"))


@contextlib.contextmanager
def own_random_stream(seed: int, device: torch.device):
    """Draws inside the block come from a stream seeded with `seed` (CPU, and `device` when it is a
    GPU); the caller's stream resumes after it as if the block had drawn nothing."""
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus, device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        for index in gpus:  # only this worker's GPU: seeding them all would touch other workers' devices
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def set_threads(num_threads: int | None) -> int:
    """torch's intra-op threads for this process: num_threads, else the physical cores it may use.
    Through torch's API: OMP_NUM_THREADS set after torch is imported would reach children only."""
    n = num_threads or threads_per_worker(1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def split_devices(devices: str, workers: int | None, per_device: int | None = None) -> list[str]:
    """Devices for each worker: 'cuda:0,cuda:1' -> one worker per GPU; 'cpu' -> `workers` CPU slots.

    'cuda' alone means every visible GPU. per_device=K puts K workers on each device instead
    (the CPU counts as one device), interleaved (cuda:0, cuda:1, cuda:0, ...) so that a study
    with fewer trials than workers still spreads over the GPUs. Pure (the GPU count is looked
    up only for 'cuda').
    """
    items = [d.strip() for d in devices.split(",") if d.strip()]
    if items == ["cuda"]:
        items = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if not items:
            raise ConfigError("devices=cuda: no CUDA device is visible")
    if per_device is not None:
        if per_device < 1:
            raise ConfigError(f"trials per device: expected 1 or more, got {per_device}")
        return [d for _ in range(per_device) for d in (items or ["cpu"])]
    if items == ["cpu"] or not items:
        return ["cpu"] * max(1, workers or 1)
    if workers and workers != len(items):
        # several workers per GPU share it round-robin
        return [items[i % len(items)] for i in range(workers)]
    return items
