"""Per-step training values (loss terms, grad norm) read from the device in blocks.

Reading a CUDA tensor on the host (`.tolist()`, `.item()`) waits for every queued kernel, so a
read at each step leaves the GPU idle while Python prepares the next one. StepLog keeps each
step's values on the device and copies them to the host in one read every `read_every` steps
and at the end of the epoch. The check (non-finite loss) then runs on every step's values in
order, so its error still names the first bad step; training has run at most read_every - 1
steps past it, on weights it already spoiled, and the trial fails either way. On CPU a read
costs nothing: read_every is 1 and a bad step stops training before its optimizer step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

READ_EVERY_ACCELERATOR = 32  # steps between host reads on CUDA: one sync amortised over 32 steps


def read_every(device: torch.device) -> int:
    """How many steps' values wait on the device before one host read."""
    return 1 if device.type == "cpu" else READ_EVERY_ACCELERATOR


class StepLog:
    """Collects (width,) value tensors, one per step; `check(values, step)` sees each on the host."""

    def __init__(self, width: int, read_every: int, check: Callable[[list[float], int], None]):
        if read_every < 1:
            raise ValueError(f"read_every must be 1 or more, got {read_every}")
        self.width, self.read_every, self.check = width, read_every, check
        self.pending: list[Tensor] = []
        self.read: list[list[float]] = []
        self.reads = 0  # host synchronisations so far

    def add(self, values: Tensor) -> None:
        self.pending.append(values.detach())
        if len(self.pending) >= self.read_every:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        block = torch.stack(self.pending).tolist()  # the one host read of the block
        self.reads += 1
        self.pending = []
        for values in block:
            self.check(values, len(self.read))
            self.read.append(values)

    def rows(self) -> np.ndarray:
        """(steps, width) of everything added so far, read now if still on the device."""
        self.flush()
        return np.asarray(self.read, dtype=np.float64).reshape(len(self.read), self.width)
