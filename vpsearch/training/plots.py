"""PNG plots of a run's curves: curves.png, schedules.png, frame_psnr.png (matplotlib, no display).

Each figure is built by its own function (tests read the axes) and written by plot_run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from vpsearch.training.history import BY_KEY


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _epochs_axis(a, epochs: list[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    a.set_xlabel("epoch")
    a.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    a.set_xlim(min(epochs) - 0.3, max(epochs) + 0.3)  # the same epochs on every panel


def curves_figure(history: list[dict[str, float]]):
    """Loss, MSE, KL and validation PSNR (with the copy-last baseline) per epoch, a panel each:
    loss = MSE + beta KL is nearly the MSE while beta is small, so on one panel the two would
    hide one behind the other."""
    plt = _pyplot()
    ep = [int(h["epoch"]) for h in history]
    col = lambda k: [h.get(k, np.nan) for h in history]  # noqa: E731
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.4))
    ax[0].plot(ep, col("loss"), "o-", color="tab:blue", label="loss = MSE + beta KL")
    ax[1].plot(ep, col("mse"), "s-", color="tab:orange", label="MSE")
    ax[2].plot(ep, col("kl"), "^-", color="tab:red", label="KL")
    evaluated = [(e, h) for e, h in zip(ep, history) if _finite(h.get("val_psnr"))]
    ax[3].plot([e for e, _ in evaluated], [h["val_psnr"] for _, h in evaluated], "o-", color="tab:green",
               label="model")
    base = [(e, h["baseline_psnr"]) for e, h in evaluated if _finite(h.get("baseline_psnr"))]
    if base:
        ax[3].plot([e for e, _ in base], [v for _, v in base], "--", color="gray", label="copy last context frame")
    titles = ("training loss (MSE + beta KL)", "MSE (summed over predicted frames)",
              "KL (summed over predicted frames)", "validation PSNR (dB)")
    for a, title in zip(ax, titles):
        a.set_title(title, fontsize=10)
        _epochs_axis(a, ep)
        a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def schedules_figure(history: list[dict[str, float]]):
    """KL annealing weight, teacher-forcing ratio and lr per epoch (small values in 10^k notation)."""
    plt = _pyplot()
    ep = [int(h["epoch"]) for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.4))
    kl = "kl_weight" if any("kl_weight" in h for h in history) else "kl_beta"  # runs from before kl_weight
    for a, key in zip(ax, (kl, "tfr", "lr")):
        a.plot(ep, [h.get(key, np.nan) for h in history], "o-", ms=3)
        a.set_title(BY_KEY[key].label)
        _epochs_axis(a, ep)
        a.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3), useOffset=False)  # 1e-3 as 1.0 x 10^-3
    fig.tight_layout()
    return fig


def frame_psnr_figure(frame_psnr: dict[str, list[float]]):
    """Per-frame PSNR of the best evaluation against copy-last; x = predicted frame (1 = the first
    frame after the context)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
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
    return fig


def plot_run(out_dir: Path, history: list[dict[str, float]], frame_psnr: dict[str, list[float]] | None) -> list[Path]:
    """curves.png, schedules.png and frame_psnr.png of a run (those its data supports)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if history:
        written.append(_save(curves_figure(history), out_dir / "curves.png"))
        written.append(_save(schedules_figure(history), out_dir / "schedules.png"))
    if frame_psnr:
        written.append(_save(frame_psnr_figure(frame_psnr), out_dir / "frame_psnr.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path
