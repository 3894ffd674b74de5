"""Schedules as pure functions of the epoch or iteration: nothing here keeps state.

Counts are tracked by the trainer and passed in, so resume only has to restore the
counts (timm's rule). Everything else that needs to know how a schedule behaves (the
config check for degenerate schedules, the schedule-aware pruner, strategy names in
reports) asks these objects instead of redoing their arithmetic.

A schedule counted per epoch takes one value per epoch; one counted per iteration a
value per training step. An epoch-counted schedule that would change faster than
MIN_RISE_EPOCHS epochs per rise (a KL cycle shorter than ~2 epochs, a teacher-forcing
decay over less than 2 epochs) is degenerate when sampled once per epoch (9 cycles in 9
epochs gives a KL weight of 0 at every epoch), so the config switches it to per
iteration (``resolve_units``).

The ground floor: torch is imported only inside the functions that draw masks, and nothing of
vpsearch at run time (the config imports this module to check and resolve its schedules).
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# vpsearch.config's Config and its sections: config imports this module to check and resolve
# its schedules, so they are named here, not imported (the ground floor imports nothing above)
Config = ScheduleConfig = OptimConfig = Any

MIN_RISE_EPOCHS = 2.0  # an epoch-counted schedule must rise / decay over at least this many epochs


@dataclass(frozen=True)
class TeacherForcing:
    """Teacher-forcing ratio, the lab rule.

    tfr(e) = initial for e <= start_decay_epoch, then loses decay_step per epoch, never
    below lower_bound:  tfr(e) = max(lower, initial - step * max(0, e - start)).
    (The lab subtracts at the end of every epoch >= start, so epoch start still trains
    with the initial ratio.) Counted per iteration, e is fractional: epoch + step / steps.
    """

    initial: float = 1.0
    start_decay_epoch: int = 10
    decay_step: float = 0.1
    lower_bound: float = 0.0
    mode: str = "batch"  # batch: one coin per batch; step: one coin per sample and step
    unit: str = "epoch"

    @classmethod
    def from_config(cls, s: "ScheduleConfig") -> "TeacherForcing":
        return cls(s.tfr, s.tfr_start_decay_epoch, s.tfr_decay_step, s.tfr_lower_bound, s.tfr_mode,
                   s.tfr_unit)

    def ratio(self, epoch: float) -> float:
        decayed = self.initial - self.decay_step * max(0.0, epoch - self.start_decay_epoch)
        return max(self.lower_bound, min(self.initial, decayed))

    def at(self, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
        """Ratio for a training step, in whichever unit the schedule counts."""
        if self.unit == "iteration":
            return self.ratio(epoch + step_in_epoch / max(1, steps_per_epoch))
        return self.ratio(epoch)

    @property
    def decay_epochs(self) -> float:
        """Epochs from the start of the decay to the lower bound (inf: it never decays)."""
        if self.decay_step <= 0 or self.initial <= self.lower_bound:
            return math.inf
        return (self.initial - self.lower_bound) / self.decay_step

    def first_decayed_epoch(self, epochs: int) -> int | None:
        """The first epoch trained (at its end) with less than the initial ratio; None if never."""
        if math.isinf(self.decay_epochs) or self.start_decay_epoch + 1 >= epochs:
            return None
        return self.start_decay_epoch + (0 if self.unit == "iteration" else 1)

    def mask(self, ratio: float, batch: int, length: int, generator: "torch.Generator") -> "torch.Tensor":
        """(batch, length) bool: True where step t is fed the true previous frame."""
        import torch

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
    def from_config(cls, cfg: "Config") -> "KLAnnealing":
        s = cfg.schedule
        total = cfg.train.epochs
        if s.kl_anneal_unit == "iteration":
            if cfg.train.steps_per_epoch is None:  # refused by the config's validation
                raise ValueError("schedule.kl_anneal_unit=iteration needs train.steps_per_epoch set")
            total *= cfg.train.steps_per_epoch
        return cls(s.kl_anneal_type, s.kl_anneal_cycle, s.kl_anneal_ratio, total, s.kl_anneal_unit)

    @property
    def period(self) -> float:
        """Length of one cycle in counts (the whole of training unless cyclical)."""
        return self.total / (self.cycles if self.kind == "cyclical" else 1)

    def weight(self, t: int) -> float:
        if self.kind == "none":
            return 1.0
        if self.kind == "monotonic":
            return min(1.0, t / (self.ratio * self.total))
        period = self.period
        pos = t - math.floor(t / period) * period
        return min(1.0, pos / (period * self.ratio))

    def at(self, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float:
        """Weight for a training step, in whichever unit the schedule counts."""
        if self.unit == "iteration":
            return self.weight(epoch * steps_per_epoch + step_in_epoch)
        return self.weight(epoch)

    def cycle_length_epochs(self, steps_per_epoch: int = 1) -> float:
        """Epochs per KL cycle (the whole of training unless cyclical)."""
        return self.period / steps_per_epoch if self.unit == "iteration" else self.period

    def rise_epochs(self, steps_per_epoch: int = 1) -> float:
        """Epochs the weight takes to rise from 0 to 1 in a cycle (inf for none)."""
        return math.inf if self.kind == "none" else self.ratio * self.cycle_length_epochs(steps_per_epoch)

    def cycle_of(self, epoch: int, steps_per_epoch: int = 1) -> int:
        """The cycle (0-based) an epoch's last training step belongs to."""
        t = self._last_count(epoch, steps_per_epoch)
        return math.floor(t / self.period + 1e-9)

    def settled(self, epoch: int, steps_per_epoch: int = 1) -> bool:
        """True when the epoch ends at full weight: the ramp of its cycle is over."""
        return self.weight(self._last_count(epoch, steps_per_epoch)) >= 1.0 - 1e-9

    def _last_count(self, epoch: int, steps_per_epoch: int) -> int:
        return (epoch + 1) * steps_per_epoch - 1 if self.unit == "iteration" else epoch


def resolve_units(s: "ScheduleConfig", epochs: int, steps_per_epoch: int | None) -> tuple[str, str]:
    """(kl_anneal_unit, tfr_unit) to use: an epoch-counted schedule that rises or decays over
    fewer than MIN_RISE_EPOCHS epochs is counted per iteration instead.

    Raises ValueError (naming the fields) when it would need iterations but
    train.steps_per_epoch is None (one pass over the data: the count is not known here).
    """
    kl = KLAnnealing(s.kl_anneal_type, s.kl_anneal_cycle, s.kl_anneal_ratio, epochs, "epoch")
    tf = TeacherForcing(s.tfr, s.tfr_start_decay_epoch, s.tfr_decay_step, s.tfr_lower_bound, s.tfr_mode)
    kl_unit, tf_unit = s.kl_anneal_unit, s.tfr_unit
    if kl_unit == "epoch" and kl.rise_epochs() < MIN_RISE_EPOCHS:
        what = (f"{s.kl_anneal_cycle} cycles over {epochs} epochs" if kl.kind == "cyclical"
                else f"a ramp over {s.kl_anneal_ratio:g} of {epochs} epochs")
        if steps_per_epoch is None:
            raise ValueError(f"schedule.kl_anneal_cycle: {s.kl_anneal_type} KL annealing with {what} rises "
                             f"for {kl.rise_epochs():.2g} epoch(s) per cycle, too short to count per epoch "
                             f"(needs >= {MIN_RISE_EPOCHS:g}); set train.steps_per_epoch so it can be counted "
                             "per iteration, or use fewer cycles")
        kl_unit = "iteration"
    span = tf.decay_epochs
    if tf_unit == "epoch" and span < MIN_RISE_EPOCHS and tf.first_decayed_epoch(epochs) is not None:
        if steps_per_epoch is None:
            raise ValueError(f"schedule.tfr_decay_step: teacher forcing decays from {s.tfr:g} to "
                             f"{s.tfr_lower_bound:g} in {span:.2g} epoch(s), too fast to count per epoch (needs "
                             f">= {MIN_RISE_EPOCHS:g}); set train.steps_per_epoch or a smaller decay step")
        tf_unit = "iteration"
    return kl_unit, tf_unit


@functools.lru_cache(maxsize=4096)
def _hash_per_step(schedule: KLAnnealing | TeacherForcing, epochs: int, steps: int) -> str:
    values = [round(schedule.at(e, i, steps), 6) for e in range(epochs) for i in range(steps)]
    # one coin per batch or per step: the same thing while every ratio is 0 or 1
    mixed = isinstance(schedule, TeacherForcing) and any(0 < v < 1 for v in values)
    extra = schedule.mode if mixed else ""
    return hashlib.sha1(repr((values, extra)).encode()).hexdigest()[:12]


def kl_signature(cfg: "Config") -> str:
    """A hash of the KL weight of every training step of the budget.

    Two configs with the same signature anneal KL identically, whatever their settings
    say (cyclical with 1 cycle and monotonic with the same ratio): one strategy.
    """
    return _hash_per_step(KLAnnealing.from_config(cfg), cfg.train.epochs, cfg.train.steps_per_epoch or 1)


def tf_signature(cfg: "Config") -> str:
    """A hash of the teacher-forcing ratio (and coin mode) of every training step of the budget
    (a decay that starts after the last epoch is the same as no decay)."""
    return _hash_per_step(TeacherForcing.from_config(cfg.schedule), cfg.train.epochs, cfg.train.steps_per_epoch or 1)


def evaluated_epochs(epochs: int, every: int) -> list[int]:
    """The epochs (0-based) a run validates at: every `every`-th, and always the last. The one
    rule the trainer, its time estimate and the pruner's judged epochs share."""
    return [e for e in range(epochs) if (e + 1) % every == 0 or e == epochs - 1]


def lr_factor(epoch: int, o: "OptimConfig", epochs: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """Multiplier of optim.lr at `step` of `epoch` (0-based): warmup, then the chosen decay.

    The schedule moves per optimiser step (MAE's lr at epoch + step / steps): a cosine over a
    dozen epochs is a curve, not a staircase. steps_per_epoch=1 (optim.lr_unit: epoch) gives
    one value per epoch, the labs' convention. Milestones stay in epochs either way."""
    u = max(1, steps_per_epoch)
    t = epoch * u + min(step, u - 1)
    warm = o.warmup_epochs * u
    if warm and t < warm:
        return (t + 1) / (warm + 1)
    if o.lr_schedule == "multistep":
        return o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.lr_schedule == "cosine":
        span = max(1, epochs - o.warmup_epochs) * u
        progress = min(1.0, (t - warm) / span)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


@dataclass(frozen=True)
class LearningRate:
    """optim.lr over training, per step or per epoch (optim.lr_unit); pure like the other schedules."""

    base: float
    optim: "OptimConfig"
    epochs: int

    @classmethod
    def from_config(cls, cfg: "Config") -> "LearningRate":
        return cls(cfg.optim.lr, cfg.optim, cfg.train.epochs)

    def at(self, epoch: int, step: int, steps: int) -> float:
        if self.optim.lr_unit == "epoch":
            return self.base * lr_factor(epoch, self.optim, self.epochs)
        return self.base * lr_factor(epoch, self.optim, self.epochs, step, steps)
