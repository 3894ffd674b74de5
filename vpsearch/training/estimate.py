"""How long a run of a config will take on this machine, measured before it starts.

A probe builds the run exactly as fit does (prepare_training: the resolved precision and
threads, the data, the model), times a few optimiser steps after a warm-up, one evaluation
batch over a short rollout scaled to the evaluation's frames, and one checkpoint write, and
adds them up over the config's epochs. It writes nothing and leaves the caller's random
stream alone. `study check` and the `study run` header print it; the live line's ETA uses it
until trials of the study have finished.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vpsearch import fmt
from vpsearch.config import Config
from vpsearch.schedules import evaluated_epochs

PROBE_STEPS = 3  # timed optimiser steps (after one warm-up step)
PROBE_FRAMES = 12  # rollout frames of the timed evaluation batch


@dataclass(frozen=True)
class TrialEstimate:
    setup_seconds: float  # data open (caches already built), model, first-step warm-up
    step_seconds: float
    eval_seconds: float  # one whole evaluation
    checkpoint_seconds: float  # one last.pt write
    epochs: int
    steps: int  # per epoch
    evaluations: int
    precision: str  # as Precision.shown
    threads: int

    @property
    def trial_seconds(self) -> float:
        return (self.setup_seconds + self.epochs * (self.steps * self.step_seconds + self.checkpoint_seconds)
                + self.evaluations * self.eval_seconds)

    def describe(self) -> str:
        return (f"about {fmt.duration(self.trial_seconds)} per run ({self.epochs} epochs x {self.steps} steps at "
                f"{self.step_seconds:.2f} s/step, {self.evaluations} evaluations of {self.eval_seconds:.1f} s; "
                f"{self.precision}, {self.threads} thread{'s' if self.threads != 1 else ''}; probed on this machine)")


def probe(cfg: Config) -> TrialEstimate:
    """Measure cfg's run time here: a few seconds (a rollout of PROBE_FRAMES, PROBE_STEPS + 1 steps)."""
    from vpsearch.training.checkpoint import rng_state, save_checkpoint
    from vpsearch.training.device import own_random_stream
    from vpsearch.training.engine import evaluate, evaluation_plan, train_epoch
    from vpsearch.training.trainer import prepare_training

    from vpsearch.data import load_split

    for split in (cfg.data.train_split, cfg.data.val_split):  # a frame cache built once per dataset,
        load_split(cfg.data, split)  # not per trial: out of the timed set-up
    with torch.random.fork_rng(devices=[]):
        t0 = time.perf_counter()
        s = prepare_training(cfg)
        batches = s.sampler.epoch(PROBE_STEPS + 1)
        train_epoch(s.ctx, s.train_set, s.windows, batches[:1], 0, length=s.length)  # allocators, kernels
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_epoch(s.ctx, s.train_set, s.windows, batches[1:], 0, length=s.length)
        step = (time.perf_counter() - t0) / max(1, len(batches) - 1)

        c = s.cfg
        plan = evaluation_plan(s.val_set, c, c.eval.n_future, c.eval.max_sequences)
        by_horizon: dict[int, int] = {}
        for *_, h in plan:
            by_horizon[h] = by_horizon.get(h, 0) + 1
        # a batch rolls out to its horizon: the evaluation's cost in batch-frames
        batch_frames = sum(math.ceil(n / c.eval.batch_size) * h for h, n in by_horizon.items())
        frames = min(PROBE_FRAMES, max(by_horizon))
        t0 = time.perf_counter()
        with own_random_stream(c.eval.seed, s.device):
            evaluate(s.model, s.val_set, c, s.device, samples=c.eval.samples, horizon=frames,
                     max_sequences=min(c.eval.batch_size, c.eval.max_sequences))
        one_eval = (time.perf_counter() - t0) * batch_frames / frames

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            save_checkpoint(Path(tmp) / "last.pt", cfg=c, shape=s.shape, model=s.model, optimizer=s.optimizer,
                            epoch=0, best=0.0, best_epoch=0, history=[], rng=rng_state(s.sampler_gen, s.teacher_gen),
                            lr=c.optim.lr, scaler=s.ctx.scaler)
            ckpt = time.perf_counter() - t0
    return TrialEstimate(setup, step, one_eval, ckpt, c.train.epochs, s.steps,
                         len(evaluated_epochs(c.train.epochs, c.eval.every)), s.precision.shown, s.threads)
