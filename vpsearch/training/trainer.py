"""fit(config, run_dir): data, model, optimizer, schedules, resume and outputs wired together.

Run directory layout:
  config.yaml        the resolved config
  metrics.csv        one row per epoch (METRIC_COLUMNS)
  frame_psnr.csv     per-frame PSNR/SSIM of the best evaluation (+ copy-last baseline)
  curves.png schedules.png frame_psnr.png
  samples/best.gif samples/best_strip.png   prediction vs truth at the best epoch
  checkpoints/best.pt   weights of the best epoch (no optimizer state: for evaluate, predict, export)
  checkpoints/last.pt   everything to resume exactly (optimizer, RNG, scaler)
"""

from __future__ import annotations

import csv
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vpsearch.config import Config, ConfigError
from vpsearch.data import WindowSampler, load_split
from vpsearch.data.base import DataError, VideoSet, training_windows
from vpsearch.models import DataShape, build_model
from vpsearch.training.checkpoint import rng_state, save_checkpoint
from vpsearch.training.device import grad_scaler, own_random_stream, select_device, set_threads
from vpsearch.training.precision import Precision, with_precision
from vpsearch.training.engine import Evaluation, StepContext, evaluate, train_epoch
from vpsearch.training.history import OBJECTIVE_METRICS, read_frame_psnr, write_metrics
from vpsearch.training.outputs import RunPictures
from vpsearch.training.reporter import Reporter
from vpsearch.training.resume import resume as resume_run
from vpsearch.training.run_dir import wrote
from vpsearch.schedules import KLAnnealing, LearningRate, TeacherForcing, evaluated_epochs

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    run_dir: Path
    best_psnr: float  # val PSNR at the best epoch (the one eval.best_metric picked)
    best_epoch: int
    epochs_done: int
    stopped_early: bool
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list, repr=False)
    pictures: RunPictures | None = field(default=None, repr=False)  # GIF, strip, plots: see outputs.py
    best_value: float = math.nan  # eval.best_metric at the best epoch
    best_direction: str = "maximize"
    early_stopped_at: int | None = None  # the epoch train.early_stop ended training after

    @property
    def score(self) -> float:
        """The best value with higher meaning better (what checkpoint retention ranks by)."""
        return self.best_value if self.best_direction == "maximize" else -self.best_value

    @property
    def best_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "best.pt"

    @property
    def last(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def data_shape(data: VideoSet) -> DataShape:
    h, w, c = data.frame_shape
    cond_channels = int(data.cond.shape[-1]) if data.cond_kind == "image" else 0
    return DataShape(channels=c, height=h, width=w, cond_dim=data.cond_dim, cond_channels=cond_channels,
                     cond_parts=tuple(data.cond_parts or ()))


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    o = cfg.optim
    params = model.parameters()
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)


def check_data_serves(cfg: Config, val_set: VideoSet, n_windows: int, length: int) -> None:
    """Refuse before the first epoch what the data cannot serve (instead of failing at the first
    evaluation, or training on batches that repeat windows): a batch larger than the training
    windows (of `length` frames: training_windows may shorten them), or a rollout longer than every
    validation video."""
    d = cfg.data
    if 0 < n_windows < cfg.train.batch_size:
        raise DataError(f"train.batch_size={cfg.train.batch_size} is larger than the {n_windows} training windows "
                        f"of {d.root} ({length} frames each, every start used); lower train.batch_size or "
                        "use more or longer videos")
    h = d.n_future if cfg.eval.n_future is None else cfg.eval.n_future
    shown = f"eval.n_future={h}" if cfg.eval.n_future is not None else f"data.n_future={h} (eval.n_future unset)"
    longest = max((val_set.known_frames(i) for i in range(min(len(val_set), cfg.eval.max_sequences))), default=0)
    need = d.n_past + (1 if h == "all" else int(h))
    if longest < need:
        raise DataError(f"{shown} with data.n_past={d.n_past} needs validation videos of {need} frames, but the "
                        f"longest of split {d.val_split} has {longest} frames; lower eval.n_future")


@dataclass
class TrainingSetup:
    """Everything a run trains with, built from the config before anything is written (fit; the
    time probe in estimate.py runs a few steps of the same)."""

    cfg: Config  # train.amp resolved
    precision: Precision
    threads: int
    device: torch.device
    train_set: VideoSet
    val_set: VideoSet
    shape: DataShape
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    windows: np.ndarray
    length: int
    sampler_gen: torch.Generator
    teacher_gen: torch.Generator
    sampler: WindowSampler
    steps: int  # optimiser steps per epoch
    ctx: StepContext


def best_of(history: list[dict[str, float]], metric: str, direction: str) -> tuple[float, int]:
    """(value, epoch) of the best evaluated epoch by `metric`; (nan, -1) before any evaluation."""
    rows = [r for r in history if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if not rows:
        return math.nan, -1
    pick = max if direction == "maximize" else min
    best = pick(rows, key=lambda r: r[metric])
    return float(best[metric]), int(best["epoch"])


def improves(value: float, best: float, direction: str) -> bool:
    if not math.isfinite(value):
        return False
    return math.isnan(best) or (value > best if direction == "maximize" else value < best)


def prepare_training(cfg: Config) -> TrainingSetup:
    if cfg.eval.best_metric not in OBJECTIVE_METRICS:
        raise ConfigError(f"eval.best_metric: {cfg.eval.best_metric!r} is not an evaluation metric; expected one "
                          f"of {', '.join(OBJECTIVE_METRICS)}")
    threads = set_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    device = select_device(cfg.train.device)
    cfg, precision = with_precision(cfg, device)  # before the run folder: fp16 on a CPU changes nothing
    train_set = load_split(cfg.data, cfg.data.train_split)
    val_set = load_split(cfg.data, cfg.data.val_split)
    shape = data_shape(train_set)
    model = build_model(cfg.model, shape).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.memory_format = torch.channels_last
    optimizer = make_optimizer(model, cfg)
    windows, length, note = training_windows(train_set, cfg.data.n_past, cfg.data.window, cfg.data.window_stride,
                                             cfg.train.batch_size, cfg.data.train_split)
    if note:
        log.warning("%s", note)
    check_data_serves(cfg, val_set, len(windows), length)
    sampler_gen = torch.Generator().manual_seed(cfg.train.seed)
    teacher_gen = torch.Generator().manual_seed(cfg.train.seed + 1)
    sampler = WindowSampler(len(windows), cfg.train.batch_size, sampler_gen)
    steps = cfg.train.steps_per_epoch or math.ceil(len(windows) / cfg.train.batch_size)
    ctx = StepContext(model, optimizer, grad_scaler(device, cfg.train.amp), cfg, device, teacher_gen,
                      TeacherForcing.from_config(cfg.schedule), KLAnnealing.from_config(cfg),
                      LearningRate.from_config(cfg))
    return TrainingSetup(cfg, precision, threads, device, train_set, val_set, shape, model, optimizer, windows,
                         length, sampler_gen, teacher_gen, sampler, steps, ctx)


def fit(cfg: Config, run_dir: str | Path, reporter: Reporter | None = None, resume: bool = False,
        force: bool = False, wait_pictures: bool = True) -> FitResult:
    """Train cfg into run_dir. resume=True continues from checkpoints/last.pt when present (a
    config whose training-relevant fields differ from the run's needs force=True; see resume.py).
    The GIF, strip and plots are drawn off the training thread (outputs.py); wait_pictures=False
    returns before they are on disk (result.pictures says when)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    reporter = reporter or Reporter()
    setup = prepare_training(cfg)
    cfg, model, optimizer, ctx, train_set, val_set = (setup.cfg, setup.model, setup.optimizer, setup.ctx,
                                                      setup.train_set, setup.val_set)
    shape, windows, length, sampler, steps = setup.shape, setup.windows, setup.length, setup.sampler, setup.steps
    sampler_gen, teacher_gen, device = setup.sampler_gen, setup.teacher_gen, setup.device

    run_dir.mkdir(parents=True, exist_ok=True)
    pictures = RunPictures(run_dir)
    history: list[dict[str, float]] = []
    metric, direction = cfg.eval.best_metric, cfg.eval.best_direction
    best, best_epoch, start_epoch = math.nan, -1, 0
    last_ckpt = run_dir / "checkpoints" / "last.pt"
    if resume and last_ckpt.is_file():
        state = resume_run(last_ckpt, cfg, shape, model, optimizer, ctx.scaler, sampler_gen, teacher_gen, force)
        history = list(state["history"])
        best, best_epoch = best_of(history, metric, direction)  # eval.best_metric may change on resume
        start_epoch = state["epoch"] + 1
    wrote(run_dir, "config.yaml", "metrics.csv", "checkpoints")
    (run_dir / "config.yaml").write_text(cfg.to_yaml())  # after the resume check: a refused resume changes nothing
    reporter.started(run_dir, cfg.to_dict())
    if start_epoch:
        reporter.resumed(start_epoch, history)

    progress = _progress(cfg, (cfg.train.epochs - start_epoch) * steps,
                         start_line(setup, run_dir))
    stopped, early_stopped_at = False, None
    evaluated = set(evaluated_epochs(cfg.train.epochs, cfg.eval.every))
    for epoch in range(start_epoch, cfg.train.epochs):
        fast = epoch < cfg.data.fast_train_epochs and cfg.data.fast_train_fraction < 1
        limit = int(len(windows) * cfg.data.fast_train_fraction) if fast else None
        batches = sampler.epoch(cfg.train.steps_per_epoch, limit)
        t0 = time.perf_counter()
        stats = train_epoch(ctx, train_set, windows, batches, epoch, on_step=progress.update_step, length=length)
        lr = ctx.lr.at(epoch, 0, len(batches))  # the epoch's row shows where its schedule started
        row = {"epoch": epoch, **{k: v for k, v in stats.items() if k != "train_seconds"}, "lr": lr}
        if lr > 0:
            row["log10_lr"] = math.log10(lr)
        if epoch in evaluated:
            with own_random_stream(cfg.eval.seed, device):  # eval.every must not move training's draws
                ev = evaluate(model, val_set, cfg, device, samples=cfg.eval.samples, horizon=cfg.eval.n_future,
                              max_sequences=cfg.eval.max_sequences, keep=cfg.eval.gif_sequences,
                              on_batch=progress.evaluating)
            row.update(val_psnr=ev.psnr, val_ssim=ev.ssim, val_psnr_best_of_n=ev.psnr_best_of_n,
                       baseline_psnr=ev.baseline_copy_last_psnr)
            reporter.evaluated(epoch, {"psnr": ev.psnr_per_frame, "ssim": ev.ssim_per_frame,
                                       "baseline_psnr": ev.baseline_per_frame})
            if improves(row[metric], best, direction):
                best, best_epoch = row[metric], epoch
                write_best_outputs(run_dir, ev, pictures)
            else:
                pictures.confirm()  # the held best stood: draw it now
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        write_metrics(run_dir / "metrics.csv", history)
        ckpt = dict(cfg=cfg, shape=shape, model=model, optimizer=optimizer, epoch=epoch, best=best,
                    best_epoch=best_epoch, history=history, rng=rng_state(sampler_gen, teacher_gen), lr=lr,
                    scaler=ctx.scaler)
        if best_epoch == epoch:
            save_checkpoint(run_dir / "checkpoints" / "best.pt", **ckpt, weights_only=True)
        save_checkpoint(last_ckpt, **ckpt)
        progress.epoch_done(epoch, row)
        if reporter.report(epoch, {k: v for k, v in row.items() if k != "epoch"}):
            stopped = True
            break
        # validations since the best, from the history: a resumed run counts the epochs before it too
        since_best = sum(1 for r in history if r["epoch"] > best_epoch and metric in r)
        if cfg.train.early_stop and since_best >= cfg.train.early_stop:
            early_stopped_at = epoch
            break
    pictures.plots(history, read_frame_psnr(run_dir / "frame_psnr.csv"))
    if wait_pictures:
        pictures.wait()
    progress.close()
    best_row = next((r for r in history if r["epoch"] == best_epoch), {})
    result = FitResult(run_dir, float(best_row.get("val_psnr", math.nan)) if best_row else -math.inf, best_epoch,
                       len(history), stopped, time.perf_counter() - started, history, pictures, best, direction,
                       early_stopped_at)
    reporter.finished(result)
    return result


def write_best_outputs(run_dir: Path, ev: Evaluation, pictures: RunPictures) -> None:
    wrote(run_dir, "frame_psnr.csv")
    with (run_dir / "frame_psnr.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "psnr", "ssim", "psnr_best_of_n", "baseline_psnr"])
        for i, row in enumerate(zip(ev.psnr_per_frame, ev.ssim_per_frame, ev.psnr_best_of_n_per_frame,
                                    ev.baseline_per_frame)):
            w.writerow([i + 1, *(f"{v:.4f}" for v in row)])
    if ev.predictions:
        pictures.best(ev.truths, ev.predictions, ev.contexts)


def start_line(setup: TrainingSetup, run_dir: Path) -> str:
    """What a training run is about to do, in one line (the first line of `vpsearch train`)."""
    from vpsearch.data.builtin import resolve_root

    cfg, threads = setup.cfg, setup.threads
    root = str(cfg.data.root)
    where = f"{root} ({resolve_root(root)})" if root.startswith("builtin:") else root
    return (f"training {cfg.name} on {where}: {len(setup.train_set)} train / {len(setup.val_set)} val sequences "
            f"({len(setup.windows)} windows of {cfg.data.window} frames); device {setup.device}, "
            f"{setup.precision.shown}, {threads} thread{'s' if threads != 1 else ''}; {cfg.train.epochs} epochs; "
            f"output {run_dir}")


class _progress:
    """With train.progress: the start line, then a tqdm bar over training steps that shows the
    evaluation batches as they run (so it does not sit still at 100% during the last one)."""

    def __init__(self, cfg: Config, total: int, first_line: str):
        self.bar = None
        self.post: dict[str, str] = {}
        if cfg.train.progress:
            from tqdm.auto import tqdm
            print(first_line, file=sys.stderr, flush=True)  # with the bar: stdout keeps only the result
            self.bar = tqdm(total=total, desc=cfg.name, unit="step", dynamic_ncols=True)

    def update_step(self, _i: int) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def evaluating(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix({**self.post, "evaluating": f"{done}/{total} batches"})

    def epoch_done(self, epoch: int, row: dict) -> None:
        if self.bar is not None:
            self.post = {"epoch": str(epoch), "loss": f"{row['loss']:.4f}"}
            if "val_psnr" in row:
                self.post["val_psnr"] = f"{row['val_psnr']:.2f}"
            self.bar.set_postfix(self.post)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
