"""Inference from a checkpoint: evaluation JSON and streamed rollouts (GIFs, strips, submission).

Rollouts stream: each predicted frame goes to the GIF writer and the submission CSV as
it is made, so a 630-frame video costs the memory of one frame.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from vpsearch.config import Config
from vpsearch.data.base import DataError, VideoSet, to_uint8_video
from vpsearch.models.base import StepwiseCVAE
from vpsearch.training.engine import TimeSlices, evaluate
from vpsearch.training.visualize import CONTEXT, PREDICTION, TRUTH, GifStream, labelled_frame, strip_columns, write_strip

STRIP_FRAMES = 16


def open_for_inference(checkpoint: str | Path, device: torch.device, data_root: str | None = None,
                       split: str = "test") -> tuple[StepwiseCVAE, Config, VideoSet]:
    """The checkpoint's model and a split of its data (or of data_root), checked to fit each
    other before any frame is predicted (resume.check_format_fits / check_data_fits)."""
    from vpsearch.data import guess_format, load_split
    from vpsearch.data.builtin import resolve_root
    from vpsearch.training.checkpoint import model_from_checkpoint
    from vpsearch.training.resume import check_data_fits, check_format_fits
    from vpsearch.training.trainer import data_shape

    from vpsearch.training.precision import with_precision

    model, cfg, payload = model_from_checkpoint(checkpoint, device)
    cfg, _ = with_precision(cfg, device, inference=True)
    if data_root:
        cfg.data.root = str(data_root)
    root = resolve_root(cfg.data.root)
    check_format_fits(checkpoint, cfg, guess_format(root), str(root))
    name = {"train": cfg.data.train_split, "val": cfg.data.val_split, "validate": cfg.data.val_split,
            "test": cfg.data.test_split}.get(split, split)
    data = load_split(cfg.data, name)
    check_data_fits(checkpoint, payload, data_shape(data), f"{root}, split {name}")
    return model, cfg, data


def evaluation_json(model: StepwiseCVAE, cfg: Config, data: VideoSet, device: torch.device, samples: int,
                    horizon, max_sequences: int) -> dict:
    ev = evaluate(model, data, cfg, device, samples=samples, horizon=horizon, max_sequences=max_sequences)
    out = ev.summary()
    if cfg.data.n_past == 1:  # the only context frame is the first one
        out["baseline_copy_first_psnr"] = out["baseline_copy_last_psnr"]
    out["gain_db"] = ev.psnr - ev.baseline_copy_last_psnr
    # the first predicted frame: a model that repaints what it could copy loses here first
    out["first_frame"] = {"psnr": ev.psnr_per_frame[0], "baseline_psnr": ev.baseline_per_frame[0],
                          "gain_db": ev.psnr_per_frame[0] - ev.baseline_per_frame[0]}
    return out


def frame_table(result: dict, baseline: str, rows: int = 12) -> str:
    """Per-frame PSNR of the model (mean over samples) against the copying baseline, as text:
    every frame of a short horizon, else frames 1, 2, 3 and then spaced out to the last."""
    model, base = result["psnr_per_frame"], result["baseline_per_frame"]
    n = len(model)
    picks = list(range(n)) if n <= rows else sorted(
        {0, 1, 2, n - 1, *np.geomspace(4, n, rows - 4).round().astype(int) - 1})
    lines = [f"{'frame':>6} {'model':>7} {baseline:>10} {'gain':>7}"]
    for k in picks:
        lines.append(f"{k + 1:>6} {model[k]:7.2f} {base[k]:10.2f} {model[k] - base[k]:+7.2f}")
    lines.append(f"{'mean':>6} {result['psnr']:7.2f} {result['baseline_copy_last_psnr']:10.2f} "
                 f"{result['gain_db']:+7.2f}  (PSNR dB, mean of {result['samples']} sample(s), "
                 f"{result['n_sequences']} sequence(s))")
    return "\n".join(lines)


class SubmissionWriter:
    """Kaggle-style CSV: id, then 3*H*W columns; each frame flattened channel-major
    (index c*H*W + h*W + w), values round(x*255) of the frame clamped to [0, 1]."""

    def __init__(self, path: Path, channels: int, height: int, width: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["id", *range(channels * height * width)])
        self.next_id = 0

    def add(self, frame: torch.Tensor) -> None:
        """frame (C, H, W) float."""
        values = frame.float().clamp(0, 1).mul(255).round().to(torch.int64).flatten().tolist()
        self.writer.writerow([self.next_id, *values])
        self.next_id += 1

    def close(self) -> None:
        self.file.close()


@torch.no_grad()
def rollout_to_files(model: StepwiseCVAE, cfg: Config, data: VideoSet, device: torch.device, out_dir: Path,
                     horizon, n_sequences: int | None, submission: Path | None = None,
                     given_frames: list[int] | None = None) -> list[dict]:
    """Roll out each sequence from its context; write <name>.gif and <name>_strip.png.

    given_frames[i]: how many true frames sequence i really has (dance test videos hold only
    the first); the truth column is shown only where it exists.
    """
    model.eval()
    n_past = cfg.data.n_past
    count = len(data) if n_sequences is None else min(n_sequences, len(data))
    if count == 0:
        raise DataError("predict: the split holds no sequence to roll out")
    out_dir.mkdir(parents=True, exist_ok=True)
    sub = SubmissionWriter(submission, *_chw(data)) if submission else None
    written = []
    try:
        for i in range(count):
            length = int(data.lengths[i])
            h = length - n_past if horizon == "all" else int(horizon or cfg.data.n_future)
            if h < 1 or n_past + h > length:
                raise DataError(f"predict: sequence {data.names[i]} has {length} frames, needs {n_past + h}")
            win = np.array([[i, 0]])
            context = data.batch(win, n_past)["frames"].to(device)
            cond = TimeSlices(data, win, "cond", device) if data.cond is not None else None
            truth = TimeSlices(data, win, "frames", device)
            have_truth = length if given_frames is None else given_frames[i]
            name = data.names[i].replace("/", "_")
            gif = GifStream(out_dir / f"{name}.gif", fps=12)
            ctx = to_uint8_video(context[0])  # (n_past, H, W, C)
            scale, total = max(1, 128 // ctx.shape[1]), n_past + h
            for t in range(n_past):
                gif.add(labelled_frame([ctx[t]], [ctx[t]], f"frame {t + 1}/{total}: context (given)",
                                       (CONTEXT, CONTEXT), scale))
            strip_t, strip_p, sides = [], [], set()
            keep_at = set(strip_columns(h, STRIP_FRAMES).tolist())
            if sub:
                for t in range(n_past):
                    sub.add(context[0, t])
            for k, x_hat in enumerate(model.generate(context, cond, h)):
                pred = to_uint8_video(x_hat[0])
                t_idx = n_past + k
                # beside the prediction: the true frame where the split has it, else the pose label
                side, side_label = ((to_uint8_video(truth[t_idx][0]), TRUTH) if t_idx < have_truth else
                                    (to_uint8_video(cond[t_idx][0]), "pose (condition)") if data.cond_kind == "image"
                                    else (np.zeros_like(pred), "no ground truth"))
                gif.add(labelled_frame([side], [pred], f"frame {t_idx + 1}/{total}: predicted {k + 1}/{h}",
                                       (side_label, PREDICTION), scale))
                if k in keep_at:
                    strip_t.append(side)
                    strip_p.append(pred)
                    sides.add(side_label)
                if sub:
                    sub.add(x_hat[0])
            gif.close()
            write_strip(out_dir / f"{name}_strip.png", [np.stack(strip_t)], [np.stack(strip_p)], [ctx],
                        frame_numbers=[n_past + k + 1 for k in sorted(keep_at)],
                        truth_label="truth / pose" if len(sides) > 1 else sides.pop())
            written.append({"sequence": data.names[i], "frames": h, "gif": str(out_dir / f"{name}.gif")})
    finally:
        if sub:
            sub.close()
    return written


def _chw(data: VideoSet) -> tuple[int, int, int]:
    h, w, c = data.frame_shape
    return c, h, w
