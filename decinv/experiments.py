"""Experiment inputs shared by the notebooks: model profiles and ground-truth (x, z*) instances.

The paper's protocol (Sec. 4): generate a latent z* with the LDM, decode it, quantise the image to 8 bits,
then invert and compare with z*. The bundled tiny model does exactly that (DDIM sampling with its own UNet).
For the hub profiles the full text-to-image pipelines are out of scope offline, so z* = E(x_real) for real
pictures (an "on-manifold" latent the decoder has seen) and x = 8-bit D(z*): the same inverse problem,
a different distribution of z*; the notebooks say so where it matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from decinv.models import BUNDLED, LatentModel, load_model, load_pipeline


@dataclass(frozen=True)
class Profile:
    """A model and its native image size; ``frames`` > 0 marks a video model (decoded frame-wise)."""

    model: str
    height: int
    width: int
    frames: int = 0


PROFILES = {
    "tiny": Profile("tiny", 64, 64),  # bundled miniature v1 (x4), the default
    "tiny-v1": Profile("tiny-v1", 64, 64),  # the same, by its version name
    "tiny-v2": Profile("tiny-v2", 128, 128),  # bundled miniature v2 (x8 and 4 channels, like SD)
    "sd21": Profile("sd21", 512, 512),
    "sd15": Profile("sd15", 512, 512),  # InstaFlow-0.9B
    "sd14-video": Profile("sd14", 320, 512, frames=16),  # LaVie base: 16 frames of 320x512
}


@dataclass
class Instances:
    """Inverse problems with known answers: images ``x`` (N, 3, H, W) = 8-bit D(z*), and ``z_true`` = z*."""

    x: torch.Tensor
    z_true: torch.Tensor
    how: str


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}.")
    return PROFILES[name]


def load_profile(name: str, device="auto", dtype=None):
    """(LatentModel, pipeline or None, Profile): the bundled (tiny) profiles also return their UNet + scheduler."""
    profile = get_profile(name)
    if profile.model in BUNDLED:
        pipeline = load_pipeline(profile.model, device=device, dtype=dtype)
        return pipeline.vae, pipeline, profile
    return load_model(profile.model, device=device, dtype=dtype), None, profile


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round images in [-1, 1] to the 256 levels an 8-bit file can hold (the paper saves and reloads images)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


@torch.no_grad()
def generated_instances(model: LatentModel, pipeline, n: int, seed: int = 0, ddim_steps: int = 50,
                        batch: int = 64) -> Instances:
    """z* by DDIM sampling from seeded Gaussian noise with the tiny LDM, x = 8-bit D(z*).

    Shapes: x (n, 3, H, W) with H = W = the UNet's latent side x the autoencoder's downsampling (v2: 16 x 8 = 128),
    z* (n, C, H/f, W/f)."""
    from decinv.diffusion import ddim_sample

    generator = torch.Generator().manual_seed(seed)
    side = int(pipeline.unet.config.sample_size)
    shape = (n, model.latent_channels, side, side)
    z_T = torch.randn(shape, generator=generator).to(model.device, model.dtype)
    z = torch.cat([ddim_sample(pipeline.unet, pipeline.scheduler, c, ddim_steps) for c in z_T.split(batch)])
    x = torch.cat([quantize_8bit(model.decode(c)) for c in z.split(batch)])
    return Instances(x=x.to(model.dtype), z_true=z, how=f"DDIM-{ddim_steps} samples of the tiny LDM (seed {seed})")


@torch.no_grad()
def real_instances(model: LatentModel, n: int, height: int, width: int, seed: int = 0) -> Instances:
    """z* = E(x_real) for crops of scikit-image pictures resized to (height, width), x = 8-bit D(z*)."""
    from decinv.tiny import data

    levels = data.pyramid(data.TRAIN_IMAGES + data.HELDOUT_IMAGES)
    side = max(height, width)
    big = [F.interpolate(level[None], scale_factor=side / min(level.shape[1:]) * 1.01, mode="bilinear",
                         antialias=True)[0] if min(level.shape[1:]) < side else level for level in levels]
    crops = data.random_crops(big, n, torch.Generator().manual_seed(seed), height, width)
    crops = crops.to(model.device, model.dtype)
    z = torch.cat([model.encode(c) for c in crops.split(8)])
    x = torch.cat([quantize_8bit(model.decode(c)) for c in z.split(8)])
    return Instances(x=x.to(model.dtype), z_true=z, how=f"on-manifold latents E(x) of real {height}x{width} crops")


def make_instances(name: str, model: LatentModel, pipeline, n: int, seed: int = 0) -> Instances:
    """The chapter's test set for profile ``name``: generated for "tiny", on-manifold for the hub models."""
    profile = get_profile(name)
    if pipeline is not None:
        return generated_instances(model, pipeline, n, seed)
    return real_instances(model, n, profile.height, profile.width, seed)


@torch.no_grad()
def camera_pan(model: LatentModel, frames: int, height: int = 64, width: int = 64, picture: str = "astronaut",
               step: int = 4) -> Instances:
    """A video clip: a camera panning ``step`` pixels per frame across a picture; z* = E(frame), x = 8-bit D(z*).

    Shapes (1, F, 3, H, W) and (1, F, C, h, w): one clip of F frames, decoded frame-wise as LaVie does.
    """
    from decinv.tiny import data

    image = data.load_image(picture)
    needed = width + step * (frames - 1)
    scale = max(height / image.shape[1], needed / image.shape[2])
    if scale > 1:
        image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", antialias=True)[0]
    clip = torch.stack([image[:, :height, k * step : k * step + width] for k in range(frames)])[None]
    z = model.encode(clip.to(model.device, model.dtype), chunk_size=8)
    x = quantize_8bit(model.decode(z, chunk_size=8)).to(model.dtype)
    return Instances(x=x, z_true=z, how=f"{frames}-frame pan over {picture!r}, {step} px/frame")
