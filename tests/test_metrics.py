import math

import numpy as np
import pytest
import torch

from decinv.core.metrics import cocoercivity_ratio, jacobian_extremes, mean_ci, nmse, nmse_db, psnr


def test_nmse_is_per_sample_and_scale_free():
    z = torch.randn(3, 4, 8, 8)
    noisy = z + 0.1 * z.flatten(1).norm(dim=1).view(3, 1, 1, 1) / 16  # ||noise|| = 0.1 ||z||
    assert torch.allclose(nmse(noisy, z), torch.full((3,), 0.01, dtype=torch.float64), rtol=1e-4)
    assert torch.allclose(nmse_db(noisy, z), torch.full((3,), -20.0, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(nmse(10 * noisy, 10 * z), nmse(noisy, z))


def test_nmse_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        nmse(torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 9))


def test_psnr_known_value():
    x = torch.zeros(2, 3, 8, 8)
    assert torch.allclose(psnr(x + 0.1, x), torch.full((2,), 10 * math.log10(4 / 0.01), dtype=torch.float64))


def test_cocoercivity_ratio_of_linear_spd_map_is_bounded_by_its_eigenvalues():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    m = q @ torch.diag(torch.linspace(0.5, 2.0, 6, dtype=torch.float64)) @ q.T
    points, z_inf = torch.randn(5, 2, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    ratio = cocoercivity_ratio(points, points @ m, z_inf, z_inf @ m)
    assert ratio.shape == (5, 2)
    assert (ratio >= 1 / 2.0 - 1e-9).all() and (ratio <= 1 / 0.5 + 1e-9).all()
    assert (cocoercivity_ratio(points, -points @ m, z_inf, -z_inf @ m) < 0).all()  # -M is not cocoercive


def test_mean_ci_matches_t_interval():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    mean, half = mean_ci(values)
    assert mean == 2.5
    assert half == pytest.approx(3.182446 * np.std(values, ddof=1) / 2, rel=1e-5)
    assert math.isnan(mean_ci([1.0])[1])


def _linear_ed(eigenvalues, seed=0):
    """z -> A z + c on (B, 1, 2, 4) latents, A symmetric with the given eigenvalues in a random basis."""
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    a = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    return lambda z: (z.flatten(1) @ a.T).view(z.shape) + 0.3


def test_jacobian_extremes_find_the_largest_and_the_leftmost_eigenvalue():
    z = torch.randn(2, 1, 2, 4, dtype=torch.float64)
    top, left = jacobian_extremes(_linear_ed([2.0, 1.5, 1.0, 0.9, 0.5, 0.2, 0.1, -0.6]), z, iters=300)
    assert top.shape == left.shape == (2,)
    assert torch.allclose(top, torch.full((2,), 2.0, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(left, torch.full((2,), -0.6, dtype=torch.float64), atol=1e-3)
    # a monotone map (all eigenvalues >= 0): no direction with <Jv, v> < 0 is reported
    _, left = jacobian_extremes(_linear_ed([2.0, 1.0, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1]), z, iters=300)
    assert torch.all(left > 0.05)
    # the largest |eigenvalue| negative: still top = the largest, leftmost = the most negative
    top, left = jacobian_extremes(_linear_ed([0.8, 0.5, 0.3, 0.1, 0.0, -0.2, -1.0, -2.5]), z, iters=300)
    assert torch.allclose(top, torch.full((2,), 0.8, dtype=torch.float64), atol=1e-3)
    assert torch.allclose(left, torch.full((2,), -2.5, dtype=torch.float64), atol=1e-3)
    with pytest.raises(ValueError, match="iters"):
        jacobian_extremes(_linear_ed([1.0] * 8), z, iters=0)
