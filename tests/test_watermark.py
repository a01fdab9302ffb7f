"""Tree-ring key construction, injection and 3-way classification (paper Sec. 5.1, notes Sec. 5.7)."""

import math

import numpy as np
import pytest
import torch

from decinv.applications.watermark import (accuracy, circle_mask, classify, confusion_matrix, distances, inject, make_keys,
                              mask_coverage, ring_values)

RINGS = [[96, 48, 112, 64, 16, 144], [96, 16, 96, 112, 48, 112], [32, 112, 128, 48, 64, 96]]


def spectrum(z):
    return torch.fft.fftshift(torch.fft.fft2(z.double()), dim=(-2, -1))


def conj_mirror(G):
    """G[k~] with k~ the index of -k: (size - s) mod size on each axis of the shifted spectrum."""
    return torch.roll(torch.flip(G, (-2, -1)), (1, 1), (-2, -1)).conj()


def watermarked(n, size, seed, centred_on_dc):
    keys, mask = make_keys(size, centred_on_dc=centred_on_dc)
    labels = torch.arange(n) % 3
    z_T = torch.randn(n, 4, size, size, generator=torch.Generator().manual_seed(seed))
    return inject(z_T, keys[labels], mask), labels, keys, mask


@pytest.mark.parametrize("size", [16, 64])
def test_circle_mask_matches_flipped_y_definition(size):
    y = np.arange(size)[::-1][:, None]  # the notes: rows counted upwards from the bottom
    x = np.arange(size)[None, :]
    expected = (x - size // 2) ** 2 + (y - size // 2) ** 2 <= 36
    mask = circle_mask(size, 6)
    assert np.array_equal(mask.numpy(), expected) and mask.sum() == 113
    c = size // 2  # DC row/column; the disc's centre row is c - 1, so it reaches row c - 7 but not c + 6
    assert mask[c - 7, c] and mask[c + 5, c] and not mask[c + 6, c] and not mask[c - 8, c]


def test_official_disc_is_off_dc_and_centred_disc_is_symmetric():
    off, on = circle_mask(16, 6), circle_mask(16, 6, centred_on_dc=True)
    assert on.sum() == 113 and on[8, 8]
    assert torch.equal(conj_mirror(on.double()).real.bool(), on)
    assert not torch.equal(conj_mirror(off.double()).real.bool(), off)


def test_ring_values_and_key_layout():
    torch.testing.assert_close(ring_values(6), torch.tensor(RINGS, dtype=torch.float64))
    for centred in (False, True):
        keys, mask = make_keys(16, 6, centred_on_dc=centred)
        assert keys.shape == (3, 16, 16) and keys.dtype == torch.complex64 and mask.dtype == torch.bool
        assert torch.all(keys[:, ~mask] == 0) and torch.all(keys.imag == 0)
        row0 = 8 if centred else 7
        for i, j in mask.nonzero().tolist():
            ring = max(1, math.ceil(math.hypot(i - row0, j - 8)))  # annulus (r-1, r] holds ring r
            assert keys[:, i, j].real.tolist() == [row[ring - 1] for row in RINGS]


def test_coverage_16_vs_64():
    cov16, cov64 = mask_coverage(make_keys(16)[1]), mask_coverage(make_keys(64)[1])
    assert cov16 == pytest.approx(113 / 256) and cov16 / cov64 == pytest.approx(16)


@pytest.mark.parametrize("size, radius", [(16, 7), (16, 0), (8, 4), (64, 7)])
def test_make_keys_rejects_bad_radius(size, radius):
    with pytest.raises(ValueError):
        make_keys(size, radius)


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("channel", [0, 2])
def test_inject_changes_only_masked_frequencies(centred, channel):
    keys, mask = make_keys(16, centred_on_dc=centred)
    z_T = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    out = inject(z_T, keys[1], mask, channel)
    assert out.shape == z_T.shape and out.dtype == z_T.dtype
    others = [c for c in range(4) if c != channel]
    assert torch.equal(out[:, others], z_T[:, others])  # bit for bit
    F, F_out = spectrum(z_T[:, channel]), spectrum(out[:, channel])
    G = F.clone()
    G[:, mask] = keys[1][mask].to(G.dtype)  # the edited, no longer Hermitian spectrum
    tol = dict(rtol=0, atol=1e-3)  # float32 latent, coefficients up to ~150
    torch.testing.assert_close(F_out, (G + conj_mirror(G)) / 2, **tol)  # what the real part keeps
    touched = mask | conj_mirror(mask.double()).real.bool()
    torch.testing.assert_close(F_out[:, ~touched], F[:, ~touched], **tol)
    assert (F_out[:, touched] - F[:, touched]).abs().amax() > 1
    if centred:  # symmetric disc + real, radial key: the key survives the projection exactly
        torch.testing.assert_close(F_out[:, mask], G[:, mask], **tol)


@pytest.mark.parametrize("size", [16, 64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_round_trip(size, seed):
    z_w, labels, keys, mask = watermarked(30, size, seed, centred_on_dc=True)
    d = distances(z_w, keys, mask)
    assert d.shape == (30, 3) and d[torch.arange(30), labels].max() < 1e-3
    assert np.array_equal(confusion_matrix(labels, classify(z_w, keys, mask)), np.diag([10, 10, 10]))
    # Official off-DC disc: the projection blurs key 1 closer to key 2 -> exact inversion caps accuracy at 2/3.
    z_w, labels, keys, mask = watermarked(30, size, seed, centred_on_dc=False)
    cm = confusion_matrix(labels, classify(z_w, keys, mask))
    assert np.array_equal(cm, [[0, 10, 0], [0, 10, 0], [0, 0, 10]]) and accuracy(cm) == pytest.approx(2 / 3)


def test_small_noise_keeps_and_huge_noise_destroys_the_watermark():
    z_w, labels, keys, mask = watermarked(600, 16, 3, centred_on_dc=True)
    g = torch.Generator().manual_seed(4)
    small = classify(z_w + 1.0 * torch.randn(z_w.shape, generator=g), keys, mask)
    assert torch.equal(small, labels)
    huge = classify(z_w + 100.0 * torch.randn(z_w.shape, generator=g), keys, mask)
    assert 0.25 < accuracy(confusion_matrix(labels, huge)) < 0.42  # chance = 1/3, sd ~0.02


def test_confusion_matrix_and_accuracy():
    cm = confusion_matrix(torch.tensor([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]))
    assert cm.dtype.kind == "i" and cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert accuracy(cm) == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1])
    with pytest.raises(ValueError):
        accuracy(np.zeros((3, 3), dtype=int))


@pytest.mark.parametrize("z, channel, key_size, mask_kind", [
    (torch.zeros(4, 16, 16), 0, 16, "bool"),                       # 3-D latent
    (torch.zeros(1, 4, 16, 8), 0, 16, "bool"),                     # not square
    (torch.zeros(1, 4, 16, 16, dtype=torch.long), 0, 16, "bool"),  # integer
    (torch.full((1, 4, 16, 16), float("inf")), 0, 16, "bool"),     # not finite
    (torch.zeros(1, 4, 16, 16), 4, 16, "bool"),                    # channel out of range
    (torch.zeros(1, 4, 16, 16), 0, 32, "bool"),                    # key size mismatch
    (torch.zeros(1, 4, 16, 16), 0, 16, "float"),                   # mask not bool
])
def test_bad_inputs_rejected(z, channel, key_size, mask_kind):
    keys, mask = make_keys(key_size)
    mask = mask if mask_kind == "bool" else mask.float()
    with pytest.raises(ValueError):
        inject(z, keys[0], mask, channel)
    with pytest.raises(ValueError):
        distances(z, keys, mask, channel)


def test_wilson_interval_brackets_the_proportion_and_stays_in_the_unit_interval():
    from decinv.applications import watermark as wm

    low, high = wm.wilson_interval(4, 6)
    assert 0 < low < 4 / 6 < high < 1
    assert round(100 * low) == 30 and round(100 * high) == 90  # the chapter's 4/6 = 67 % [30, 90]
    low, high = wm.wilson_interval(6, 6)
    assert 0.6 < low < 1 and high == pytest.approx(1.0)
    assert wm.wilson_interval(0, 6)[0] == pytest.approx(0.0) and wm.wilson_interval(0, 6)[1] > 0
    with pytest.raises(ValueError):
        wm.wilson_interval(7, 6)


def test_exact_inversion_is_perfect_on_the_dc_centred_disc_and_capped_on_the_official_one():
    from decinv.applications import watermark as wm

    cm, mean_d = wm.exact_inversion(16, 6, centred_on_dc=True, key_scale=0.25, n=10)
    assert np.array_equal(cm, np.diag([10, 10, 10])) and mean_d.shape == (3, 3)
    assert (np.diag(mean_d) < 1e-3).all()  # the key survives injection exactly
    cm, mean_d = wm.exact_inversion(64, 6, n=10)
    assert cm.sum() == 30 and wm.accuracy(cm) < 1 and mean_d[0].argmin() != 0  # watermark 1 read as another


def test_figures_draw_one_panel_per_disc_and_method():
    import matplotlib

    matplotlib.use("Agg")
    from decinv.applications import watermark as wm

    discs = {name: wm.make_keys(16, 3, centred_on_dc=c) for name, c in (("official", False), ("DC", True))}
    fig = wm.show_injection(torch.randn(1, 4, 16, 16), discs, vmax=100.0)
    assert len(fig.axes) == 2 * 4 + 1  # and the colour bar
    cm = np.array([[2, 0, 0], [0, 1, 1], [0, 0, 2]])
    fig = wm.show_confusions({"a": {"x": cm, "y": cm}}, 2, {"x": "X"})
    assert [ax.get_title().split("\n") for ax in fig.axes] == [["a: X", "5/6"], ["a: y", "5/6"]]
