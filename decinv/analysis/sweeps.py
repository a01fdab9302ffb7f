"""Small helpers for the step-size chapters: Theorem 2's region (13) and reading residual traces.

Used by the chapter on the forward step and inertial KM (notebooks/03_fsm_km.md); the solvers themselves are in
`decinv.core.solvers`.
"""

from __future__ import annotations

import numpy as np


def lambda_max(alpha):
    """Largest lambda allowed by Theorem 2's condition (13) at momentum alpha in [0, 1):

        lambda (1 - alpha + 2 alpha^2) < (1 - alpha)^2   <=>   lambda < (1 - alpha)^2 / (1 - alpha + 2 alpha^2).

    At alpha = 0 the bound is 1 (rho = 2 lambda beta < 2 beta: Theorem 1); at the paper's alpha = 0.9 it is 0.0058.
    Works on floats and on numpy arrays alike (a curve over a grid of alpha)."""
    return (1 - alpha) ** 2 / (1 - alpha + 2 * alpha**2)


def alpha_max(lam: float, tol: float = 1e-10) -> float:
    """Largest momentum alpha in [0, 1) that condition (13) allows at step lambda = rho / (2 beta).

    `lambda_max` decreases in alpha, so this is its inverse, found by bisection to ``tol``; 0.0 when lambda >= 1
    (not even the plain forward step's Theorem 1 holds there)."""
    if lam >= 1:
        return 0.0
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if lam < lambda_max(mid) else (lo, mid)
    return lo


def iterations_to(residual: np.ndarray, level: float) -> np.ndarray:
    """Per instance, the first iteration k with ||T(p_k)|| <= level * ||T(p_0)||, NaN where it never happens.

    ``residual`` is a run's (K, B) trace (`InversionResult.trace.residual`: row k is ||T|| where the method
    evaluated T at iteration k, one column per image); returns a (B,) float array of iteration indices."""
    r = np.asarray(residual) / np.asarray(residual)[0]
    hit = r <= level
    return np.where(hit.any(axis=0), hit.argmax(axis=0), np.nan)


def padded(trace: np.ndarray, length: int) -> np.ndarray:
    """A (K, B) trace padded with NaN rows to (length, B): a run that failed stops early, its curve just ends."""
    trace = np.asarray(trace, dtype=float)
    out = np.full((length, trace.shape[1]), np.nan)
    out[: len(trace)] = trace[:length]
    return out
