"""The paper's operator T(z) = E(D(z)) - E(x) (Eq. 6): the one object every gradient-free method iterates on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from decinv.core import work
from decinv.core.validation import check_images, check_integer, check_model


@dataclass
class Operator:
    """T(z) = E(D(z)) - E(x) for images ``x`` and a `decinv.LatentModel` ``model``, with ``e`` = E(x) stored.

    A zero of T is a latent that the encoder cannot tell from x's own encoding; the paper's methods drive T(z) to 0
    with forward passes only (no autograd). ``T(z)`` takes latents shaped like ``e`` (B, C, h, w) — (B, F, C, h, w)
    for videos of frames — and returns a tensor of that shape in the model's dtype, non-finite values included
    (the solvers' trackers catch them). ``chunk_size`` bounds how many images go through E and D at once (same
    result, less memory). Build one with `decinv.operator`; the solvers receive one from `decinv.invert`.
    """

    model: object
    x: torch.Tensor
    e: torch.Tensor
    chunk_size: int | None = None

    def __repr__(self) -> str:
        return (f"Operator(T(z) = E(D(z)) - E(x) for x of shape {tuple(self.x.shape)}, latents {tuple(self.e.shape)}, "
                f"{type(getattr(self.model, 'vae', self.model)).__name__}, chunk_size={self.chunk_size})")

    def ed(self, z: torch.Tensor) -> torch.Tensor:
        """E(D(z)): one decoder and one encoder forward pass (counted as work, `decinv.core.work`)."""
        m, c = self.model, self.chunk_size
        work.add(work.kind(False, self.e.dtype), work.items(z, getattr(m, "temporal", False)))
        return m.encode(m.decode(z, c, check=False), c, check=False, finite=False)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """T(z) = E(D(z)) - E(x)."""
        return self.ed(z) - self.e


def operator(model, x: torch.Tensor, *, chunk_size: int | None = None) -> Operator:
    """The operator T(z) = E(D(z)) - E(x) of the paper's Eq. 6 for images ``x`` (B, 3, H, W) in [-1, 1] (not
    [0, 1]; or videos (B, F, 3, H, W)). ``T(z)`` takes and returns latents (B, C, H/f, W/f), with f =
    ``model.downsample`` and C = ``model.latent_channels`` (e.g. (B, 4, 16, 16) for the bundled 128x128 model).

    ``x`` is checked as `decinv.invert` checks it (shape, range, finiteness, sides divisible by
    ``model.downsample``: a `ValueError` or `TypeError` naming the fix), cast to the model's device and dtype, and
    encoded once: ``T.e`` = E(x), ``T(T.e)`` is the encoder's residual and ``T(z) == 0`` means E(D(z)) = E(x).

        >>> T = decinv.operator(model, x)
        >>> z = T.e.clone()
        >>> for k in range(100):
        ...     z = z - 0.001 * T(z)          # the forward step method, Eq. 8
    """
    check_model(model)
    check_images(x, model.downsample)
    chunk_size = check_integer(chunk_size, "chunk_size", 1, none=True)
    x = x.detach().to(model.device, model.dtype)
    with torch.no_grad():
        return Operator(model, x, model.encode(x, chunk_size, check=False), chunk_size)
