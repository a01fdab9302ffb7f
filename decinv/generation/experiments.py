"""Experiment inputs shared by the notebooks: model profiles and ground-truth (x, z*) instances.

The paper's protocol (Sec. 4): generate a latent z* with the LDM, decode it, quantise the image to 8 bits,
then invert and compare with z*. The bundled tiny models do exactly that (DDIM sampling with their own UNet).
The profiles with a ``protocol`` do it with the real diffusers pipelines and the paper's prompts, seeds, samplers
and guidance (`decinv.generation.pipelines`): ``"sd21"`` (SD 2.1 base, DDIM-50, CFG 3.0), ``"sd15"`` (InstaFlow, one
rectified-flow step, CFG 1.0) and ``"sd14-video"`` (AnimateDiff on SD 1.4, 16 frames of 320×512, CFG 7.5: the
stand-in for LaVie, whose frames SD 1.4's 2-D autoencoder decodes one by one). Their weights come from the local hub
cache (or a ``save_pretrained`` folder passed as ``source``), and a missing model is an error, never a substitute.
Video instances are (N, F, 3, H, W) with latents (N, F, C, h, w); `Instances.frames` flattens them into N·F
images for analyses written per image (the inversion of a frame-wise autoencoder is the same either way).
``real_instances`` (z* = E(x_real) of real pictures, "on-manifold" latents) is kept for autoencoder-only studies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from decinv import pictures as data
from decinv.core.models import BUNDLED, LatentModel, load_model, load_pipeline
from decinv.generation.diffusion import ddim_invert, ddim_sample
from decinv.generation.instances import Instances, quantize_8bit  # noqa: F401  (re-exported)
from decinv.generation.pipelines import TextToImage, load_text_to_image


@dataclass(frozen=True)
class Profile:
    """A model and its native image size; ``frames`` > 0 marks a video model (decoded frame-wise).

    ``protocol``: the `decinv.generation.pipelines.PROTOCOLS` entry that generates this profile's instances with the real
    text-to-image or text-to-video pipeline (None: the bundled tiny LDM's sampler).
    ``chunk_size``: images (or frames) per autoencoder call that `load_profile` sets as the model's default
    (``LatentModel.chunk_size``): a few 512² images keep a gradient-based run of the SD autoencoder within a 24 GB
    GPU (the paper's Table 2 peak is 11.4 GB for one image with the whole pipeline loaded); None: all at once."""

    model: str
    height: int
    width: int
    frames: int = 0
    protocol: str | None = None
    chunk_size: int | None = None


PROFILES = {
    "tiny": Profile("tiny", 128, 128),  # bundled miniature v2 (x8 and 4 channels, like SD), the default
    "tiny-v2": Profile("tiny-v2", 128, 128),  # the same, by its version name
    "tiny-v1": Profile("tiny-v1", 64, 64),  # bundled miniature v1 (x4), the default until 2026-11-30
    "sd21": Profile("sd21", 512, 512, protocol="sd21", chunk_size=4),  # SD 2.1 base, DDIM-50, CFG 3.0
    "sd15": Profile("sd15", 512, 512, protocol="instaflow", chunk_size=4),  # InstaFlow-0.9B (SD 1.5's VAE), one step, CFG 1.0
    # LaVie stand-in: AnimateDiff on SD 1.4, 16 frames of 320x512 decoded frame-wise by SD 1.4's VAE, CFG 7.5
    "sd14-video": Profile("sd14", 320, 512, frames=16, protocol="animatediff", chunk_size=8),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}.")
    return PROFILES[name]


def load_profile(name: str, device="auto", dtype=None, *, source=None, generation: dict | None = None):
    """(LatentModel, pipeline or None, Profile).

    Bundled (tiny) profiles return their UNet + scheduler. The profiles with a protocol (``"sd21"``, ``"sd15"``,
    ``"sd14-video"``) return the whole generating pipeline (`decinv.generation.pipelines.TextToImage`, or `TextToVideo` for
    the video profile), whose VAE is the returned LatentModel, loaded from the hub cache or from ``source`` (a
    ``save_pretrained`` folder or another repo id). ``generation``: protocol fields to change (e.g.
    ``{"steps": 2, "frames": 2, "height": 16, "width": 16}`` for a tiny random pipeline); None keeps the paper's."""
    profile = get_profile(name)
    if profile.protocol is not None:
        pipeline = load_text_to_image(profile.protocol, source, device=device, dtype=dtype)
        if generation:
            changes = dict(generation)
            said = ", ".join(f"{k}={v}" for k, v in changes.items())
            changes.setdefault("note", f"{pipeline.protocol.note}; CHANGED from the paper's protocol: {said}")
            pipeline = pipeline.with_protocol(**changes)
        pipeline.vae.chunk_size = profile.chunk_size
        return pipeline.vae, pipeline, profile
    with_protocol = ", ".join(k for k, p in PROFILES.items() if p.protocol)
    if source is not None:
        raise ValueError(f"profile {name!r} takes no source; only the profiles with a generation protocol "
                         f"({with_protocol}) load from one.")
    if generation:
        raise ValueError(f"profile {name!r} takes no generation changes; only {with_protocol} do.")
    if profile.model in BUNDLED:
        pipeline = load_pipeline(profile.model, device=device, dtype=dtype)
        return pipeline.vae, pipeline, profile
    return load_model(profile.model, device=device, dtype=dtype), None, profile


@dataclass
class TinyLDM:
    """The bundled tiny LDM behind the interface of the real text-to-image pipelines' watermark protocol.

    ``generate(z_T)`` is the paper's generation, z_T --DDIM-``steps``--> z_0 --D, 8 bit--> x, and
    ``invert_diffusion(z_0)`` its naive DDIM inversion on the same grid (`decinv.generation.diffusion`); both take the
    prompts a text-to-image pipeline needs and ignore them (the tiny UNet is unconditional), so one protocol
    (`decinv.applications.watermark_pipelines.run_watermark`) drives this model and SD 2.1 / InstaFlow alike.
    Shapes: z_T, z_0 (B, C, h, w) with (C, h, w) = ``latent_shape``; x (B, 3, f h, f w) in [-1, 1].
    """

    vae: LatentModel
    unet: object
    scheduler: object
    steps: int = 50
    name: str = "tiny"

    @classmethod
    def from_pipeline(cls, pipeline, steps: int = 50, name: str = "tiny") -> "TinyLDM":
        """Wrap what ``load_profile("tiny")`` returns (a `decinv.core.models.TinyPipeline`), sampling with ``steps``."""
        return cls(pipeline.vae, pipeline.unet, pipeline.scheduler, steps, name)

    conditional = False  # the tiny UNet takes no prompt

    @property
    def description(self) -> str:
        """One line for records (a job's settings): which LDM and which diffusion inversion."""
        return f"bundled LDM {self.name!r}, naive DDIM inversion"

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the initial noise: the UNet's channels and sample size (4, 16, 16 for tiny v2)."""
        side = int(self.unet.config.sample_size)
        return int(self.unet.config.in_channels), side, side

    @torch.no_grad()
    def generate(self, z_T: torch.Tensor, prompts=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, z_0): DDIM sampling from z_T, then x = 8-bit D(z_0) in the autoencoder's dtype."""
        z_0 = ddim_sample(self.unet, self.scheduler, z_T.to(self.vae.device, self.vae.dtype), self.steps)
        return quantize_8bit(self.vae.decode(z_0)).to(self.vae.dtype), z_0

    def invert_diffusion(self, z_0: torch.Tensor, prompts=None) -> torch.Tensor:
        """ẑ_T: naive DDIM inversion of z_0 on the sampler's ``steps``-step grid (`decinv.generation.diffusion.ddim_invert`)."""
        return ddim_invert(self.unet, self.scheduler, z_0.to(self.vae.device, self.vae.dtype), self.steps)


@torch.no_grad()
def generated_instances(model: LatentModel, pipeline, n: int, seed: int = 0, ddim_steps: int = 50,
                        batch: int = 64) -> Instances:
    """z* by DDIM sampling from seeded Gaussian noise with the tiny LDM (`TinyLDM.generate`), x = 8-bit D(z*).

    Shapes: x (n, 3, H, W) with H = W = the UNet's latent side x the autoencoder's downsampling (v2: 16 x 8 = 128),
    z* (n, C, H/f, W/f)."""
    ldm = TinyLDM(model, pipeline.unet, pipeline.scheduler, ddim_steps)
    generator = torch.Generator().manual_seed(seed)
    shape = (n, model.latent_channels, *ldm.latent_shape[1:])
    z_T = torch.randn(shape, generator=generator, dtype=torch.float32).to(model.device, model.dtype)
    x, z = (torch.cat(parts) for parts in zip(*(ldm.generate(c) for c in z_T.split(batch))))
    return Instances(x=x, z_true=z, how=f"DDIM-{ddim_steps} samples of the tiny LDM (seed {seed})")


@torch.no_grad()
def real_instances(model: LatentModel, n: int, height: int, width: int, seed: int = 0) -> Instances:
    """z* = E(x_real) for crops of scikit-image pictures resized to (height, width), x = 8-bit D(z*)."""
    levels = data.pyramid(data.TRAIN_IMAGES + data.HELDOUT_IMAGES)
    side = max(height, width)
    big = [F.interpolate(level[None], scale_factor=side / min(level.shape[1:]) * 1.01, mode="bilinear",
                         antialias=True)[0] if min(level.shape[1:]) < side else level for level in levels]
    crops = data.random_crops(big, n, torch.Generator().manual_seed(seed), height, width)
    crops = crops.to(model.device, model.dtype)
    z = torch.cat([model.encode(c) for c in crops.split(8)])
    x = torch.cat([quantize_8bit(model.decode(c)) for c in z.split(8)])
    return Instances(x=x.to(model.dtype), z_true=z, how=f"on-manifold latents E(x) of real {height}x{width} crops")


def make_instances(name: str, model: LatentModel, pipeline, n: int, seed: int = 0, *, prompts=None) -> Instances:
    """The chapter's test set for profile ``name``, generated by its LDM as in the paper.

    Tiny profiles: DDIM samples of the bundled LDM. ``"sd21"``/``"sd15"``/``"sd14-video"``: the paper's protocol
    on the real pipeline (`decinv.generation.pipelines.TextToImage.instances`: image or clip i from prompt i and seed
    ``seed + i``); ``prompts`` is the paper's prompt set by default (needs ``datasets`` and its cache), or a prompts
    file / list of strings (`decinv.generation.pipelines.load_prompts`). The video profile gives n clips: x (n, F, 3, H, W),
    z_true (n, F, C, h, w). On-manifold latents of real pictures are `real_instances`, never a fallback here."""
    profile = get_profile(name)
    if profile.protocol is not None:
        if not isinstance(pipeline, TextToImage):
            raise ValueError(f"profile {name!r} generates its instances with its text-to-image/video pipeline: pass "
                             f"the pipeline load_profile({name!r}) returns, not {type(pipeline).__name__}.")
        if pipeline.protocol.name != profile.protocol:
            raise ValueError(f"profile {name!r} follows the {profile.protocol!r} protocol, but the pipeline passed "
                             f"runs {pipeline.protocol.name!r}; load it with load_profile({name!r}).")
        if pipeline.vae is not model:
            raise ValueError("model must be the pipeline's own VAE (pipeline.vae), as load_profile returns it.")
        return pipeline.instances(n, seed, prompts)
    if prompts is not None:
        raise ValueError(f"profile {name!r} has no text conditioning; prompts apply to "
                         f"{', '.join(k for k, p in PROFILES.items() if p.protocol)}.")
    if pipeline is None:
        raise ValueError(f"profile {name!r} generates its instances with the bundled LDM's sampler: pass the "
                         f"pipeline load_profile({name!r}) returns (on-manifold latents: real_instances).")
    return generated_instances(model, pipeline, n, seed)


@torch.no_grad()
def camera_pan(model: LatentModel, frames: int, height: int = 64, width: int = 64, picture: str = "astronaut",
               step: int = 4) -> Instances:
    """A video clip: a camera panning ``step`` pixels per frame across a picture; z* = E(frame), x = 8-bit D(z*).

    Shapes (1, F, 3, H, W) and (1, F, C, h, w): one clip of F frames, decoded frame-wise as LaVie does.
    """
    image = data.load_image(picture)
    needed = width + step * (frames - 1)
    scale = max(height / image.shape[1], needed / image.shape[2])
    if scale > 1:
        image = F.interpolate(image[None], scale_factor=scale, mode="bilinear", antialias=True)[0]
    clip = torch.stack([image[:, :height, k * step : k * step + width] for k in range(frames)])[None]
    z = model.encode(clip.to(model.device, model.dtype), chunk_size=8)
    x = quantize_8bit(model.decode(z, chunk_size=8)).to(model.dtype)
    return Instances(x=x, z_true=z, how=f"{frames}-frame pan over {picture!r}, {step} px/frame")
