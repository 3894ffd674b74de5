"""Frame metrics, per sample: PSNR and SSIM of (N, C, H, W) tensors in [0, 1].

PSNR is computed per sample and then averaged by the caller (the lab template took one
MSE over the whole batch). Identical frames have infinite PSNR: capped at PSNR_CAP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_CAP = 100.0  # dB, reported for identical frames (MSE = 0)


def _no_autocast(fn):
    """Metrics run in fp32 even when called inside a bf16/fp16 autocast region."""
    def wrapper(pred: Tensor, target: Tensor, *args, **kwargs) -> Tensor:
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return fn(pred, target, *args, **kwargs)
    wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
    return wrapper


@_no_autocast
def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """(N, C, H, W) x2 -> (N,) PSNR in dB with peak 1.0, capped at PSNR_CAP."""
    mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    out = 10 * torch.log10(1.0 / mse.clamp_min(1e-30))
    return out.clamp(max=PSNR_CAP)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


@_no_autocast
def ssim(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """(N, C, H, W) x2 -> (N,) mean SSIM (Wang et al. 2004, Gaussian 11x11, sigma 1.5).

    Computed over 'valid' windows; frames smaller than the window use a window of
    their smaller side (odd).
    """
    pred, target = pred.float(), target.float()
    c = pred.shape[1]
    size = min(window, min(pred.shape[-2:]) // 2 * 2 - 1)
    w = _gaussian_window(size, sigma, c, pred.device, pred.dtype)
    conv = lambda x: F.conv2d(x, w, groups=c)  # noqa: E731
    mu_x, mu_y = conv(pred), conv(target)
    sxx = conv(pred * pred) - mu_x ** 2
    syy = conv(target * target) - mu_y ** 2
    sxy = conv(pred * target) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
