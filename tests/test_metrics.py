import math

import numpy as np
import pytest
import torch

from decinv.metrics import cocoercivity_ratio, mean_ci, nmse, nmse_db, psnr


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
