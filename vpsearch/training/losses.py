"""KL divergence between diagonal Gaussians and the training loss."""

from __future__ import annotations

from torch import Tensor


def kl_gaussian(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor,
                reduction: str = "sum_batchmean") -> Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)).

    sum_batchmean: summed over every latent element, divided by the batch size (the labs).
    mean: averaged over every element. The two differ by the latent size (z_dim, or
    N*H*W for a spatial latent), which moves the useful beta by orders of magnitude.
    """
    mu_q, logvar_q, mu_p, logvar_p = (x.float() for x in (mu_q, logvar_q, mu_p, logvar_p))
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1)
    if reduction == "mean":
        return kl.mean()
    return kl.sum() / kl.shape[0]
