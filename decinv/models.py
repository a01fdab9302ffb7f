"""Loading a latent diffusion model's autoencoder and using it in the paper's latent space.

The paper works with the *scaled* latent: z = scaling_factor * mode(q(z|x)) (SD: 0.18215), and images x in [-1, 1].
`LatentModel` wraps a diffusers ``AutoencoderKL`` so that ``encode`` is E and ``decode`` is D in that convention,
with video (a frame axis) flattened into the batch, and optional chunking to bound memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from decinv.validation import check_images, check_latents, resolve_device

# name -> (hub id, subfolder). The paper's three LDMs (paper-notes section 1, 5):
PRESETS = {
    # Stable Diffusion 2.1 base (512x512, latent 4x64x64), as in the official code's main_fsm.py.
    "sd21": ("stabilityai/stable-diffusion-2-1-base", "vae"),
    # InstaFlow-0.9B, distilled from SD1.5, whose autoencoder it keeps unchanged.
    "sd15": ("XCLiu/instaflow_0_9B_from_sd_1_5", "vae"),
    # LaVie's base text-to-video model decodes each frame with Stable Diffusion 1.4's autoencoder.
    "sd14": ("CompVis/stable-diffusion-v1-4", "vae"),
}
# The bundled miniature LDMs, by name -> version folder under decinv/tiny/weights. "tiny" is the default, v1 (x4,
# 64x64). v2 (x8 and 4 channels like Stable Diffusion, 128x128) ships beside it as "tiny-v2": its autoencoder is in
# the paper's inversion regime on its own latents, but it met no more of the model card's targets than v1 on the
# generated samples of its small denoiser, so it is not the default (see the model card).
BUNDLED = {"tiny": "v1", "tiny-v1": "v1", "tiny-v2": "v2"}


def tiny_dir(name: str = "tiny") -> Path:
    """Folder of a bundled model (``"tiny"`` = ``"tiny-v1"``, or ``"tiny-v2"``): vae/, unet/, scheduler/, properties."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled model {name!r}; choose one of {', '.join(BUNDLED)}.")
    return Path(__file__).parent / "tiny" / "weights" / BUNDLED[name]


TINY_DIR = tiny_dir("tiny")  # the default bundled model's folder


class ModelNotAvailableError(RuntimeError):
    """The requested weights are neither bundled, on disk, nor reachable."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


class LatentModel:
    """E and D of an ``AutoencoderKL`` in the scaled latent space: ``z = scaling_factor * (mode - shift)``.

    ``encode(x)``: images (B, 3, H, W) or video (B, F, 3, H, W) in [-1, 1] -> latents (B, [F,] C, H/f, W/f).
    ``decode(z)``: the inverse direction, unclamped (the paper's D). Both run without autograd unless asked
    (``grad=True`` in ``decode`` for the gradient-based baseline). The VAE's weights are frozen
    (``requires_grad_(False)``) so backward passes compute gradients for z only.
    """

    def __init__(self, vae, name: str = "custom"):
        self.vae = vae.eval().requires_grad_(False)
        self.name = name
        config = vae.config
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.latent_channels = int(config.latent_channels)
        self.downsample = 2 ** (len(config.block_out_channels) - 1)
        param = next(vae.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._apply_layout()

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.vae.parameters())
        return (f"LatentModel({self.name!r}, {params / 1e6:.2f} M params, x{self.downsample} -> "
                f"{self.latent_channels} channels, scaling_factor={self.scaling_factor:.5g}, "
                f"device={self.device}, dtype={self.dtype})")

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "LatentModel":
        """Move/cast the VAE in place (no copy is kept) and return self."""
        self.device = resolve_device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        self.vae.to(self.device)
        if dtype is not None:
            self.vae.to(dtype)
        self._apply_layout()
        return self

    def _apply_layout(self) -> None:
        # Half-precision convolutions on CPU are only tolerable in channels_last (5-7x vs ~100x slower than fp32).
        half_on_cpu = self.device.type == "cpu" and self.dtype in (torch.float16, torch.bfloat16)
        self.memory_format = torch.channels_last if half_on_cpu else torch.contiguous_format
        self.vae.to(memory_format=self.memory_format)

    def _prepare(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(device=self.device, dtype=self.dtype).contiguous(memory_format=self.memory_format)

    def encode(self, x: torch.Tensor, chunk_size: int | None = None, *, check: bool = True) -> torch.Tensor:
        """E(x): scaled posterior mode. ``chunk_size`` frames/images go through the encoder at a time."""
        if check:
            check_images(x, self.downsample)
        with torch.no_grad():
            return self._per_frame(x, chunk_size, self._encode4)

    def decode(self, z: torch.Tensor, chunk_size: int | None = None, *, grad: bool = False,
               check: bool = True) -> torch.Tensor:
        """D(z) in [-1, 1] (unclamped). ``grad=True`` keeps the graph for backpropagation to z."""
        if check:
            check_latents(z, self.latent_channels)
        with torch.set_grad_enabled(grad):
            return self._per_frame(z, chunk_size, self._decode4)

    def _encode4(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.vae.encode(self._prepare(x)).latent_dist.mode()
        return (mode - self.shift_factor) * self.scaling_factor

    def _decode4(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(self._prepare(z / self.scaling_factor + self.shift_factor)).sample

    @staticmethod
    def _per_frame(t: torch.Tensor, chunk_size: int | None, fn) -> torch.Tensor:
        lead = t.shape[:-3]
        flat = t.reshape(-1, *t.shape[-3:])
        chunks = flat.split(chunk_size) if chunk_size else (flat,)
        out = torch.cat([fn(c) for c in chunks]) if len(chunks) > 1 else fn(flat)
        return out.reshape(*lead, *out.shape[1:])


def load_model(source, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> LatentModel:
    """A `LatentModel` from a bundled miniature (``"tiny"``, ``"tiny-v2"``), a preset (``"sd21"``, ``"sd15"``, ``"sd14"``), a hub id, a local
    ``save_pretrained`` folder, or an ``AutoencoderKL`` instance. ``device`` None/"auto" picks CUDA when present."""
    from diffusers import AutoencoderKL

    target_device = resolve_device(device)
    if isinstance(source, LatentModel):
        return source.to(target_device, dtype)
    if isinstance(source, AutoencoderKL):
        vae, name = source, "custom"
    elif not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_model expects a name, path or diffusers AutoencoderKL, got {type(source).__name__}.")
    else:
        vae, name = _load_vae(str(source)), str(source)
    return LatentModel(vae, name=name).to(target_device, dtype)


def _load_vae(source: str):
    from diffusers import AutoencoderKL

    if source in BUNDLED:
        folder = tiny_dir(source)
        if not (folder / "vae" / "config.json").exists():
            raise ModelNotAvailableError(
                f"The bundled model {source!r} is not installed (expected {folder / 'vae'}). Train it with "
                f"`python -m decinv.tiny.train all --recipe {BUNDLED[source]}`, or reinstall decinv from a full checkout."
            )
        return AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").exists() else path
        if not (folder / "config.json").exists():
            raise ModelNotAvailableError(
                f"{path} is a folder but holds no AutoencoderKL (no config.json there or in {path / 'vae'}). "
                "Point to a folder written by AutoencoderKL.save_pretrained or a pipeline's save_pretrained."
            )
        return AutoencoderKL.from_pretrained(folder, local_files_only=True)
    repo, subfolder = PRESETS.get(source, (source, None))
    return _from_hub(repo, subfolder, preset=source if source in PRESETS else None)


def _from_hub(repo: str, subfolder: str | None, preset: str | None):
    """Try the repo's ``vae`` subfolder (pipelines), then its root (bare VAE repos); one clear error if neither."""
    from diffusers import AutoencoderKL

    label = f"{preset!r} ({repo})" if preset else repo
    attempts = [subfolder] if subfolder else ["vae", None]
    errors = []
    for sub in attempts:
        try:
            return AutoencoderKL.from_pretrained(repo, subfolder=sub, local_files_only=_offline())
        except (OSError, ValueError) as error:  # hub misses surface as OSError subclasses in diffusers
            errors.append(f"{repo}{'/' + sub if sub else ''}: {str(error).splitlines()[0]}")
    how = (
        "The hub is set offline (HF_HUB_OFFLINE=1) and the weights are not in the local cache. "
        if _offline() else "It could not be downloaded (no network, a typo, or a gated repo needing `hf auth login`). "
    )
    raise ModelNotAvailableError(
        f"Cannot load the autoencoder of {label}. {how}Fixes: download it once on a connected machine "
        f"(`hf download {repo}`), pass a local folder written by save_pretrained, or use load_model('tiny') "
        f"for the bundled model. Details: {'; '.join(errors)}"
    ) from None


@dataclass
class TinyPipeline:
    """The bundled miniature LDM: autoencoder (as a `LatentModel`), latent UNet and DDIM scheduler."""

    vae: LatentModel
    unet: object
    scheduler: object


def load_pipeline(source: str = "tiny", *, device=None, dtype=None) -> TinyPipeline:
    """VAE + unconditional ``UNet2DModel`` + ``DDIMScheduler`` of a bundled miniature (``"tiny"`` = ``"tiny-v1"``,
    the default; ``"tiny-v2"``), offline."""
    from diffusers import DDIMScheduler, UNet2DModel

    if source not in BUNDLED:
        raise ValueError(f"load_pipeline only knows the bundled models ({', '.join(BUNDLED)}), not {source!r}; "
                         "for other models load the autoencoder with load_model.")
    folder = tiny_dir(source)
    vae = load_model(source, device=device, dtype=dtype)
    if not (folder / "unet" / "config.json").exists():
        raise ModelNotAvailableError(f"The bundled model's UNet is not installed (expected {folder / 'unet'}); "
                                     f"train it with `python -m decinv.tiny.train all --recipe {BUNDLED[source]}`.")
    unet = UNet2DModel.from_pretrained(folder / "unet", local_files_only=True, torch_dtype=vae.dtype)
    unet = unet.to(vae.device).eval().requires_grad_(False)
    scheduler = DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    return TinyPipeline(vae=vae, unet=unet, scheduler=scheduler)
