"""What this machine is: its CPU, the instructions it runs natively, the cores a process may use.

Torch-free and below every layer: precision and thread defaults are decided from these, the
headers print them, and timings state them. Read from Linux's /proc and /sys; elsewhere the
answers fall back to what the standard library knows (no native bf16 claimed, logical cores).
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

# instruction-set flags (as /proc/cpuinfo names them) under which a CPU runs bf16 natively
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class CPU:
    model: str
    flags: frozenset[str]
    physical_cores: int
    usable_cores: int  # the cores this process may run on (affinity / container limits), physical

    @property
    def native_bf16(self) -> tuple[str, ...]:
        """The flags that make bf16 native here; empty when it would be emulated."""
        return tuple(f for f in NATIVE_BF16_FLAGS if f in self.flags)

    def describe(self) -> str:
        simd = [f for f in ("avx2", "avx512f", *NATIVE_BF16_FLAGS) if f in self.flags]
        return (f"{self.model}, {self.usable_cores} core{'s' if self.usable_cores != 1 else ''}"
                f" ({', '.join(simd) or 'no avx2'})")


def _cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine() or "unknown CPU", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / ARM
            flags = frozenset(value.split())
    return model, flags


def _physical_cores(allowed: set[int], sys_cpu: Path = Path("/sys/devices/system/cpu")) -> int:
    """Allowed logical CPUs counted once per physical core (hyper-threads share one)."""
    cores = set()
    for cpu in allowed:
        siblings = sys_cpu / f"cpu{cpu}" / "topology" / "thread_siblings_list"
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


@functools.cache
def cpu() -> CPU:
    try:
        model, flags = _cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, flags = _cpuinfo("")
    try:
        allowed = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = set(range(os.cpu_count() or 1))
    logical = os.cpu_count() or len(allowed)
    physical = _physical_cores(set(range(logical)))
    return CPU(model=model, flags=flags, physical_cores=physical, usable_cores=_physical_cores(allowed))


def threads_per_worker(n_workers: int = 1, cores: int | None = None) -> int:
    """CPU threads for each of n_workers local workers: one worker gets the physical cores it may
    use, several share them (at least 1 each). Hyper-threads are left out: a small model gains
    nothing from them, and a second thread per core makes the spin-waits of shared cores worse."""
    cores = cores or cpu().usable_cores
    return max(1, cores // max(1, n_workers))
