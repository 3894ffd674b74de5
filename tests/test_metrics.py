import math

import pytest
import torch

from vpsearch.training.losses import kl_gaussian
from vpsearch.training.metrics import PSNR_CAP, psnr, ssim


def test_psnr_known_values():
    a = torch.zeros(2, 3, 8, 8)
    b = torch.full((2, 3, 8, 8), 0.1)  # MSE 0.01 -> 20 dB
    assert psnr(a, b).tolist() == pytest.approx([20.0, 20.0])
    c = a.clone()
    c[1] = 0.01  # second sample MSE 1e-4 -> 40 dB: per sample, not one batch MSE
    assert psnr(c, torch.zeros_like(c)).tolist() == pytest.approx([PSNR_CAP, 40.0])


def test_psnr_identical_frames_is_capped_not_inf():
    x = torch.rand(3, 3, 16, 16)
    out = psnr(x, x)
    assert torch.isfinite(out).all() and out.tolist() == [PSNR_CAP] * 3


def reference_ssim(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> list[float]:
    """Wang et al. 2004 window by window in float64 numpy: weighted means, variances and the
    covariance at every valid position of each channel, averaged (an independent reference:
    no convolution, no grouping)."""
    import numpy as np

    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for a, b in zip(x.double().numpy(), y.double().numpy()):
        values = []
        for ca, cb in zip(a, b):
            for i in range(ca.shape[0] - size + 1):
                for j in range(ca.shape[1] - size + 1):
                    pa, pb = ca[i:i + size, j:j + size], cb[i:i + size, j:j + size]
                    ma, mb = (w * pa).sum(), (w * pb).sum()
                    va, vb = (w * pa * pa).sum() - ma ** 2, (w * pb * pb).sum() - mb ** 2
                    cov = (w * pa * pb).sum() - ma * mb
                    values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
        out.append(float(np.mean(values)))
    return out


def test_ssim_identical_and_different():
    x = torch.rand(2, 3, 32, 64)
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    assert ssim(x, noisy).tolist() == pytest.approx(reference_ssim(x, noisy), abs=1e-5)
    # constant images: SSIM reduces to the luminance term (2ab+c1)/(a^2+b^2+c1)
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01 ** 2
    assert ssim(a, b).item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1), rel=1e-4)


def test_kl_closed_form():
    # KL(N(1, e^0) || N(0, 1)) = 0.5 per element
    mu_q, lv_q = torch.ones(4, 8), torch.zeros(4, 8)
    mu_p, lv_p = torch.zeros(4, 8), torch.zeros(4, 8)
    assert kl_gaussian(mu_q, lv_q, mu_p, lv_p, "sum_batchmean").item() == pytest.approx(0.5 * 8)
    assert kl_gaussian(mu_q, lv_q, mu_p, lv_p, "mean").item() == pytest.approx(0.5)
    # general: sigma_q=2, sigma_p=1, mu diff 0 -> log(1/2) + 4/2 - 1/2
    lv = torch.full((1, 1), math.log(4.0))
    expected = math.log(0.5) + 2.0 - 0.5
    assert kl_gaussian(torch.zeros(1, 1), lv, torch.zeros(1, 1), torch.zeros(1, 1)).item() == pytest.approx(expected)
    assert kl_gaussian(mu_p, lv_p, mu_p, lv_p).item() == 0.0


def test_metrics_stay_fp32_under_autocast():
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p, s = psnr(x, y), ssim(x, y)
    assert p.dtype == torch.float32 and s.dtype == torch.float32
    assert s.tolist() == pytest.approx(ssim(x, y).tolist())
