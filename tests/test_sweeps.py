import numpy as np
import pytest

from decinv.core.solvers import km_condition
from decinv.analysis.sweeps import alpha_max, iterations_to, lambda_max, padded


def test_lambda_max_is_the_boundary_of_condition_13():
    assert lambda_max(0.0) == 1.0
    assert lambda_max(0.9) == pytest.approx(0.0058, abs=1e-4)  # the theory page's number
    for a in (0.1, 0.5, 0.9):
        lam = lambda_max(a)
        assert km_condition(a, 0.99 * lam) and not km_condition(a, 1.01 * lam)
    grid = np.linspace(0, 0.99, 50)
    assert np.all(np.diff(lambda_max(grid)) < 0)  # decreasing: what alpha_max's bisection relies on


def test_alpha_max_inverts_lambda_max():
    for a in (0.05, 0.3, 0.9):
        assert alpha_max(lambda_max(a)) == pytest.approx(a, abs=1e-8)
    assert alpha_max(1.0) == 0.0 and alpha_max(2.0) == 0.0
    lam = 0.01
    a = alpha_max(lam)
    assert km_condition(0.999 * a, lam) and not km_condition(1.001 * a, lam)


def test_iterations_to_finds_the_first_crossing_per_instance():
    residual = np.array([[2.0, 1.0, 4.0],
                         [1.0, 0.9, 4.0],
                         [0.1, 0.05, 5.0],
                         [0.01, 0.5, 6.0]])
    k = iterations_to(residual, 0.1)
    assert k[0] == 2 and k[1] == 2 and np.isnan(k[2])
    assert iterations_to(residual, 1.0)[0] == 0  # the start itself counts


def test_padded_keeps_the_trace_and_fills_with_nan():
    out = padded(np.ones((3, 2)), 5)
    assert out.shape == (5, 2) and np.all(out[:3] == 1) and np.all(np.isnan(out[3:]))
