"""PNG plots of a run's curves: curves.png, schedules.png, frame_psnr.png (matplotlib, no display)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vpsearch.training.history import BY_KEY


def plot_run(out_dir: Path, history: list[dict[str, float]], frame_psnr: dict[str, list[float]] | None) -> list[Path]:
    """curves.png (loss and MSE, KL, validation PSNR against the copy-last baseline),
    schedules.png (KL weight, teacher forcing, lr), frame_psnr.png (per-frame PSNR of the
    best evaluation vs copy-last)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if history:
        ep = [h["epoch"] for h in history]
        col = lambda k: [h.get(k, np.nan) for h in history]  # noqa: E731

        def epochs_axis(a) -> None:
            a.set_xlabel("epoch")
            a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
            if len(ep) == 1:
                a.set_xlim(ep[0] - 1, ep[0] + 1)

        fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
        # loss = MSE + beta KL: near each other while beta is small, so told apart by style too
        ax[0].plot(ep, col("loss"), "o-", color="tab:blue", lw=2, label="loss (MSE + beta KL)")
        ax[0].plot(ep, col("mse"), "s--", color="tab:orange", lw=1.5, mfc="none", label="MSE")
        ax[0].set_yscale("log")
        ax[1].plot(ep, col("kl"), "o-", color="tab:red", label="KL")
        evaluated = [(e, h) for e, h in zip(ep, history) if _finite(h.get("val_psnr"))]
        xs = [e for e, _ in evaluated]
        ax[2].plot(xs, [h["val_psnr"] for _, h in evaluated], "o-", color="tab:green", label="model (val PSNR)")
        base = [(e, h["baseline_psnr"]) for e, h in evaluated if _finite(h.get("baseline_psnr"))]
        if base:
            ax[2].plot([e for e, _ in base], [v for _, v in base], "--", color="gray",
                       label="copy last context frame")
        for a, title in zip(ax, ("training loss", "KL (summed over predicted steps)", "validation PSNR (dB)")):
            a.set_title(title)
            epochs_axis(a)
            a.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "curves.png"))

        fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
        for a, key in zip(ax, ("kl_beta", "tfr", "lr")):
            a.plot(ep, col(key), "o-", ms=3)
            a.set_title(BY_KEY[key].label)
            epochs_axis(a)
        ax[2].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))  # 1e-3 shown as 1.0 x 10^-3, not 0.00
        fig.tight_layout()
        written.append(_save(fig, out_dir / "schedules.png"))
    if frame_psnr:
        fig, ax = plt.subplots(figsize=(7, 3.4))
        x = np.arange(1, len(frame_psnr["psnr"]) + 1)
        ax.plot(x, frame_psnr["psnr"], "o-", ms=3, label="model (mean of samples)")
        if "baseline" in frame_psnr:
            ax.plot(x, frame_psnr["baseline"], "--", color="gray", label="copy last context frame")
        ax.set_xlabel("predicted frame (1 = first frame after the context)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("PSNR (dB)")
        ax.set_title("per-frame PSNR at the best epoch")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "frame_psnr.png"))
    return written


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
