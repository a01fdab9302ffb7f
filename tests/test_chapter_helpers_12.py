"""decinv.analysis.cocoercivity: the slope statistics behind chapter 2's reading of the paper's Fig. 2."""

import numpy as np
import pytest
from scipy import stats

from decinv.analysis.cocoercivity import sign_verdict, slope_stats


def test_slope_stats_matches_least_squares_and_brackets_a_clear_slope():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 60)
    y = 2.0 - 3.0 * x + rng.normal(0, 0.1, 60)
    f = slope_stats(x, y, np.random.default_rng(0), n_boot=500)
    fit = stats.linregress(x, y)
    assert f["slope"] == pytest.approx(fit.slope) and f["intercept"] == pytest.approx(fit.intercept)
    assert f["t_lo"] < f["slope"] < f["t_hi"] and f["boot_lo"] < f["slope"] < f["boot_hi"]
    assert -3.2 < f["boot_lo"] < f["boot_hi"] < -2.8  # the true slope, -3, within a narrow interval
    assert f["spearman"] < -0.9 and f["spearman_p"] < 1e-6 and f["pearson_r"] < -0.9
    assert sign_verdict(f["boot_lo"], f["boot_hi"]) == "negative"


def test_slope_stats_bootstrap_is_reproducible_from_the_generator_and_uses_it():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=20), rng.normal(size=20)
    a = slope_stats(x, y, np.random.default_rng(5), n_boot=300)
    b = slope_stats(x, y, np.random.default_rng(5), n_boot=300)
    c = slope_stats(x, y, np.random.default_rng(6), n_boot=300)
    assert a == b
    assert (a["boot_lo"], a["boot_hi"]) != (c["boot_lo"], c["boot_hi"])
    # a shared generator advances: the second of two calls draws other resamples (chapter 2 relies on the order)
    g = np.random.default_rng(5)
    first, second = slope_stats(x, y, g, n_boot=300), slope_stats(x, y, g, n_boot=300)
    assert first == a and second["boot_lo"] != a["boot_lo"]


def test_slope_stats_without_a_relation_is_not_distinguishable_from_zero():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=200), rng.normal(size=200)
    f = slope_stats(x, y, rng, n_boot=400)
    assert f["boot_lo"] < 0 < f["boot_hi"]
    assert sign_verdict(f["boot_lo"], f["boot_hi"]) == "not distinguishable from zero"
    assert sign_verdict(0.1, 0.3) == "positive"


def test_slope_stats_with_two_points_and_bad_shapes():
    f = slope_stats([0.0, 1.0], [1.0, 3.0], np.random.default_rng(0), n_boot=50)
    assert f["slope"] == pytest.approx(2.0) and np.isnan(f["t_lo"]) and np.isnan(f["t_hi"])
    with pytest.raises(ValueError, match="1-D"):
        slope_stats([1.0, 2.0], [1.0, 2.0, 3.0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="1-D"):
        slope_stats([1.0], [1.0], np.random.default_rng(0))
