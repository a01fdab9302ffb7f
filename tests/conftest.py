"""Shared test doubles: small random AutoencoderKLs and a linear encoder/decoder with known cocoercivity."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)


def small_vae(layout: str = "tiny", seed: int = 0):
    """A random AutoencoderKL: "tiny" is x4 like the bundled model; "sd" has SD's 4-block x8 layout, narrow."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    if layout == "sd":
        return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                             block_out_channels=(8, 16, 16, 16), layers_per_block=2, latent_channels=4,
                             norm_num_groups=8, sample_size=32)
    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         block_out_channels=(8, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                         sample_size=16)


def small_unet(seed: int = 0):
    """A random two-level UNet2DModel on 4x8x8 latents, for DDIM sampling/inversion tests."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D")).eval().requires_grad_(False)


class LinearCodec:
    """D(z) = A z + nonlinearity * tanh(A z), E(x) = B x with B A = M symmetric positive definite.

    For the linear case T(z) = M (z - z*) is exactly (1 / lambda_max(M))-cocoercive, so Theorem 1 predicts
    convergence of the forward step for rho < 2 / lambda_max and divergence above it.
    """

    downsample, latent_channels = 2, 4

    def __init__(self, eigenvalues=(0.5, 2.0), nonlinearity: float = 0.0, seed: int = 0, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        n, m = 4 * 2 * 2, 3 * 4 * 4
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        lam = torch.linspace(*eigenvalues, n, dtype=torch.float64)
        self.M = q @ torch.diag(lam) @ q.T
        self.A = torch.randn(m, n, generator=g, dtype=torch.float64) / n**0.5
        self.B = self.M @ torch.linalg.pinv(self.A)
        self.nonlinearity, self.device, self.dtype = nonlinearity, torch.device("cpu"), dtype
        self.beta = 1 / float(lam.max())

    def decode(self, z, chunk_size=None, *, grad=False, check=True):
        with torch.set_grad_enabled(grad):
            az = z.reshape(len(z), -1) @ self.A.T.to(z.dtype)
            return (az + self.nonlinearity * torch.tanh(az)).reshape(len(z), 3, 4, 4)

    def encode(self, x, chunk_size=None, *, check=True, finite=True):
        return (x.reshape(len(x), -1) @ self.B.T.to(x.dtype)).reshape(len(x), 4, 2, 2)

    def problem(self, batch: int = 3, seed: int = 1):
        """Ground-truth latents z* and their images x = D(z*), scaled to lie in [-1, 1]."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(batch, 4, 2, 2, generator=g, dtype=torch.float64)
        z_true = 0.8 * z / float((z.reshape(batch, -1) @ self.A.T).abs().max())  # |A z*| <= 0.8
        return self.decode(z_true).to(self.dtype), z_true.to(self.dtype)


@pytest.fixture
def linear():
    return LinearCodec()
