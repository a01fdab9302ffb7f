"""Error measures used throughout the paper: NMSE (dB), PSNR, the cocoercivity ratio of Eq. 14, mean with 95% CI."""

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
