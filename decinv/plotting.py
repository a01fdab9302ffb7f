"""One style for every figure in the book.

Call :func:`use_style` once at the top of a notebook; then colour every method with :func:`method_color` (or
``METHOD_COLORS``) and name it with :func:`method_label`, so that "grad-free" is the same blue in every chapter.

Images follow the library's convention: tensors or arrays of shape ``(B, 3, H, W)`` (or ``(3, H, W)``) with values
in ``[-1, 1]``. Nothing here imports torch; tensors are converted with ``.detach().cpu()`` when they have it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "METHOD_COLORS",
    "METHOD_LABELS",
    "BITS_MARKERS",
    "use_style",
    "canonical_method",
    "method_color",
    "method_label",
    "to_numpy",
    "to_display",
    "error_map",
    "show_images",
    "show_reconstructions",
    "show_latent_channels",
    "pareto_front",
    "plot_pareto_front",
]

# Seaborn's "colorblind" palette (Wong-style), written out so the mapping never depends on the seaborn version;
# tests/test_plotting.py checks it against seaborn.
_CB = {
    "blue": "#0173b2",
    "orange": "#de8f05",
    "green": "#029e73",
    "vermillion": "#d55e00",
    "pink": "#cc78bc",
    "brown": "#ca9161",
    "grey": "#949494",
    "sky": "#56b4e9",
}

#: Fixed colour per method (canonical names as used by the solvers).
METHOD_COLORS: dict[str, str] = {
    "encoder": _CB["grey"],
    "forward-step": _CB["orange"],
    "inertial-km": _CB["green"],
    "gradfree-adam": _CB["blue"],
    "gradient-adam": _CB["vermillion"],
}

#: Human-readable names, in the paper's vocabulary.
METHOD_LABELS: dict[str, str] = {
    "encoder": "Encoder",
    "forward-step": "Forward-step (FSM)",
    "inertial-km": "Inertial KM",
    "gradfree-adam": "Grad-free",
    "gradient-adam": "Grad-based",
}

# Other spellings that occur in the paper, in results files and on the command line.
_ALIASES: dict[str, str] = {
    "grad-free": "gradfree-adam",
    "gradfree": "gradfree-adam",
    "grad_free": "gradfree-adam",
    "gradient-free": "gradfree-adam",
    "ours": "gradfree-adam",
    "grad-based": "gradient-adam",
    "gradient": "gradient-adam",
    "grad": "gradient-adam",
    "gradient-based": "gradient-adam",
    "grad_based": "gradient-adam",
    "fsm": "forward-step",
    "vanilla": "forward-step",
    "forward_step": "forward-step",
    "km": "inertial-km",
    "inertial_km": "inertial-km",
    "enc": "encoder",
}

#: Marker per floating-point precision (Fig. 3 of the paper distinguishes 32-bit and 16-bit runs).
BITS_MARKERS: dict[int, str] = {32: "o", 16: "s"}


def use_style(font_scale: float = 1.0, dpi: int = 110) -> None:
    """Set the book's matplotlib style: seaborn whitegrid with ticks, colour-blind palette, readable fonts."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=font_scale)
    mpl.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": 2 * dpi,
            "savefig.bbox": "tight",
            "figure.figsize": (6.4, 4.0),
            "figure.constrained_layout.use": True,
            "axes.titlesize": 12 * font_scale,
            "axes.labelsize": 11 * font_scale,
            "xtick.labelsize": 10 * font_scale,
            "ytick.labelsize": 10 * font_scale,
            "legend.fontsize": 10 * font_scale,
            "legend.frameon": False,
            "xtick.bottom": True,
            "ytick.left": True,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "image.interpolation": "nearest",  # small images: show pixels, do not blur them
            "image.cmap": "viridis",
        }
    )


def canonical_method(name: str) -> str:
    """The canonical solver name for ``name`` (case-insensitive; accepts "grad-free", "grad-based", "km", ...)."""
    key = name.strip().lower()
    if key in METHOD_COLORS:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    known = ", ".join(sorted(set(METHOD_COLORS) | set(_ALIASES)))
    raise KeyError(f"unknown method {name!r}; known names: {known}")


def method_color(name: str) -> str:
    """The fixed colour (hex string) of a method; aliases such as "grad-free" are accepted."""
    return METHOD_COLORS[canonical_method(name)]


def method_label(name: str, bits: int | None = None) -> str:
    """Legend label of a method, e.g. ``method_label("gradfree-adam", 16) == "Grad-free 16-bit"``."""
    label = METHOD_LABELS[canonical_method(name)]
    return f"{label} {bits}-bit" if bits is not None else label


# ----------------------------------------------------------------------------------------------------------------
# images


def to_numpy(x: Any) -> np.ndarray:
    """A float numpy copy of a torch tensor, numpy array or nested sequence."""
    if hasattr(x, "detach"):
        x = x.detach()
        if hasattr(x, "float"):
            x = x.float()
        x = x.cpu().numpy()
    arr = np.asarray(x)
    return arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)


def _as_batch(images: Any) -> list[np.ndarray]:
    """Split images into a list of (C, H, W) or (H, W) arrays."""
    if isinstance(images, (list, tuple)):
        out: list[np.ndarray] = []
        for im in images:
            out.extend(_as_batch(im))
        return out
    arr = to_numpy(images)
    if arr.ndim == 4:
        return list(arr)
    if arr.ndim in (2, 3):
        return [arr]
    raise ValueError(f"expected an image of shape (B,C,H,W), (C,H,W) or (H,W); got shape {arr.shape}")


def to_display(image: Any, vrange: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """One image as an (H, W, 3) or (H, W) array in [0, 1] for ``imshow``; values outside ``vrange`` are clipped."""
    arr = to_numpy(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"to_display takes one image; got a batch of {arr.shape[0]}")
        arr = arr[0]
    lo, hi = vrange
    arr = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    if arr.ndim == 3:
        if arr.shape[0] == 1:
            return arr[0]
        if arr.shape[0] in (3, 4):
            return np.moveaxis(arr[:3], 0, -1)
        if arr.shape[-1] in (3, 4):  # already channel-last
            return arr[..., :3]
        raise ValueError(f"cannot display an image with shape {arr.shape} (need 1 or 3 channels)")
    return arr


def error_map(x: Any, y: Any, gain: float = 5.0) -> np.ndarray:
    """The paper's "error map (x5)": ``|x - y|`` times ``gain``, clipped to [0, 1] for display.

    ``x`` and ``y`` are images in [-1, 1] of the same shape, e.g. (B, 3, H, W). The difference is measured in
    [0, 1] pixel units (half the [-1, 1] difference), so with ``gain=5`` a pixel error of 0.2 (a fifth of the
    intensity range) or more shows as full white. Returns a numpy array of the input shape with values in [0, 1];
    show it with ``show_images(..., vrange=(0, 1))``.
    """
    a, b = to_numpy(x), to_numpy(y)
    if a.shape != b.shape:
        raise ValueError(f"x and y must have the same shape; got {a.shape} and {b.shape}")
    if gain <= 0:
        raise ValueError(f"gain must be positive; got {gain}")
    return np.clip(np.abs(a - b) * (0.5 * gain), 0.0, 1.0)


def _grid(n: int, ncols: int | None) -> tuple[int, int]:
    ncols = min(n, 4) if ncols is None else max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def show_images(
    images: Any,
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    size: float = 2.6,
    vrange: tuple[float, float] | Sequence[tuple[float, float]] = (-1.0, 1.0),
    suptitle: str | None = None,
    cmap: str = "gray",
):
    """Show images side by side; returns the matplotlib figure.

    ``images`` is a (B, 3, H, W) tensor/array in [-1, 1], or a list of such (lists are concatenated). ``vrange``
    is the value range mapped to black..white, one for all panels or one per panel (use ``(0, 1)`` for the
    output of :func:`error_map`). Each panel is ``size`` inches wide, big enough to see error maps; at most four
    panels per row unless ``ncols`` says otherwise.
    """
    import matplotlib.pyplot as plt

    panels = _as_batch(images)
    n = len(panels)
    if n == 0:
        raise ValueError("no images to show")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    ranges = [tuple(vrange)] * n if np.ndim(vrange) == 1 else [tuple(r) for r in vrange]
    if len(ranges) != n:
        raise ValueError(f"got {len(ranges)} value ranges for {n} images")
    nrows, ncols = _grid(n, ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.3 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        im = to_display(panels[i], ranges[i])
        ax.imshow(im, cmap=cmap if im.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def show_reconstructions(
    x: Any,
    recons: Mapping[str, Any],
    *,
    index: int = 0,
    gain: float = 5.0,
    size: float = 2.4,
    subtitles: Mapping[str, str] | None = None,
):
    """Original image plus, per method, the reconstruction (top row) and its error map x``gain`` (bottom row).

    ``x`` is (B, 3, H, W) in [-1, 1]; ``recons`` maps a method name (or any label) to decoded images D(z) of the
    same shape; ``index`` picks the image of the batch. ``subtitles`` adds a second title line per entry, e.g.
    the NMSE. Mirrors the layout of the paper's Fig. 4 and Fig. S2.
    """
    import matplotlib.pyplot as plt

    xs = _as_batch(x)
    ref = xs[index]
    ncols = 1 + len(recons)
    fig, axes = plt.subplots(2, ncols, figsize=(size * ncols, 2 * size + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].imshow(to_display(ref))
    axes[0, 0].set_title("Original x", fontsize=10)
    for j, (name, rec) in enumerate(recons.items(), start=1):
        r = _as_batch(rec)[index]
        try:
            title, color = method_label(name), method_color(name)
        except KeyError:
            title, color = name, "black"
        if subtitles and name in subtitles:
            title = f"{title}\n{subtitles[name]}"
        axes[0, j].imshow(to_display(r))
        axes[0, j].set_title(title, fontsize=10, color=color)
        axes[1, j].imshow(to_display(error_map(r, ref, gain), (0.0, 1.0)))
        axes[1, j].set_title(f"error x{gain:g}", fontsize=9)
    return fig


def show_latent_channels(
    z: Any,
    titles: Sequence[str] | None = None,
    *,
    size: float = 2.2,
    cmap: str = "RdBu_r",
    vmax: float | None = None,
):
    """Show the channels of latents as heat maps: one row per latent, one column per channel.

    ``z`` is (C, h, w) or (B, C, h, w). The colour scale is symmetric around 0 and shared by every panel
    (``vmax`` defaults to the largest absolute value), with one colour bar. ``titles`` labels the rows.
    """
    import matplotlib.pyplot as plt

    arr = to_numpy(z)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected latents of shape (C,h,w) or (B,C,h,w); got {arr.shape}")
    b, c = arr.shape[:2]
    if titles is not None and len(titles) != b:
        raise ValueError(f"got {len(titles)} titles for {b} latents")
    vmax = float(np.nanmax(np.abs(arr))) if vmax is None else float(vmax)
    vmax = vmax or 1.0
    fig, axes = plt.subplots(b, c, figsize=(size * c + 0.8, size * b), squeeze=False)
    im = None
    for i in range(b):
        for j in range(c):
            ax = axes[i, j]
            im = ax.imshow(arr[i, j], cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if i == 0:
                ax.set_title(f"channel {j}", fontsize=10)
            if j == 0 and titles is not None:
                ax.set_ylabel(titles[i])
    fig.colorbar(im, ax=axes, shrink=0.8, label="latent value")
    return fig


# ----------------------------------------------------------------------------------------------------------------
# runtime / error trade-off (Fig. 3 of the paper)


def pareto_front(times: Sequence[float], errors: Sequence[float]) -> np.ndarray:
    """Indices of the Pareto-efficient points when lower is better in both coordinates.

    A point is efficient if no other point is at least as good in both ``times`` and ``errors`` and strictly
    better in one. Exact duplicates of an efficient point are all efficient. Points with a NaN coordinate are
    never efficient. The indices are returned sorted by time (then error), i.e. in the order in which the front
    is drawn.
    """
    t = np.asarray(times, dtype=float).ravel()
    e = np.asarray(errors, dtype=float).ravel()
    if t.shape != e.shape:
        raise ValueError(f"times and errors must have the same length; got {t.size} and {e.size}")
    if t.size == 0:
        return np.zeros(0, dtype=int)
    valid = ~(np.isnan(t) | np.isnan(e))
    # dominated[i] = exists j: t_j <= t_i and e_j <= e_i and (t_j < t_i or e_j < e_i)
    le = (t[None, :] <= t[:, None]) & (e[None, :] <= e[:, None])
    lt = (t[None, :] < t[:, None]) | (e[None, :] < e[:, None])
    dominated = np.any(le & lt & valid[None, :], axis=1)
    idx = np.flatnonzero(valid & ~dominated)
    return idx[np.lexsort((e[idx], t[idx]))]


def plot_pareto_front(ax, times: Sequence[float], errors: Sequence[float], **kwargs):
    """Draw the Pareto front of (times, errors) as a staircase on ``ax`` (lower-left is better).

    Returns the indices from :func:`pareto_front`. ``kwargs`` go to ``ax.step`` (defaults: dashed black).
    """
    t = np.asarray(times, dtype=float).ravel()
    e = np.asarray(errors, dtype=float).ravel()
    idx = pareto_front(t, e)
    style = {"color": "black", "linestyle": "--", "linewidth": 1.0, "label": "Pareto front", "zorder": 1}
    style.update(kwargs)
    if idx.size:
        ax.step(t[idx], e[idx], where="post", **style)
    return idx
