"""Pictures of a run: GIF and strip of prediction vs truth, PNG plots of the curves."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

STRIP_MAX_STEPS = 16


def _upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2) if factor > 1 else frames


def _scale_for(h: int) -> int:
    return max(1, 128 // h)


class GifStream:
    """Animated GIF written frame by frame: memory stays flat however long the video.

    Pillow (and imageio) keep every frame until the file is closed. Here each frame is
    encoded alone by Pillow and its image block is appended to the open file with its
    own (local) palette and a frame delay, so only the current frame is ever held.
    """

    def __init__(self, path: Path, fps: float = 8.0, scale: int = 1):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("wb")
        self.delay = max(2, round(100 / fps))  # GIF delays are in 1/100 s
        self.scale = scale
        self.size: tuple[int, int] | None = None

    def add(self, frame: np.ndarray) -> None:
        """frame (H, W, 3) uint8."""
        from PIL import Image

        frame = _upscale(frame, self.scale)
        h, w = frame.shape[:2]
        buf = io.BytesIO()
        Image.fromarray(frame).quantize(256, dither=Image.Dither.NONE).save(buf, "GIF")
        data = buf.getvalue()
        flags = data[10]
        palette_len = 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0
        palette = data[13:13 + palette_len]
        pos = 13 + palette_len
        while data[pos] == 0x21:  # skip Pillow's own extensions
            pos += 2
            while data[pos]:
                pos += data[pos] + 1
            pos += 1
        if self.size is None:
            self.size = (w, h)
            loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
            self.file.write(b"GIF89a" + struct.pack("<HHBBB", w, h, 0x70, 0, 0) + loop)
        descriptor = bytearray(data[pos:pos + 10])
        if palette_len:  # the frame's palette becomes its local colour table
            descriptor[9] = (descriptor[9] & 0x40) | 0x80 | (flags & 7)
        control = b"\x21\xf9\x04\x00" + struct.pack("<H", self.delay) + b"\x00\x00"
        self.file.write(control + bytes(descriptor) + palette + data[pos + 10:-1])

    def close(self) -> None:
        self.file.write(b"\x3b")
        self.file.close()


def write_gif(path: Path, truths: Sequence[np.ndarray], preds: Sequence[np.ndarray], fps: int = 8) -> Path:
    """Animated GIF: one row per sequence, truth on the left, prediction on the right.

    truths/preds: lists of (T, H, W, C) uint8 with matching T.
    """
    rows = []
    for t, p in zip(truths, preds):
        gap = np.full((t.shape[0], t.shape[1], 2, 3), 255, np.uint8)
        rows.append(np.concatenate([t, gap, p], axis=2))
    width_gap = np.full((rows[0].shape[0], 2, rows[0].shape[2], 3), 255, np.uint8)
    stacked = np.concatenate([x for r in rows for x in (r, width_gap)][:-1], axis=1)
    gif = GifStream(path, fps, _scale_for(truths[0].shape[1]))
    for frame in stacked:
        gif.add(frame)
    gif.close()
    return path


def write_strip(path: Path, truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> Path:
    """PNG: for each sequence a truth row over a prediction row, time left to right
    (long videos are subsampled to STRIP_MAX_STEPS columns)."""
    from PIL import Image

    n = truths[0].shape[0]
    cols = np.unique(np.linspace(0, n - 1, min(n, STRIP_MAX_STEPS)).round().astype(int))
    blocks = []
    for t, p in zip(truths, preds):
        for seq in (t, p):
            blocks.append(np.concatenate(list(seq[cols]), axis=1))
        blocks.append(np.full((2, blocks[-1].shape[1], 3), 255, np.uint8))
    img = _upscale(np.concatenate(blocks[:-1], axis=0), _scale_for(truths[0].shape[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def plot_run(out_dir: Path, history: list[dict[str, float]], frame_psnr: dict[str, list[float]] | None) -> list[Path]:
    """curves.png (loss, KL, PSNR), schedules.png (KL weight, teacher forcing, lr),
    frame_psnr.png (per-frame PSNR of the best evaluation vs copy-last)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if history:
        ep = [h["epoch"] for h in history]
        col = lambda k: [h.get(k, np.nan) for h in history]  # noqa: E731
        fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
        ax[0].plot(ep, col("loss"), label="loss")
        ax[0].plot(ep, col("mse"), label="mse (sum over steps)")
        ax[0].set_yscale("log")
        ax[1].plot(ep, col("kl"), color="tab:red", label="KL")
        ax[2].plot(ep, col("val_psnr"), "o-", color="tab:green", label="val PSNR")
        for a, title in zip(ax, ("training loss", "KL", "validation PSNR (dB)")):
            a.set_title(title)
            a.set_xlabel("epoch")
            a.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "curves.png"))
        fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
        for a, key, title in zip(ax, ("kl_beta", "tfr", "lr"), ("KL weight beta", "teacher-forcing ratio", "lr")):
            a.plot(ep, col(key), "o-", ms=3)
            a.set_title(title)
            a.set_xlabel("epoch")
        fig.tight_layout()
        written.append(_save(fig, out_dir / "schedules.png"))
    if frame_psnr:
        fig, ax = plt.subplots(figsize=(7, 3.4))
        x = np.arange(1, len(frame_psnr["psnr"]) + 1)
        ax.plot(x, frame_psnr["psnr"], label="model (mean of samples)")
        if "baseline" in frame_psnr:
            ax.plot(x, frame_psnr["baseline"], "--", color="gray", label="copy last context frame")
        ax.set_xlabel("predicted frame")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title("per-frame PSNR")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "frame_psnr.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
