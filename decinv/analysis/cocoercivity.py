"""Reading the paper's Fig. 2 / Fig. 5 / Fig. S3: does a run's cocoercivity predict its convergence?

For every instance a run gives one point: horizontally min_k r_k, its worst ratio of Eq. 14 over a window of
iterations (`decinv.cocoercivity_ratio`), vertically ||z_K - z_inf||, how far the end of the window still is from
the run's end. The paper's claim "the better the convergence, the more cocoercive" is a negative slope of the
least-squares line through these points. The paper draws the line; `slope_stats` also says how sure one can be of
its sign, with a bootstrap over instances, and gives rank correlations that a few extreme minima cannot pull.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def slope_stats(x, y, rng: np.random.Generator, n_boot: int = 2000) -> dict:
    """Least-squares slope of ``y`` on ``x`` (1-D, one value per instance) with two 95 % intervals.

    Returns a dict of floats: ``slope``, ``intercept``; ``t_lo``/``t_hi``, the t-based interval (slope ± t_{0.975,
    n-2} × standard error; NaN for n ≤ 2); ``boot_lo``/``boot_hi``, the 2.5th and 97.5th percentiles of the slope
    over ``n_boot`` resamples of the instances with replacement (drawn from ``rng``, so the same generator state
    gives the same interval; resamples whose x values are all equal have no slope and are skipped);
    ``pearson_r``/``pearson_p`` and ``spearman``/``spearman_p``, the correlations and their two-sided p-values.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(f"x and y must be 1-D of the same length >= 2, got shapes {x.shape} and {y.shape}.")
    n = len(x)
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, n - 2) * fit.stderr if n > 2 else np.nan
    idx = rng.integers(0, n, size=(n_boot, n))
    bx, by = x[idx], y[idx]
    bxc = bx - bx.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (bxc * (by - by.mean(axis=1, keepdims=True))).sum(axis=1) / (bxc**2).sum(axis=1)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    spear = stats.spearmanr(x, y)
    return {"slope": fit.slope, "intercept": fit.intercept, "t_lo": fit.slope - half, "t_hi": fit.slope + half,
            "boot_lo": lo, "boot_hi": hi, "pearson_r": fit.rvalue, "pearson_p": fit.pvalue,
            "spearman": spear.statistic, "spearman_p": spear.pvalue}


def sign_verdict(lo: float, hi: float) -> str:
    """The sign a 95 % interval [lo, hi] supports: "positive", "negative" or "not distinguishable from zero"."""
    if lo > 0:
        return "positive"
    if hi < 0:
        return "negative"
    return "not distinguishable from zero"
