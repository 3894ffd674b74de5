"""fit(config, run_dir): data, model, optimizer, schedules, resume and outputs wired together.

Run directory layout:
  config.yaml        the resolved config
  metrics.csv        one row per epoch (METRIC_COLUMNS)
  frame_psnr.csv     per-frame PSNR/SSIM of the best evaluation (+ copy-last baseline)
  curves.png schedules.png frame_psnr.png
  samples/best.gif samples/best_strip.png   prediction vs truth at the best epoch
  checkpoints/best.pt checkpoints/last.pt
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vpsearch.config import Config
from vpsearch.data import WindowSampler, load_split
from vpsearch.data.base import VideoSet, training_windows
from vpsearch.models import DataShape, build_model
from vpsearch.training.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from vpsearch.training.device import grad_scaler, select_device, set_threads
from vpsearch.training.engine import Evaluation, StepContext, evaluate, train_epoch
from vpsearch.training.reporter import Reporter
from vpsearch.training.schedules import KLAnnealing, TeacherForcing, lr_factor
from vpsearch.training.visualize import plot_run, write_gif, write_strip

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["epoch", "loss", "mse", "kl", "kl_beta", "tfr", "lr", "grad_norm", "grad_norm_max", "val_psnr",
                  "val_ssim", "val_psnr_best_of_n", "baseline_psnr", "frames_per_second", "seconds"]


@dataclass
class FitResult:
    run_dir: Path
    best_psnr: float
    best_epoch: int
    epochs_done: int
    stopped_early: bool
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

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


def fit(cfg: Config, run_dir: str | Path, reporter: Reporter | None = None, resume: bool = False) -> FitResult:
    """Train cfg into run_dir. resume=True continues from checkpoints/last.pt when present."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    reporter = reporter or Reporter()
    set_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    device = select_device(cfg.train.device)
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
    sampler_gen = torch.Generator().manual_seed(cfg.train.seed)
    teacher_gen = torch.Generator().manual_seed(cfg.train.seed + 1)
    sampler = WindowSampler(len(windows), cfg.train.batch_size, sampler_gen)
    steps = cfg.train.steps_per_epoch or math.ceil(len(windows) / cfg.train.batch_size)
    ctx = StepContext(model, optimizer, grad_scaler(device, cfg.train.amp), cfg, device, teacher_gen,
                      TeacherForcing.from_config(cfg.schedule), KLAnnealing.from_config(cfg))

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    history: list[dict[str, float]] = []
    best, best_epoch, start_epoch = -math.inf, -1, 0
    last_ckpt = run_dir / "checkpoints" / "last.pt"
    if resume and last_ckpt.is_file():
        state = load_checkpoint(last_ckpt)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], sampler_gen, teacher_gen)
        history, best, best_epoch = list(state["history"]), state["best"], state["best_epoch"]
        start_epoch = state["epoch"] + 1
    reporter.started(run_dir, cfg.to_dict())

    progress = _progress(cfg, (cfg.train.epochs - start_epoch) * steps)
    stopped = False
    for epoch in range(start_epoch, cfg.train.epochs):
        lr = cfg.optim.lr * lr_factor(epoch, cfg.optim, cfg.train.epochs)
        for g in optimizer.param_groups:
            g["lr"] = lr
        fast = epoch < cfg.data.fast_train_epochs and cfg.data.fast_train_fraction < 1
        limit = int(len(windows) * cfg.data.fast_train_fraction) if fast else None
        batches = sampler.epoch(cfg.train.steps_per_epoch, limit)
        t0 = time.perf_counter()
        stats = train_epoch(ctx, train_set, windows, batches, epoch, on_step=progress.update_step, length=length)
        row = {"epoch": epoch, **{k: stats[k] for k in ("loss", "mse", "kl", "kl_beta", "tfr", "grad_norm",
                                                         "grad_norm_max", "frames_per_second")}, "lr": lr}
        last_epoch = epoch == cfg.train.epochs - 1
        if (epoch + 1) % cfg.eval.every == 0 or last_epoch:
            ev = evaluate(model, val_set, cfg, device, samples=cfg.eval.samples, horizon=cfg.eval.n_future,
                          max_sequences=cfg.eval.max_sequences, keep=cfg.eval.gif_sequences)
            row.update(val_psnr=ev.psnr, val_ssim=ev.ssim, val_psnr_best_of_n=ev.psnr_best_of_n,
                       baseline_psnr=ev.baseline_copy_last_psnr)
            reporter.evaluated(epoch, {"psnr": ev.psnr_per_frame, "ssim": ev.ssim_per_frame})
            if ev.psnr > best:
                best, best_epoch = ev.psnr, epoch
                write_best_outputs(run_dir, ev)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        write_metrics(run_dir / "metrics.csv", history)
        ckpt = dict(cfg=cfg, shape=shape, model=model, optimizer=optimizer, epoch=epoch, best=best,
                    best_epoch=best_epoch, history=history, rng=rng_state(sampler_gen, teacher_gen), lr=lr)
        if best_epoch == epoch:
            save_checkpoint(run_dir / "checkpoints" / "best.pt", **ckpt)
        save_checkpoint(last_ckpt, **ckpt)
        progress.epoch_done(epoch, row)
        if reporter.report(epoch, {k: v for k, v in row.items() if k != "epoch"}):
            stopped = True
            break
    progress.close()
    plot_run(run_dir, history, read_frame_psnr(run_dir / "frame_psnr.csv"))
    result = FitResult(run_dir, best, best_epoch, len(history), stopped, time.perf_counter() - started, history)
    reporter.finished(result)
    return result


def write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})


def write_best_outputs(run_dir: Path, ev: Evaluation) -> None:
    with (run_dir / "frame_psnr.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "psnr", "ssim", "psnr_best_of_n", "baseline_psnr"])
        for i, row in enumerate(zip(ev.psnr_per_frame, ev.ssim_per_frame, ev.psnr_best_of_n_per_frame,
                                    ev.baseline_per_frame)):
            w.writerow([i + 1, *(f"{v:.4f}" for v in row)])
    if ev.predictions:
        write_gif(run_dir / "samples" / "best.gif", ev.truths, ev.predictions)
        write_strip(run_dir / "samples" / "best_strip.png", ev.truths, ev.predictions)


def read_frame_psnr(path: Path) -> dict[str, list[float]] | None:
    if not path.is_file():
        return None
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {"psnr": [float(r["psnr"]) for r in rows], "baseline": [float(r["baseline_psnr"]) for r in rows]}


class _progress:
    """tqdm bar over training steps; silent when train.progress is off."""

    def __init__(self, cfg: Config, total: int):
        self.bar = None
        if cfg.train.progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=cfg.name, unit="step", dynamic_ncols=True)

    def update_step(self, _i: int) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def epoch_done(self, epoch: int, row: dict) -> None:
        if self.bar is not None:
            post = {"epoch": epoch, "loss": f"{row['loss']:.4f}"}
            if "val_psnr" in row:
                post["val_psnr"] = f"{row['val_psnr']:.2f}"
            self.bar.set_postfix(post)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
