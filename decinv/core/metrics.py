"""Error measures used throughout the paper: NMSE (dB), PSNR, the cocoercivity ratio of Eq. 14, mean with 95% CI;
and `jacobian_extremes`, a local test of the monotonicity that cocoercivity needs."""

from __future__ import annotations

import math

import numpy as np
import torch


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(t.shape[0], -1).double()


def nmse(z_hat: torch.Tensor, z_true: torch.Tensor) -> torch.Tensor:
    """Per-sample normalised MSE ||z_hat - z*||^2 / ||z*||^2 (the paper's "noise reconstruction NMSE"), shape (B,)."""
    if z_hat.shape != z_true.shape:
        raise ValueError(f"shapes differ: {tuple(z_hat.shape)} vs {tuple(z_true.shape)}")
    a, b = _flat(z_hat), _flat(z_true.to(z_hat.device))
    return ((a - b) ** 2).sum(1) / (b**2).sum(1)


def nmse_db(z_hat: torch.Tensor, z_true: torch.Tensor) -> torch.Tensor:
    """Per-sample NMSE in decibels, 10 log10(NMSE). The paper averages these dB values over instances."""
    return 10 * torch.log10(nmse(z_hat, z_true))


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak ``data_range`` = 2); ``x`` is clamped first."""
    mse = ((_flat(x).clamp(-1, 1) - _flat(y.to(x.device))) ** 2).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def cocoercivity_ratio(points: torch.Tensor, ed_points: torch.Tensor, z_inf: torch.Tensor,
                       ed_inf: torch.Tensor) -> torch.Tensor:
    """Eq. 14 along a trajectory: <EDz_inf - EDz_k, z_inf - z_k> / ||EDz_inf - EDz_k||^2 for every k.

    ``points`` (K, B, ...) are the points where the operator was evaluated (z_k, or y_k for inertial KM),
    ``ed_points`` their E(D(.)) values, ``z_inf`` / ``ed_inf`` (B, ...) the reference limit (the paper: z_300).
    Since T = ED - E(x), passing T values instead of ED values gives the same ratio. Returns (K, B);
    the paper plots min_k per instance and calls the instance cocoercive when that minimum is > 0.
    """
    k, b = points.shape[:2]
    dz = (z_inf.unsqueeze(0) - points).reshape(k, b, -1).double()
    ded = (ed_inf.unsqueeze(0) - ed_points).reshape(k, b, -1).double()
    return (ded * dz).sum(-1) / (ded**2).sum(-1)


@torch.no_grad()
def jacobian_extremes(ed, z: torch.Tensor, iters: int = 60, eps: float = 1e-2, seed: int = 0
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest and leftmost Rayleigh quotients <Jv, v> / <v, v> of J = d E(D(z)) / dz at each latent of ``z``.

    ``ed``: z -> E(D(z)) (e.g. ``lambda z: model.encode(model.decode(z), check=False)``); ``z`` (B, C, h, w).
    Forward passes only: Jv is the finite difference (ED(z + eps v) - ED(z)) / eps (``eps`` in latent units). Power
    iteration on J finds the end of the spectrum with the largest magnitude, mu; power iteration on J - mu I then
    finds the eigenvalue farthest from it, the other end. Returns two tensors of shape (B,): ``top`` and
    ``leftmost``. Cost: 2 ``iters`` + 3 calls of ``ed``.

    Why it matters: near a zero z* of T(z) = E(D(z)) - E(x), T(z) ~ J (z - z*), so the forward step
    z <- z - rho T(z) moves the error by I - rho J. A direction with <Jv, v> < 0 (``leftmost`` < 0) grows for every
    rho > 0, so z* repels the iteration along it, and T is not monotone there, let alone beta-cocoercive
    (Eq. 14 needs <T(a) - T(b), a - b> >= beta ||T(a) - T(b)||^2 >= 0). That is the semi-convergence of an
    autoencoder whose iterations first approach z* and then drift away. J is not symmetric, so these are estimates
    (exact extreme eigenvalues when J is symmetric); a negative ``leftmost`` is still a certificate: it is attained
    by the returned direction.
    """
    if iters < 1 or eps <= 0:
        raise ValueError(f"iters must be >= 1 and eps > 0, got iters={iters}, eps={eps}.")
    base = ed(z)
    generator = torch.Generator().manual_seed(seed)

    def unit(v):
        return v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (v.dim() - 1)))

    def rayleigh(v, shift):
        w = (ed(z + eps * v) - base) / eps - shift.view(-1, *([1] * (v.dim() - 1))) * v
        return w, (w * v).flatten(1).sum(1) + shift

    def power(shift):
        v = unit(torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z))
        for _ in range(iters):
            v = unit(rayleigh(v, shift)[0])
        return rayleigh(v, shift)[1]  # the quotient of the final direction

    dominant = power(torch.zeros(z.shape[0]).to(z))  # the end of the spectrum with the largest |lambda|
    other = power(dominant)  # the eigenvalue farthest from it: the other end
    return torch.maximum(dominant, other), torch.minimum(dominant, other)


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (the tables' "mean ± CI").

    The paper does not state its CI formula; this is the textbook t-interval mean ± t_{(1+c)/2, n-1} s / sqrt(n).
    """
    from scipy import stats

    v = np.asarray(values, dtype=float).ravel()
    if v.size < 2:
        return float(v.mean()) if v.size else math.nan, math.nan
    half = stats.t.ppf((1 + confidence) / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    return float(v.mean()), float(half)
