"""Tree-ring watermark *classification* among three keys (paper Sec. 5.1, Table 2).

A tree-ring watermark [48] lives in the centred 2-D Fourier transform
F = fftshift(fft2(z_T[:, c])) of one channel c of the initial noise. Following
the official code (notes Sec. 5.7), key w puts the real constant
80 * key'[w][r-1] on the annulus r-1 < |k| <= r of a disc of radius R = 6, where
key' = (k - 1) * 2 + 1 stretches the contrast of the table rows below. To read a
watermark back, the image is inverted to z_T_hat (decoder inversion, then DDIM
inversion) and classified by the nearest key in mean complex-modulus L1 distance
over the disc. Accuracy = trace / total of the 3x3 confusion matrix.

The official disc is not centred on the DC coefficient: its row centre is
size//2 - 1 (the y axis is flipped, as in [48]) while fftshift puts DC at
(size//2, size//2). So the disc is not point-symmetric about DC, and ``inject``'s
final real-part projection averages each masked coefficient with its conjugate
mirror: the key is only approximately present even in the exact z_T. With these
keys and R = 6 the blurred key 1 lies nearer key 2 than key 1, so an *exactly*
recovered watermark 1 is read as 2 and exact inversion caps accuracy at 2/3 (cf.
the weak first rows of Fig. S1). The cap depends on R: we saw it for R = 6, 4, 3,
not for R = 5. ``centred_on_dc=True`` gives a symmetric disc, for which
injection is exact and exact inversion classifies perfectly.
"""

from __future__ import annotations

import numpy as np
import torch

from decinv.paper import WATERMARK_KEY_SCALE, WATERMARK_KEY_TABLE

KEY_TABLE = WATERMARK_KEY_TABLE
"""Rows 0..2 of the official code's key table; entry r-1 sets ring r (`decinv.paper.WATERMARK_KEY_TABLE`)."""
KEY_SCALE = WATERMARK_KEY_SCALE


def circle_mask(size: int, radius: int, *, centred_on_dc: bool = False) -> torch.Tensor:
    """Bool (size, size) disc of the given radius in the fftshift-ed spectrum.

    Official (default): centre column size//2, row size//2 - 1, because [48]
    measures y upwards from the bottom row. ``centred_on_dc=True`` centres it on
    DC at (size//2, size//2), which makes the disc point-symmetric.
    """
    if size < 1 or radius < 0:
        raise ValueError(f"need size >= 1 and radius >= 0, got size={size}, radius={radius}")
    row0 = size // 2 if centred_on_dc else size // 2 - 1
    y = torch.arange(size).view(-1, 1) - row0
    x = torch.arange(size).view(1, -1) - size // 2
    return x ** 2 + y ** 2 <= radius ** 2


def ring_values(radius: int = 6) -> torch.Tensor:
    """(3, radius) float64 ring constants 80 * ((k - 1) * 2 + 1); column r-1 is ring r."""
    if not 1 <= radius <= len(KEY_TABLE[0]):
        raise ValueError(f"the key table defines rings 1..{len(KEY_TABLE[0])}, got radius={radius}")
    k = torch.tensor(KEY_TABLE, dtype=torch.float64)[:, :radius]
    return KEY_SCALE * ((k - 1) * 2 + 1)


def make_keys(size: int, radius: int = 6, *, centred_on_dc: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the 3 ring keys (complex64, (3, size, size), zero off the disc) and the disc mask.

    Discs are painted from radius R down to 1, so the annulus (r-1, r] keeps ring r's value.
    """
    if not 1 <= radius <= size // 2 - 1:
        raise ValueError(f"radius must lie in [1, {size // 2 - 1}] to fit a {size}x{size} latent, got {radius}")
    values = ring_values(radius)
    keys = torch.zeros(3, size, size, dtype=torch.complex64)
    for r in range(radius, 0, -1):
        keys[:, circle_mask(size, r, centred_on_dc=centred_on_dc)] = values[:, r - 1, None].to(keys.dtype)
    return keys, circle_mask(size, radius, centred_on_dc=centred_on_dc)


def _spectrum(z: torch.Tensor, channel: int) -> torch.Tensor:
    """Centred 2-D FFT of one channel of a finite, real (B, C, s, s) latent."""
    if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[-1] != z.shape[-2]:
        raise ValueError(f"expected a square (B, C, s, s) latent, got {getattr(z, 'shape', type(z))}")
    if not z.is_floating_point() or not torch.isfinite(z).all():
        raise ValueError(f"latent must be finite and real floating point, got dtype {z.dtype}")
    if not -z.shape[1] <= channel < z.shape[1]:
        raise ValueError(f"channel {channel} out of range for {z.shape[1]} channels")
    return torch.fft.fftshift(torch.fft.fft2(z[:, channel]), dim=(-2, -1))


def _masked(key: torch.Tensor, mask: torch.Tensor, F: torch.Tensor, key_ndims: tuple[int, ...]) -> torch.Tensor:
    """key[..., mask] on F's device and dtype, after checking shapes against the spectrum F."""
    size = F.shape[-1]
    if mask.dtype != torch.bool or mask.shape != (size, size):
        raise ValueError(f"mask must be bool ({size}, {size}), got {mask.dtype} {tuple(mask.shape)}")
    if key.ndim not in key_ndims or key.shape[-2:] != (size, size):
        raise ValueError(f"key of shape {tuple(key.shape)} must be {key_ndims}-D ending in ({size}, {size})")
    return key.to(F.device)[..., mask.to(F.device)].to(F.dtype)


def inject(z_T: torch.Tensor, key: torch.Tensor, mask: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """Write key[mask] into fftshift(fft2(z_T[:, channel])) and return the real part of the inverse FFT.

    ``key`` is one (s, s) key for the whole batch or a (B, s, s) stack, one per sample.

    Other channels are returned bit-for-bit. In the chosen channel, with G the
    edited spectrum and k~ the conjugate mirror of k (index (-k) mod size before
    the shift), the real part has spectrum (G[k] + conj(G[k~])) / 2: coefficients
    with neither k nor k~ in the mask are unchanged, the rest are averaged.
    """
    F = _spectrum(z_T, channel)
    F[:, mask.to(F.device)] = _masked(key, mask, F, (2, 3))
    out = z_T.clone()
    out[:, channel] = torch.fft.ifft2(torch.fft.ifftshift(F, dim=(-2, -1))).real.to(z_T.dtype)
    return out


def distances(z_T_hat: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """(B, n_keys) mean over the mask of |F(z_T_hat) - key_j| (complex modulus L1)."""
    F = _spectrum(z_T_hat, channel)
    targets = _masked(keys, mask, F, (3,))
    diff = F[:, mask.to(F.device)][:, None, :] - targets[None]
    return diff.abs().mean(dim=-1)


def classify(z_T_hat: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """(B,) long: index of the nearest key."""
    return distances(z_T_hat, keys, mask, channel).argmin(dim=1)


def confusion_matrix(true: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray,
                     n_classes: int = 3) -> np.ndarray:
    """(n, n) int counts; rows = actual key, columns = predicted key."""
    t, p = np.asarray(true).ravel(), np.asarray(pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"true and pred differ in length: {t.shape} vs {p.shape}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t.astype(np.int64), p.astype(np.int64)), 1)
    return cm


def accuracy(cm: np.ndarray) -> float:
    """Fraction on the diagonal (paper Table 2 reports it as correct/300)."""
    total = cm.sum()
    if total == 0:
        raise ValueError("empty confusion matrix")
    return float(np.trace(cm) / total)


def mask_coverage(mask: torch.Tensor) -> float:
    """Fraction of one channel's Fourier coefficients the disc overwrites."""
    return mask.sum().item() / mask.numel()


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % (``z`` = 1.96) Wilson score interval (low, high) of a proportion ``correct``/``n``.

    With p = k/n: centre (p + z²/2n) / (1 + z²/n), half-width z √(p(1 − p)/n + z²/4n²) / (1 + z²/n). Unlike
    p ± z √(p(1 − p)/n) it stays inside [0, 1] and is not empty at k = 0 or k = n, where few images sit."""
    if isinstance(n, bool) or n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got {correct}/{n}")
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(centre - half), float(centre + half)


def exact_inversion(size: int, radius: int = 6, *, centred_on_dc: bool = False, key_scale: float = 1.0,
                    n: int = 100, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Classify watermarked noises *themselves* (a perfect inversion; no network): (confusion matrix (3, 3),
    mean distances (3, 3), row = key written, column = key compared).

    ``n`` unit noises (1, size, size) per key, drawn from ``torch.Generator().manual_seed(seed)``, get key
    ``labels[j]`` = j mod 3 (`make_keys` times ``key_scale``) by `inject`, then `distances` and the nearest key."""
    keys, mask = make_keys(size, radius, centred_on_dc=centred_on_dc)
    keys = keys * key_scale
    z = torch.randn(3 * n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(3).repeat(n)
    d = distances(inject(z, keys[labels], mask), keys, mask)
    mean_d = torch.stack([d[labels == w].mean(0) for w in range(3)]).numpy()
    return confusion_matrix(labels, d.argmin(1)), mean_d


def show_injection(noise: torch.Tensor, discs: dict, vmax: float, channel: int = 0):
    """Figure: one noise (1, C, s, s) with key 1 injected, per disc (row): the key as written, |F| after the
    injection, and |F − key 1|, |F − key 2| over the disc, with DC marked "+". ``discs``: {name: (keys, mask)}.
    Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    size = noise.shape[-1]
    fig, axes = plt.subplots(len(discs), 4, figsize=(12, 3.2 * len(discs)), squeeze=False)
    for row, (name, (keys, mask)) in enumerate(discs.items()):
        injected = inject(noise, keys[0], mask, channel)
        F = _spectrum(injected, channel)[0]
        d = distances(injected, keys, mask, channel)[0]
        panels = [(keys[0].real.double(), "watermark 1 as written"), (F.abs(), "|F| of the noise after injection"),
                  ((F - keys[0]).abs(), f"|F − key 1|: mean {d[0]:.1f}"),
                  ((F - keys[1]).abs(), f"|F − key 2|: mean {d[1]:.1f}")]
        for col, (values, title) in enumerate(panels):
            ax = axes[row, col]
            im = ax.imshow(np.where(mask.numpy(), values.double().numpy(), np.nan), cmap="magma", vmin=0, vmax=vmax)
            ax.plot(size // 2, size // 2, "+", color="white", ms=12, mew=2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.set_title(title, fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{name} disc", fontsize=11)
    fig.colorbar(im, ax=axes, shrink=0.7, label="coefficient magnitude (disc only)")
    return fig


def show_confusions(matrices: dict, vmax: float, names: dict | None = None):
    """Figure in the layout of the paper's Fig. S1: one row per entry of ``matrices`` ({row: {method: (3, 3)
    counts}}), one heat map per method, counts in the cells (rows = actual watermark, columns = predicted).
    ``names`` shortens method names in the titles. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    ncols = max(len(m) for m in matrices.values())
    fig, axes = plt.subplots(len(matrices), ncols, figsize=(3.0 * ncols, 3.2 * len(matrices)), squeeze=False)
    for i, (row, mats) in enumerate(matrices.items()):
        for j, (method, cm) in enumerate(mats.items()):
            cm, ax = np.asarray(cm), axes[i, j]
            ax.imshow(cm, cmap="Blues", vmin=0, vmax=vmax)
            for (a, b), v in np.ndenumerate(cm):
                ax.text(b, a, str(v), ha="center", va="center", fontsize=11,
                        color="white" if v > 0.6 * vmax else "black")
            ax.set_xticks(range(3), [1, 2, 3])
            ax.set_yticks(range(3), [1, 2, 3])
            ax.grid(False)
            ax.set_title(f"{row}: {(names or {}).get(method, method)}\n{np.trace(cm)}/{cm.sum()}", fontsize=10)
            ax.set_xlabel("predicted watermark")
            ax.set_ylabel("actual watermark")
    return fig
