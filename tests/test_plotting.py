"""Tests for decinv.plotting: the Pareto front, the error map and the figure helpers (matplotlib Agg)."""

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from decinv import plotting  # noqa: E402


def brute_force_front(t, e):
    """Reference: i is efficient iff no j is <= in both and < in one (NaNs never efficient)."""
    out = []
    for i in range(len(t)):
        if np.isnan(t[i]) or np.isnan(e[i]):
            continue
        dominated = any(
            t[j] <= t[i] and e[j] <= e[i] and (t[j] < t[i] or e[j] < e[i])
            for j in range(len(t))
            if not (np.isnan(t[j]) or np.isnan(e[j]))
        )
        if not dominated:
            out.append(i)
    return sorted(out, key=lambda i: (t[i], e[i]))


# ---------------------------------------------------------------------------------------------- pareto_front


def test_pareto_front_simple_staircase():
    times = [1.0, 2.0, 3.0, 2.5, 0.5]
    errors = [5.0, 3.0, 1.0, 4.0, 9.0]
    # (2.5, 4.0) is dominated by (2.0, 3.0); the rest trade time for error
    assert plotting.pareto_front(times, errors).tolist() == [4, 0, 1, 2]


def test_pareto_front_sorted_by_time_and_lower_is_better():
    # negative dB errors: lower (more negative) is better
    times = [6.11, 3.34, 1.91, 31.7]
    errors = [-15.92, -19.39, -18.74, -24.82]
    idx = plotting.pareto_front(times, errors)
    assert idx.tolist() == [2, 1, 3]  # 6.11 s / -15.92 dB is slower and worse than 3.34 s / -19.39 dB
    assert np.all(np.diff(np.asarray(times)[idx]) > 0)
    assert np.all(np.diff(np.asarray(errors)[idx]) < 0)


def test_pareto_front_ties():
    # equal time, different error: only the lower error survives; exact duplicates both survive
    times = [1.0, 1.0, 2.0, 2.0]
    errors = [3.0, 2.0, 1.0, 1.0]
    assert plotting.pareto_front(times, errors).tolist() == [1, 2, 3]
    # equal error, different time: only the faster survives
    assert plotting.pareto_front([1.0, 2.0], [5.0, 5.0]).tolist() == [0]


def test_pareto_front_nan_and_empty_and_single():
    assert plotting.pareto_front([], []).tolist() == []
    assert plotting.pareto_front([3.0], [2.0]).tolist() == [0]
    # a NaN point is never efficient and never dominates anything
    assert plotting.pareto_front([np.nan, 2.0, 1.0], [0.0, 1.0, 2.0]).tolist() == [2, 1]
    with pytest.raises(ValueError):
        plotting.pareto_front([1.0, 2.0], [1.0])


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 17, 60):
        # integers make ties and duplicates common
        t = rng.integers(0, 6, n).astype(float)
        e = rng.integers(0, 6, n).astype(float)
        assert plotting.pareto_front(t, e).tolist() == brute_force_front(t, e)


def test_pareto_front_points_are_mutually_non_dominated():
    rng = np.random.default_rng(1)
    t, e = rng.random(200), rng.random(200)
    idx = plotting.pareto_front(t, e)
    for i, j in itertools.permutations(idx, 2):
        assert not (t[j] <= t[i] and e[j] <= e[i] and (t[j] < t[i] or e[j] < e[i]))
    rest = np.setdiff1d(np.arange(200), idx)
    for i in rest:  # every other point is dominated by some front point
        assert np.any((t[idx] <= t[i]) & (e[idx] <= e[i]))


def test_plot_pareto_front_draws_staircase():
    fig, ax = plt.subplots()
    idx = plotting.plot_pareto_front(ax, [1, 2, 3], [3, 1, 2])
    assert idx.tolist() == [0, 1]
    (line,) = ax.get_lines()
    assert line.get_drawstyle() == "steps-post"
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- error_map


def test_error_map_values_and_clipping():
    x = np.zeros((1, 3, 2, 2), dtype=np.float32)
    y = x.copy()
    y[0, 0, 0, 0] = 0.1  # [-1,1] difference 0.1 = 0.05 in [0,1] pixel units -> x5 = 0.25
    y[0, 1, 0, 0] = -0.4  # 0.2 in pixel units -> x5 = 1.0 (exactly white)
    y[0, 2, 1, 1] = 2.0  # 1.0 in pixel units -> x5 = 5 -> clipped to 1
    m = plotting.error_map(x, y, gain=5)
    assert m.shape == x.shape
    assert m[0, 0, 0, 0] == pytest.approx(0.25)
    assert m[0, 1, 0, 0] == pytest.approx(1.0)
    assert m[0, 2, 1, 1] == 1.0
    assert m.min() >= 0.0 and m.max() <= 1.0
    assert np.count_nonzero(m) == 3


def test_error_map_symmetric_gain_and_identity():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (2, 3, 8, 8))
    y = np.clip(x + rng.normal(0, 0.02, x.shape), -1, 1)
    assert np.array_equal(plotting.error_map(x, y), plotting.error_map(y, x))
    assert np.all(plotting.error_map(x, x) == 0)
    small = plotting.error_map(x, y, gain=1)
    big = plotting.error_map(x, y, gain=10)
    assert np.allclose(np.minimum(small * 10, 1.0), big)


def test_error_map_rejects_bad_input():
    with pytest.raises(ValueError):
        plotting.error_map(np.zeros((3, 4, 4)), np.zeros((3, 4, 5)))
    with pytest.raises(ValueError):
        plotting.error_map(np.zeros(3), np.zeros(3), gain=0)


def test_error_map_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    x = torch.zeros(1, 3, 4, 4, dtype=torch.float16)
    y = torch.full((1, 3, 4, 4), 0.2, dtype=torch.float16)
    m = plotting.error_map(x, y)
    assert isinstance(m, np.ndarray) and m.shape == (1, 3, 4, 4)
    assert np.allclose(m, 0.5, atol=1e-3)


# ---------------------------------------------------------------------------------------------- style and names


def test_method_colors_are_fixed_distinct_and_colorblind_palette():
    sns = pytest.importorskip("seaborn")
    palette = set(sns.color_palette("colorblind").as_hex())
    names = ["encoder", "forward-step", "inertial-km", "gradfree-adam", "gradient-adam"]
    assert set(plotting.METHOD_COLORS) == set(names)
    colors = [plotting.METHOD_COLORS[n] for n in names]
    assert len(set(colors)) == len(colors)
    assert set(colors) <= palette


def test_method_aliases_and_labels():
    assert plotting.method_color("grad-free") == plotting.METHOD_COLORS["gradfree-adam"]
    assert plotting.method_color("Grad-Based") == plotting.METHOD_COLORS["gradient-adam"]
    assert plotting.method_label("grad-free") == "Grad-free"
    assert plotting.method_label("gradient-adam", bits=32) == "Grad-based 32-bit"
    assert plotting.method_label("gradfree-adam", 16) == "Grad-free 16-bit"
    with pytest.raises(KeyError, match="known names"):
        plotting.method_color("lbfgs")


def test_use_style_sets_dpi_and_palette():
    plotting.use_style()
    assert matplotlib.rcParams["figure.dpi"] == 110
    first = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][0]
    assert matplotlib.colors.to_hex(first) == plotting.METHOD_COLORS["gradfree-adam"]


# ---------------------------------------------------------------------------------------------- figures


def test_show_images_layout_and_display_range():
    x = np.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    fig = plotting.show_images([x, plotting.error_map(x, -x)], titles=list("abcd"), ncols=2,
                               vrange=[(-1, 1)] * 2 + [(0, 1)] * 2)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 4
    for ax in axes:
        data = ax.images[0].get_array()
        assert data.shape == (4, 4, 3)
        assert 0.0 <= float(np.min(data)) and float(np.max(data)) <= 1.0
    assert [ax.get_title() for ax in axes] == list("abcd")
    plt.close(fig)
    with pytest.raises(ValueError):
        plotting.show_images(x, titles=["only one"])


def test_to_display_maps_minus_one_to_black_and_one_to_white():
    im = plotting.to_display(np.stack([np.full((2, 2), -1.0), np.zeros((2, 2)), np.ones((2, 2))]))
    assert im.shape == (2, 2, 3)
    assert np.allclose(im[..., 0], 0) and np.allclose(im[..., 1], 0.5) and np.allclose(im[..., 2], 1)


def test_show_latent_channels_shared_symmetric_scale():
    z = np.random.default_rng(3).normal(size=(2, 4, 8, 8))
    fig = plotting.show_latent_channels(z, titles=["E(x)", "z_K"])
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 8
    vmax = np.abs(z).max()
    for ax in panels:
        assert ax.images[0].get_clim() == pytest.approx((-vmax, vmax))
    plt.close(fig)


def test_show_reconstructions_has_error_row():
    x = np.zeros((1, 3, 4, 4))
    fig = plotting.show_reconstructions(x, {"encoder": x + 0.1, "grad-free": x})
    titles = [ax.get_title() for ax in fig.axes]
    assert "Original x" in titles and "Encoder" in titles and "Grad-free" in titles
    assert titles.count("error x5") == 2
    plt.close(fig)
