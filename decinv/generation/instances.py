"""Inverse problems with known answers (x, z*) and the 8-bit rounding that makes them realistic."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round images in [-1, 1] to the 256 levels an 8-bit file can hold (the paper saves and reloads images)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


@dataclass
class Instances:
    """Inverse problems with known answers: images ``x`` (N, 3, H, W) = 8-bit D(z*), and ``z_true`` = z*.

    Video profiles: x (N, F, 3, H, W) and z_true (N, F, C, h, w), one clip per instance.
    ``prompts``/``seeds``: what generated image (clip) i, for the profiles with a protocol (None otherwise)."""

    x: torch.Tensor
    z_true: torch.Tensor
    how: str
    prompts: list | None = None
    seeds: list | None = None

    @property
    def is_video(self) -> bool:
        return self.x.dim() == 5

    def frames(self) -> "Instances":
        """Video clips as images: x (N·F, 3, H, W), z_true (N·F, C, h, w), clip i's frames at rows i·F .. i·F+F-1
        (prompts/seeds repeated per frame). Images are returned unchanged. For a frame-wise (2-D) autoencoder every
        inversion gives the same latents either way (`decinv.invert` flattens the frames itself); only per-instance
        statistics change meaning: per frame instead of per clip."""
        if not self.is_video:
            return self
        n, f = self.x.shape[:2]
        rep = (lambda v: [e for e in v for _ in range(f)]) if f else None
        return Instances(x=self.x.reshape(n * f, *self.x.shape[2:]),
                         z_true=self.z_true.reshape(n * f, *self.z_true.shape[2:]),
                         how=f"{self.how}; the {n} clip(s) of {f} frames taken as {n * f} images",
                         prompts=rep(self.prompts) if self.prompts is not None else None,
                         seeds=rep(self.seeds) if self.seeds is not None else None)
