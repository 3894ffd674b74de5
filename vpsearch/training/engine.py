"""One training epoch and one evaluation, every input passed explicitly."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from vpsearch.config import Config
from vpsearch.data.augment import augment, draw_gaps
from vpsearch.data.base import DataError, VideoSet, to_uint8_video
from vpsearch.errors import VpsearchError
from vpsearch.models.base import StepwiseCVAE
from vpsearch.models.compose import recording_flow
from vpsearch.training.device import autocast
from vpsearch.training.losses import kl_gaussian
from vpsearch.training.metrics import psnr, ssim
from vpsearch.schedules import KLAnnealing, LearningRate, TeacherForcing
from vpsearch.training.step_log import StepLog, read_every


class NonFiniteLossError(VpsearchError, RuntimeError):
    """Loss or gradient became NaN/inf; the message says where and which term."""


@dataclass
class StepContext:
    """What a training step needs besides the batch."""

    model: StepwiseCVAE
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    cfg: Config
    device: torch.device
    generator: torch.Generator  # teacher-forcing and augmentation coins; saved in checkpoints
    tf: TeacherForcing
    kl: KLAnnealing
    lr: LearningRate


def sequence_loss(preds: Tensor, frames: Tensor, stats, beta: float, reduction: str) -> tuple[Tensor, Tensor, Tensor]:
    """Sum over predicted steps of MSE_t (mean over batch and pixels) + beta * KL_t."""
    mse = (preds.float() - frames[:, 1:].float()).pow(2).mean(dim=(0, 2, 3, 4)).sum()
    kl = torch.stack([kl_gaussian(g.mu_q, g.logvar_q, g.mu_p, g.logvar_p, reduction) for g in stats]).sum()
    return mse + beta * kl, mse, kl


def train_epoch(ctx: StepContext, data: VideoSet, windows: np.ndarray, batches: list[np.ndarray],
                epoch: int, on_step: Callable[[int], None] | None = None,
                length: int | None = None) -> dict[str, float]:
    """length: frames per window (default data.window; shorter for a split of short videos)."""
    cfg, model, opt = ctx.cfg, ctx.model, ctx.optimizer
    model.train()
    length, n_past = length or cfg.data.window, cfg.data.n_past
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = cfg.optim.grad_clip or float("inf")
    penalty = cfg.loss.flow_penalty  # > 0: the warping head records each step's flow size
    log = StepLog(4, read_every(ctx.device), lambda v, step: check_finite(v, epoch, step, ctx.scaler.is_enabled()))
    # schedules as the epoch's mean over its steps: a cyclical KL weight counted per iteration rises
    # and falls within an epoch, and its last step alone (flat 1.0 in MLflow) said nothing of it
    frames_seen, beta_sum, weight_sum, tfr_sum = 0, 0.0, 0.0, 0.0
    start = time.perf_counter()
    for i, idx in enumerate(batches):
        gaps = draw_gaps(windows[idx], cfg.data.anchor_gap, ctx.generator)
        batch = augment(data.batch(windows[idx], length, gaps, n_past), cfg.data, ctx.generator)
        frames = batch["frames"].to(ctx.device, non_blocking=True)
        cond = batch.get("cond")
        cond = cond.to(ctx.device, non_blocking=True) if cond is not None else None
        for group in opt.param_groups:
            group["lr"] = ctx.lr.at(epoch, i, len(batches))
        tfr = ctx.tf.at(epoch, i, len(batches))
        teacher = ctx.tf.mask(tfr, frames.shape[0], length, ctx.generator)  # CPU: the model branches on it
        weight = ctx.kl.at(epoch, i, len(batches))
        beta = cfg.loss.beta * weight
        beta_sum, weight_sum, tfr_sum = beta_sum + beta, weight_sum + weight, tfr_sum + tfr
        with autocast(ctx.device, cfg.train.amp), recording_flow(model) if penalty else nullcontext() as flow:
            preds, stats = model(frames, cond, n_past, teacher, cfg.schedule.detach_predictions)
        loss, mse, kl = sequence_loss(preds, frames, stats, beta, cfg.loss.kl_reduction)
        if flow:
            loss = loss + penalty * torch.stack(flow).sum()
        opt.zero_grad(set_to_none=True)
        ctx.scaler.scale(loss).backward()
        ctx.scaler.unscale_(opt)
        gnorm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        log.add(torch.stack([loss.detach(), mse.detach(), kl.detach(), gnorm.detach().float()]))
        ctx.scaler.step(opt)
        ctx.scaler.update()
        frames_seen += frames.shape[0] * (length - 1)
        if on_step:
            on_step(i)
    rows = log.rows()  # the epoch's last read, so the time below includes its queued GPU work
    n = max(1, len(batches))
    seconds = time.perf_counter() - start
    loss, mse, kl, gnorm = (float(x) for x in rows.sum(0))  # plain floats: checkpoints hold no numpy
    gnorm_max = float(rows[:, 3].max()) if len(rows) else 0.0
    return {"loss": loss / n, "mse": mse / n, "kl": kl / n, "grad_norm": gnorm / n, "grad_norm_max": gnorm_max,
            "kl_beta": beta_sum / n, "kl_weight": weight_sum / n, "tfr": tfr_sum / n, "train_seconds": seconds,
            "frames_per_second": frames_seen / seconds}


def check_finite(values: list[float], epoch: int, step: int, fp16: bool) -> None:
    loss, mse, kl, gnorm = values
    terms = {"mse": mse, "kl": kl, "loss": loss}
    bad = [k for k, v in terms.items() if not np.isfinite(v)]
    if bad:
        raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step}: "
                                 + ", ".join(f"{k}={terms[k]}" for k in bad)
                                 + f" (mse={mse:.4g}, kl={kl:.4g}); lower optim.lr or set optim.grad_clip")
    if not np.isfinite(gnorm) and not fp16:  # fp16's scaler skips such steps by design
        raise NonFiniteLossError(f"non-finite gradient norm at epoch {epoch}, step {step} "
                                 f"(loss={loss:.4g}); lower optim.lr or set optim.grad_clip")


class TimeSlices:
    """Frames at time t of a batch of windows, read from the split lazily (memory flat)."""

    def __init__(self, data: VideoSet, windows: np.ndarray, key: str, device: torch.device, repeat: int = 1):
        self.data, self.windows, self.key, self.device, self.repeat = data, windows, key, device, repeat

    def __getitem__(self, t: int) -> Tensor:
        w = self.windows.copy()
        w[:, 1] += t
        x = self.data.batch(w, 1)[self.key][:, 0].to(self.device)
        return x.repeat(self.repeat, *([1] * (x.dim() - 1)))


@dataclass
class Evaluation:
    psnr: float
    ssim: float
    psnr_best_of_n: float
    ssim_best_of_n: float
    baseline_copy_last_psnr: float
    psnr_per_frame: list[float]
    ssim_per_frame: list[float]
    psnr_best_of_n_per_frame: list[float]
    baseline_per_frame: list[float]
    n_sequences: int
    samples: int
    horizon: int
    # first sequences, sample 0: predicted and true future frames, (S, T, H, W, C) uint8, and
    # the context frames they were rolled out from, (S, n_past, H, W, C): the pictures show all three
    predictions: list[np.ndarray] = field(default_factory=list, repr=False)
    truths: list[np.ndarray] = field(default_factory=list, repr=False)
    contexts: list[np.ndarray] = field(default_factory=list, repr=False)
    seconds: float = 0.0

    def summary(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("predictions", "truths", "contexts")}
        d["psnr_reduction"] = f"mean over {self.samples} sample(s); best_of_n picks each sequence's best sample"
        return d


def evaluation_plan(data: VideoSet, cfg: Config, horizon: int | str | None,
                    max_sequences: int) -> list[tuple[int, int, int]]:
    """(sequence, first frame, frames to predict) for each validation window, in order.

    A fixed horizon takes up to eval.windows_per_video consecutive non-overlapping stretches of
    each video (n_past + horizon frames each); max_sequences caps the windows in all.
    """
    n_past = cfg.data.n_past
    h = cfg.data.n_future if horizon is None else horizon
    per_video = 1 if h == "all" else cfg.eval.windows_per_video
    plan = []
    for i in range(len(data)):
        avail = data.known_frames(i) - n_past
        want = avail if h == "all" else int(h)
        if want <= 0:
            continue
        for w in range(min(per_video, avail // want)):
            if len(plan) < max_sequences:
                plan.append((i, w * (n_past + want), want))
    if not plan:
        if data.truth_frames is not None and max(data.truth_frames) <= n_past:
            raise DataError("the split holds no true frames after the context (the real dance test set "
                             "gives only the first frame): score it on val, or roll it out with vpsearch predict")
        raise DataError(f"no evaluation sequence is long enough for n_past={n_past} + horizon {h}")
    return plan


@torch.no_grad()
def evaluate(model: StepwiseCVAE, data: VideoSet, cfg: Config, device: torch.device, *,
             samples: int = 1, horizon: int | str | None = None, max_sequences: int = 64,
             keep: int = 0, on_batch: Callable[[int, int], None] | None = None) -> Evaluation:
    """Roll out from the context frames with z from the prior; PSNR/SSIM per frame per sample.

    BatchNorm runs in eval mode. N samples per sequence run as one batch; the reported
    psnr is the mean over samples, psnr_best_of_n takes each sequence's best sample (by
    its mean PSNR over frames). keep: how many sequences' frames (context, truth, sample 0's
    prediction) to return for pictures. on_batch(done, total) after each batch (progress).
    z comes from the caller's random stream: wrap the call in device.own_random_stream to score
    on draws of its own.
    """
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    n_past = cfg.data.n_past
    plan = evaluation_plan(data, cfg, horizon, max_sequences)
    groups: dict[int, list[tuple[int, int]]] = {}
    for seq, first, h in plan:
        groups.setdefault(h, []).append((seq, first))
    max_h = max(groups)
    sums = {k: np.zeros(max_h) for k in ("psnr", "ssim", "best", "base")}
    counts = np.zeros(max_h)
    seq_psnr, seq_ssim, seq_best, seq_best_ssim = [], [], [], []
    predictions, truths, contexts = [], [], []
    n_batches, done = sum(-(-len(s) // cfg.eval.batch_size) for s in groups.values()), 0
    if on_batch:
        on_batch(0, n_batches)
    for h, seqs in groups.items():
        for b0 in range(0, len(seqs), cfg.eval.batch_size):
            windows = np.array(seqs[b0:b0 + cfg.eval.batch_size], dtype=np.int64)
            b = len(windows)
            batch = data.batch(windows, n_past)
            context = batch["frames"].to(device).repeat(samples, 1, 1, 1, 1)
            cond = TimeSlices(data, windows, "cond", device, samples) if data.cond is not None else None
            truth_at = TimeSlices(data, windows, "frames", device)
            last = batch["frames"][:, -1].to(device)
            p_all, s_all = np.zeros((h, samples, b)), np.zeros((h, samples, b))
            n_keep = max(0, min(keep - len(predictions), b))
            kept_pred = [[] for _ in range(n_keep)]
            kept_true = [[] for _ in range(n_keep)]
            with autocast(device, cfg.train.amp):
                for k, x_hat in enumerate(model.generate(context, cond, h)):
                    truth = truth_at[n_past + k]
                    rep = truth.repeat(samples, 1, 1, 1)
                    x_hat = x_hat.float().clamp(0, 1)
                    p_all[k] = psnr(x_hat, rep).view(samples, b).cpu().numpy()
                    s_all[k] = ssim(x_hat, rep).view(samples, b).cpu().numpy()
                    sums["base"][k] += psnr(last, truth).sum().item()
                    for j in range(n_keep):
                        kept_pred[j].append(to_uint8_video(x_hat[j]))
                        kept_true[j].append(to_uint8_video(truth[j]))
            predictions += [np.stack(x) for x in kept_pred]
            truths += [np.stack(x) for x in kept_true]
            contexts += [to_uint8_video(batch["frames"][j]) for j in range(n_keep)]
            done += 1
            if on_batch:
                on_batch(done, n_batches)
            best = p_all.mean(0).argmax(0)  # (b,) best sample per sequence
            cols = np.arange(b)
            sums["psnr"][:h] += p_all.mean(1).sum(1)
            sums["ssim"][:h] += s_all.mean(1).sum(1)
            sums["best"][:h] += p_all[:, best, cols].sum(1)
            counts[:h] += b
            seq_psnr += list(p_all.mean((0, 1)))
            seq_ssim += list(s_all.mean((0, 1)))
            seq_best += list(p_all[:, best, cols].mean(0))
            seq_best_ssim += list(s_all[:, best, cols].mean(0))
    model.train(was_training)
    per = {k: (v / np.maximum(counts, 1)).tolist() for k, v in sums.items()}
    return Evaluation(
        psnr=float(np.mean(seq_psnr)), ssim=float(np.mean(seq_ssim)),
        psnr_best_of_n=float(np.mean(seq_best)), ssim_best_of_n=float(np.mean(seq_best_ssim)),
        baseline_copy_last_psnr=float(np.sum(sums["base"]) / np.sum(counts)),
        psnr_per_frame=per["psnr"], ssim_per_frame=per["ssim"],
        psnr_best_of_n_per_frame=per["best"], baseline_per_frame=per["base"],
        n_sequences=len(plan), samples=samples, horizon=max_h,
        predictions=predictions, truths=truths, contexts=contexts, seconds=time.perf_counter() - start)

