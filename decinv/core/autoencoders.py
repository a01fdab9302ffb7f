"""Which diffusers autoencoders decinv supports, and the latent convention each one's pipeline uses.

A diffusers autoencoder returns a *raw* latent (the posterior mode, or a deterministic code); the pipeline built
around it normalises that raw latent before its denoiser sees it, and undoes the normalisation before decoding.
decinv's latents are always the *normalised* ones, so an inverted latent is the one the model's own diffusion model
works with. The normalisations found in diffusers 0.42's pipelines (paths below are under ``diffusers/pipelines/``):

============  ==========================================  ===================================================
kind          z = normalise(raw)                           followed by
============  ==========================================  ===================================================
scale         raw · sf                                     stable_diffusion_xl/pipeline_stable_diffusion_xl_img2img.py:751 (SD 1.x/2.x too)
shift-scale   (raw − shift) · sf                           stable_diffusion_3/pipeline_stable_diffusion_3_img2img.py:702, flux/pipeline_flux_img2img.py:474
mean-std-sf   (raw − mean) · sf / std                      stable_diffusion_xl/pipeline_stable_diffusion_xl_img2img.py:749, ltx/pipeline_ltx.py:461
mean-std      (raw − mean) / std                           wan/pipeline_wan_video2video.py:431-435, qwenimage/pipeline_qwenimage_img2img.py:247-251
batch-norm    (patchify₂ₓ₂(raw) − μ_bn) / √(σ²_bn + eps)   flux2/pipeline_flux2.py:611-617 (μ, σ² = the VAE's ``bn`` running stats)
============  ==========================================  ===================================================

``sf`` is ``config.scaling_factor``, ``shift`` ``config.shift_factor`` (None → 0). ``mean``/``std`` are per channel:
from the config (``latents_mean``/``latents_std``: AutoencoderKL with statistics, as SDXL's pipeline reads them, and
AutoencoderKLWan), or from registered buffers (``AutoencoderKLLTXVideo.latents_mean``/``latents_std``, which
``ltx/pipeline_ltx.py:826`` passes). An AutoencoderKL with statistics follows SDXL's rule (the statistics win over a
shift factor, which SDXL ignores).

Each supported class is described by an `AutoencoderSpec`: how to read its raw latent, whether it is temporal, its
compression ratios, and the quirks that change E∘D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from decinv.core.validation import UnsupportedConfigError


class UnsupportedAutoencoderError(ValueError):
    """The autoencoder's class is not one decinv knows how to normalise and decode."""


@dataclass
class LatentConvention:
    """The per-channel affine map between a raw latent and the pipeline's latent: z = (raw − offset) · gain.

    Every kind in the module table is this map with ``offset``/``gain`` set accordingly (``gain = sf / std`` for
    mean-std-sf, ``1 / std`` for mean-std, ``1 / √(σ² + eps)`` for batch-norm); ``patchify`` is FLUX.2's 2×2
    space-to-channel reshape (flux2/pipeline_flux2.py:457-463), applied before the statistics.
    Tensors are in diffusers' layout: (N, C, h, w) for images, (N, C, f, h, w) for video.
    """

    kind: str
    offset: torch.Tensor  # (C,) in the normalised layout's channels
    gain: torch.Tensor  # (C,)
    patchify: bool = False
    formula: str = ""

    def _view(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(like.device, like.dtype).view(1, -1, *([1] * (like.dim() - 2)))

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """raw latent of the autoencoder -> the pipeline's latent."""
        if self.patchify:
            n, c, h, w = raw.shape
            raw = raw.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c * 4, h // 2, w // 2)
        return (raw - self._view(self.offset, raw)) * self._view(self.gain, raw)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """The pipeline's latent -> raw latent for the decoder (the inverse map)."""
        raw = z / self._view(self.gain, z) + self._view(self.offset, z)
        if self.patchify:
            n, c, h, w = raw.shape
            raw = raw.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c // 4, h * 2, w * 2)
        return raw


def _stats(values, channels: int, name: str, cls: str, *, positive: bool = False) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() != channels:
        raise UnsupportedAutoencoderError(f"{cls}: {name} has {t.numel()} entries but the latent has {channels} "
                                          f"channels; fix the config's {name}.")
    if not bool(torch.isfinite(t).all()) or (positive and not bool((t > 0).all())):
        raise UnsupportedConfigError(f"{cls}: {name} = {t.tolist()} must be finite{' and positive' if positive else ''}"
                                     f" (the pipeline divides by it); fix the config's {name}.")
    return t


def _factor(config, name: str, cls: str, default: float, *, positive: bool) -> float:
    """``config.<name>`` as a float; absent/None gives ``default``. A zero, negative (scale) or non-finite value is
    refused rather than replaced: ``scaling_factor=0`` used to become 1.0 silently."""
    value = getattr(config, name, None)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        raise UnsupportedConfigError(f"{cls}: {name}={value!r} in its config; it must be a "
                                     f"{'positive ' if positive else ''}finite number (SD's scaling_factor is "
                                     f"0.18215), or absent.")
    return float(value)


def latent_convention(vae) -> LatentConvention:
    """The convention of ``vae``'s pipeline, from its class, config and buffers (see the module table).

    Statistics and factors are checked on the way: a scale or standard deviation that is not finite and positive,
    or a mean/shift that is not finite, is refused (`decinv.core.validation.UnsupportedConfigError`) naming the entry."""
    cls, config = type(vae).__name__, vae.config
    sf = _factor(config, "scaling_factor", cls, 1.0, positive=True)
    channels = latent_channels(vae)
    if cls == "TAESD":  # original TAESD checkpoints: the raw latents (decinv.core.taesd.PIPELINE_LATENTS maps them)
        return LatentConvention("raw", torch.zeros(channels), torch.ones(channels),
                                formula=f"raw (TAESD's own; {config.model}'s pipeline uses {config.pipeline_latents})")
    if cls == "AutoencoderKLFlux2":
        bn = vae.bn
        var = bn.running_var.float() + float(config.batch_norm_eps)
        if not bool(torch.isfinite(var).all() and (var > 0).all() and torch.isfinite(bn.running_mean).all()):
            raise UnsupportedConfigError(f"{cls}: its batch-norm statistics (vae.bn.running_mean/running_var, the "
                                         "pipeline's latent normalisation) are not finite with a positive variance; "
                                         "load the checkpoint's own statistics.")
        std = torch.sqrt(var)
        return LatentConvention("batch-norm", bn.running_mean.float().clone(), 1 / std, patchify=True,
                                formula="(patchify(raw) - bn.running_mean) / sqrt(bn.running_var + batch_norm_eps)")
    if cls == "AutoencoderKLLTXVideo":  # statistics are buffers, not config
        mean = _stats(vae.latents_mean.float().clone(), channels, "latents_mean (buffer)", cls)
        std = _stats(vae.latents_std.float().clone(), channels, "latents_std (buffer)", cls, positive=True)
        return LatentConvention("mean-std-sf", mean, sf / std, formula="(raw - latents_mean) * scaling_factor / latents_std")
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if cls == "AutoencoderKLWan":  # Wan has no scaling_factor: (raw - mean) / std
        mean, std = _stats(mean, channels, "latents_mean", cls), _stats(std, channels, "latents_std", cls,
                                                                         positive=True)
        return LatentConvention("mean-std", mean, 1 / std, formula="(raw - latents_mean) / latents_std")
    if mean is not None and std is not None:
        mean, std = _stats(mean, channels, "latents_mean", cls), _stats(std, channels, "latents_std", cls,
                                                                         positive=True)
        return LatentConvention("mean-std-sf", mean, sf / std, formula="(raw - latents_mean) * scaling_factor / latents_std")
    if (mean is None) != (std is None):
        raise UnsupportedAutoencoderError(f"{cls}: the config sets only one of latents_mean/latents_std; pipelines "
                                          "use both or neither. Set both or remove the one.")
    shift = _factor(config, "shift_factor", cls, 0.0, positive=False)
    ones = torch.ones(channels)
    if shift:
        return LatentConvention("shift-scale", ones * shift, ones * sf, formula="(raw - shift_factor) * scaling_factor")
    return LatentConvention("scale", ones * 0.0, ones * sf, formula="raw * scaling_factor")


def latent_channels(vae) -> int:
    """Channels of the *raw* latent (before FLUX.2's patchify)."""
    config = vae.config
    return int(getattr(config, "z_dim", None) or config.latent_channels)  # Wan calls it z_dim


@dataclass
class AutoencoderSpec:
    """How decinv drives one diffusers autoencoder class.

    ``raw_latent``: which field of ``vae.encode(x)`` is E's raw output ("mode" = ``latent_dist.mode()``, the paper's
    deterministic E; "latents"/"latent": the deterministic code of TAESD / DC-AE). ``temporal``: a 3-D causal video
    autoencoder whose input is (N, 3, F, H, W) and latent (N, C, f, h, w) with f = (F − 1) / t + 1.
    ``quirks``: what in the class changes E∘D relative to a plain autoencoder, and how decinv handles it.
    """

    name: str
    raw_latent: str
    temporal: bool = False
    quirks: str = ""
    decode_kwargs: dict = field(default_factory=dict)


SPECS = {
    "AutoencoderKL": AutoencoderSpec("AutoencoderKL", "mode"),
    "AutoencoderTiny": AutoencoderSpec(
        "AutoencoderTiny", "latents",
        quirks="deterministic encoder (no posterior); its decoder soft-clamps the raw latent with 3·tanh(raw/3) "
               "(diffusers models/autoencoders/vae.py, DecoderTiny.forward), so D is flat for |raw| >> 3."),
    "AutoencoderDC": AutoencoderSpec("AutoencoderDC", "latent", quirks="deterministic encoder (no posterior)."),
    "TAESD": AutoencoderSpec(
        "TAESD", "latents",
        quirks="an original TAESD-family checkpoint pair (decinv.core.taesd): deterministic encoder; its decoder soft-clamps "
               "the raw latent with 3·tanh(raw/3), so D is flat for |raw| >> 3; decinv's latents are TAESD's raw ones "
               "(scale 1), not the pipeline's normalised latents (decinv.core.taesd.PIPELINE_LATENTS)."),
    "AutoencoderKLFlux2": AutoencoderSpec(
        "AutoencoderKLFlux2", "mode",
        quirks="latents are 2x2-patchified (4x channels, half the side) and batch-norm normalised, as FLUX.2's "
               "pipeline gives them to its transformer."),
    "AutoencoderKLWan": AutoencoderSpec(
        "AutoencoderKLWan", "mode", temporal=True,
        quirks="its decoder clamps the output to [-1, 1] (autoencoder_kl_wan.py, _decode), so D has zero gradient "
               "where a pixel saturates; encoding runs in causal chunks of 1, 4, 4, ... frames and decoding one latent "
               "frame at a time, with a feature cache across chunks, so a video is never split across calls."),
    "AutoencoderKLLTXVideo": AutoencoderSpec(
        "AutoencoderKLLTXVideo", "mode", temporal=True,
        quirks="statistics are buffers (vae.latents_mean/latents_std); with timestep_conditioning the pipeline adds "
               "decode-time noise (pipeline_ltx.py:830-845): decinv decodes at timestep 0 with no noise, so D is a fixed "
               "function; decoder_inject_noise blocks draw torch.randn inside the decoder: decinv runs each decode "
               "under a forked RNG seeded 0, so the same noise is used at every call."),
}


def spec_for(class_name: str) -> AutoencoderSpec:
    """The spec of a supported class, or an error naming the class and the supported ones."""
    if class_name not in SPECS:
        raise UnsupportedAutoencoderError(
            f"{class_name} is not supported by decinv: its latent convention and decoder quirks are not described. "
            f"Supported classes: {', '.join(SPECS)}. Pass one of these (a save_pretrained folder whose config.json "
            "names it in _class_name, or an instance).")
    return SPECS[class_name]


def compression(vae) -> tuple[int, int]:
    """(spatial, temporal) compression ratio of the raw latent, from the model as diffusers builds it."""
    cls, config = type(vae).__name__, vae.config
    if cls == "AutoencoderKLWan":
        spatial = 2 ** (len(config.dim_mult) - 1) * (config.patch_size or 1)
        return spatial, 2 ** sum(bool(t) for t in config.temperal_downsample)
    if cls == "AutoencoderKLLTXVideo":
        return int(vae.spatial_compression_ratio), int(vae.temporal_compression_ratio)
    if cls == "AutoencoderTiny":
        return int(config.upsampling_scaling_factor) ** (len(config.encoder_block_out_channels) - 1), 1
    if cls == "AutoencoderDC":
        return int(vae.spatial_compression_ratio), 1
    if cls == "TAESD":
        return int(config.downsample), 1
    return 2 ** (len(config.block_out_channels) - 1), 1
