"""Schedules as pure functions of the epoch or iteration: nothing here keeps state.

Counts are tracked by the trainer and passed in, so resume only has to restore the
counts (timm's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vpsearch.config import Config, ConfigError, OptimConfig, ScheduleConfig


@dataclass(frozen=True)
class TeacherForcing:
    """Teacher-forcing ratio per epoch, the lab rule.

    tfr(e) = initial for e <= start_decay_epoch, then loses decay_step per epoch, never
    below lower_bound:  tfr(e) = max(lower, initial - step * max(0, e - start)).
    (The lab subtracts at the end of every epoch >= start, so epoch start still trains
    with the initial ratio.)
    """

    initial: float = 1.0
    start_decay_epoch: int = 10
    decay_step: float = 0.1
    lower_bound: float = 0.0
    mode: str = "batch"  # batch: one coin per batch; step: one coin per sample and step

    @classmethod
    def from_config(cls, s: ScheduleConfig) -> "TeacherForcing":
        return cls(s.tfr, s.tfr_start_decay_epoch, s.tfr_decay_step, s.tfr_lower_bound, s.tfr_mode)

    def ratio(self, epoch: int) -> float:
        decayed = self.initial - self.decay_step * max(0, epoch - self.start_decay_epoch)
        return max(self.lower_bound, min(self.initial, decayed))

    def mask(self, ratio: float, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, length) bool: True where step t is fed the true previous frame."""
        if self.mode == "batch":
            coin = bool(torch.rand((), generator=generator) < ratio)
            return torch.full((batch, length), coin)
        return torch.rand((batch, length), generator=generator) < ratio


@dataclass(frozen=True)
class KLAnnealing:
    """Weight in [0, 1] multiplying beta; t counts epochs or iterations from 0, of `total`.

    none: 1.  monotonic: rises linearly from 0 to 1 over the first `ratio` of training.
    cyclical: `cycles` equal periods; in each, rises from 0 over `ratio` of the period,
    then holds 1 (Fu et al. 2019; the labs' frange_cycle_linear).
    """

    kind: str = "cyclical"
    cycles: int = 3
    ratio: float = 0.5
    total: int = 1
    unit: str = "epoch"

    @classmethod
    def from_config(cls, cfg: Config) -> "KLAnnealing":
        s = cfg.schedule
        total = cfg.train.epochs
        if s.kl_anneal_unit == "iteration":
            if cfg.train.steps_per_epoch is None:
                raise ConfigError("schedule.kl_anneal_unit=iteration needs train.steps_per_epoch set")
            total *= cfg.train.steps_per_epoch
        return cls(s.kl_anneal_type, s.kl_anneal_cycle, s.kl_anneal_ratio, total, s.kl_anneal_unit)

    def weight(self, t: int) -> float:
        if self.kind == "none":
            return 1.0
        if self.kind == "monotonic":
            return min(1.0, t / (self.ratio * self.total))
        period = self.total / self.cycles
        pos = t - math.floor(t / period) * period
        return min(1.0, pos / (period * self.ratio))

    def at(self, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
        """Weight for a training step, in whichever unit the schedule counts."""
        if self.unit == "iteration":
            return self.weight(epoch * steps_per_epoch + step_in_epoch)
        return self.weight(epoch)

    def cycle_length_epochs(self, steps_per_epoch: int = 1) -> float:
        """Epochs per KL cycle (the pruner waits at least this long)."""
        period = self.total / (self.cycles if self.kind == "cyclical" else 1)
        return period / steps_per_epoch if self.unit == "iteration" else period


def lr_factor(epoch: int, o: OptimConfig, epochs: int) -> float:
    """Multiplier of optim.lr during `epoch` (0-based): warmup, then the chosen decay."""
    if o.warmup_epochs and epoch < o.warmup_epochs:
        return (epoch + 1) / (o.warmup_epochs + 1)
    if o.lr_schedule == "multistep":
        return o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.lr_schedule == "cosine":
        span = max(1, epochs - o.warmup_epochs)
        progress = min(1.0, (epoch - o.warmup_epochs) / span)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0
