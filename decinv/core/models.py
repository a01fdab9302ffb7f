"""Loading a latent diffusion model's autoencoder and using it in the paper's latent space.

The paper works with the *scaled* latent: z = scaling_factor * mode(q(z|x)) (SD: 0.18215), and images x in [-1, 1].
`LatentModel` wraps a diffusers autoencoder (the classes in `decinv.core.autoencoders.SPECS`) so that ``encode`` is E and
``decode`` is D in the latent convention of the model's own pipeline (`decinv.core.autoencoders.latent_convention`):
frames flattened into the batch for image autoencoders, whole videos for temporal ones, optional chunking to bound
memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from decinv.core import ambient
from decinv.core.autoencoders import (SPECS, UnsupportedAutoencoderError, compression, latent_channels,
                                 latent_convention, spec_for)
from decinv.core.taesd import is_taesd_source, load_taesd
from decinv.core.validation import UnsupportedConfigError, check_frames, check_images, check_latents, resolve_device

TILING_FLAGS = ("use_tiling", "use_framewise_encoding", "use_framewise_decoding")
"""Attributes of diffusers autoencoders that switch tiled (spatial) or frame-batched (temporal) encoding/decoding on
(``vae.enable_tiling()``; LTX's ``use_framewise_*``). Tiles overlap and are blended, so a tiled E and D are other
functions than the model's, and LTX's temporal tiling splits a video on both sides with different frame batches
(its encoder even reads ``use_framewise_decoding``): E∘D would not be the map the method and its theory assume.
`LatentModel` refuses them; ``chunk_size`` bounds memory without changing the result. ``use_slicing`` (one image or
video per call) is supported: it gives the same latents as one batched call."""

# name -> (hub id, subfolder). The paper's three LDMs (paper-notes section 1, 5):
PRESETS = {
    # Stable Diffusion 2.1 base (512x512, latent 4x64x64), as in the official code's main_fsm.py.
    "sd21": ("stabilityai/stable-diffusion-2-1-base", "vae"),
    # InstaFlow-0.9B, distilled from SD1.5, whose autoencoder it keeps unchanged.
    "sd15": ("XCLiu/instaflow_0_9B_from_sd_1_5", "vae"),
    # LaVie's base text-to-video model decodes each frame with Stable Diffusion 1.4's autoencoder.
    "sd14": ("CompVis/stable-diffusion-v1-4", "vae"),
}
# The bundled miniature LDMs, by name -> version folder under decinv/tiny/weights. "tiny" is the default, v2 (x8 and
# 4 channels like Stable Diffusion, 128x128, a ReLU autoencoder), also called "tiny-v2": on its own generated samples
# it is in the paper's inversion regime and meets more of the model card's targets than v1 (x4, 64x64), the default
# until 2026-11-30, which stays loadable as "tiny-v1" (see the model card).
BUNDLED = {"tiny": "v2", "tiny-v1": "v1", "tiny-v2": "v2"}


def tiny_dir(name: str = "tiny") -> Path:
    """Folder of a bundled model (``"tiny"`` = ``"tiny-v2"``, or ``"tiny-v1"``): vae/, unet/, scheduler/, properties."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled model {name!r}; choose one of {', '.join(BUNDLED)}.")
    return Path(__file__).parent.parent / "tiny" / "weights" / BUNDLED[name]  # decinv/core/models.py -> decinv/tiny


TINY_DIR = tiny_dir("tiny")  # the default bundled model's folder


class ModelNotAvailableError(RuntimeError):
    """The requested weights are neither bundled, on disk, nor reachable."""


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


class NonFiniteLatentError(RuntimeError):
    """E(x) or D(z) overflowed (e.g. a 16-bit VAE whose activations exceed 65504): no latent is returned."""


class LatentModel:
    """E and D of a diffusers autoencoder in the latent space its own pipeline uses (see `decinv.core.autoencoders`).

    Image autoencoders (AutoencoderKL, AutoencoderTiny, AutoencoderDC, AutoencoderKLFlux2):
    ``encode(x)``: images (B, 3, H, W) or video (B, F, 3, H, W) in [-1, 1] -> latents (B, [F,] C, H/f, W/f), the
    frames of a video encoded independently (flattened into the batch).
    Temporal (3-D causal video) autoencoders (AutoencoderKLWan, AutoencoderKLLTXVideo): ``encode(x)`` takes video
    (B, F, 3, H, W) with F = t·k + 1 frames (t = ``temporal_compression``, 4 for Wan 2.1 and LTX) and returns
    latents (B, k + 1, C, H/f, W/f): the latent has its own frame count. Diffusers' own layout (B, C, F, H, W) is
    used only inside; the public one keeps frames before channels like images.
    ``decode(z)``: the inverse direction, as the model's decoder computes it (unclamped for AutoencoderKL, the paper's
    D; the quirks of other classes are in ``spec.quirks``). Both run without autograd unless asked (``grad=True`` in
    ``decode`` for the gradient-based baseline). The weights are frozen, so backward passes reach z only.
    ``chunk_size``: images or frames per call for image autoencoders; whole *videos* per call for temporal ones (a
    temporal encoder/decoder's output depends on how a video is chunked, so a video is never split). When a call
    passes none, the attribute ``chunk_size`` applies (None: everything in one call); `decinv.generation.experiments.load_profile`
    sets it for the hub profiles, so that a chapter's whole instance set (e.g. 48 images of 512²) does not go through
    the autoencoder at once on a GPU. Set ``model.chunk_size = k`` to fit another GPU; results do not depend on it.

    A non-finite E(x) from a finite x (16-bit overflow) raises `NonFiniteLatentError` instead of returning NaN; with
    ``upcast=True`` a float16 request on a VAE whose config sets ``force_upcast`` keeps it in float32, as diffusers
    pipelines do (stable_diffusion_xl/pipeline_stable_diffusion_xl.py:1264-1268, ``needs_upcasting``).

    Ambient torch state (`decinv.core.ambient`): E and D always run in ``dtype`` (a caller's ``torch.autocast`` is switched
    off inside, with an `decinv.core.ambient.AmbientStateWarning`), in eval mode with frozen weights (a VAE put back in
    train mode or given trainable weights after wrapping is evaluated as if it were not, and restored), and
    ``decode(grad=True)`` builds its graph even inside ``torch.no_grad()``/``torch.inference_mode()``. A VAE cast or
    moved behind the wrapper's back (``model.vae.half()``) is noticed at the next call: ``dtype``/``device`` follow
    its weights. Tiled encoding/decoding (`TILING_FLAGS`) is refused with an `UnsupportedConfigError`.
    """

    def __init__(self, vae, name: str = "custom", *, upcast: bool = False):
        self.spec = spec_for(type(vae).__name__)
        self.vae = vae.eval().requires_grad_(False)
        self.name, self.upcast, self.upcast_from = name, upcast, None
        self.chunk_size: int | None = None  # default images/frames (temporal: videos) per call; None = all at once
        config = vae.config
        self.convention = latent_convention(vae)
        self.scaling_factor = float(getattr(config, "scaling_factor", None) or 1.0)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.force_upcast = bool(getattr(config, "force_upcast", False))
        self.temporal = self.spec.temporal
        spatial, self.temporal_compression = compression(vae)
        patch = 2 if self.convention.patchify else 1
        self.latent_channels = latent_channels(vae) * patch * patch
        self.downsample = spatial * patch
        param = next(vae.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._apply_layout()

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.vae.parameters())
        video = f", temporal x{self.temporal_compression} (F = {self.temporal_compression}k+1 -> k+1)" if self.temporal else ""
        up = f", {self.upcast_from} requested, run in float32 (force_upcast)" if self.upcast_from else ""
        kind = type(self.vae).__name__
        if kind == "TAESD":
            kind = f"TAESD {self.vae.config.variant} ({self.vae.config.model}, original checkpoints)"
        return (f"LatentModel({self.name!r}, {kind}, {params / 1e6:.2f} M params, x{self.downsample} "
                f"-> {self.latent_channels} channels{video}, latents {self.convention.formula}, "
                f"scaling_factor={self.scaling_factor:.5g}, device={self.device}, dtype={self.dtype}{up})")

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a video of ``frames`` frames: (F - 1) / t + 1 for a temporal autoencoder, else F."""
        return (frames - 1) // self.temporal_compression + 1 if self.temporal else frames

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "LatentModel":
        """Move/cast the VAE in place (no copy is kept) and return self. With ``upcast=True`` ``float16``
        on a VAE whose config sets ``force_upcast`` leaves it in float32 (recorded in ``upcast_from``)."""
        self.device = resolve_device(device) if device is not None else self.device
        if dtype == torch.float16 and self.upcast and self.force_upcast:  # the pipelines' rule: fp16 only
            self.upcast_from, dtype = dtype, torch.float32
        elif dtype is not None:
            self.upcast_from = None
        self.dtype = dtype or self.dtype
        self.vae.to(self.device)
        if dtype is not None and any(p.dtype != dtype for p in self.vae.parameters()):
            self.vae.to(dtype)  # only when needed: diffusers logs a warning on every cast
        self._apply_layout()
        return self

    def _apply_layout(self) -> None:
        # Half-precision 2-D convolutions on CPU are only tolerable in channels_last (5-7x vs ~100x slower than fp32).
        half_on_cpu = self.device.type == "cpu" and self.dtype in (torch.float16, torch.bfloat16)
        self.memory_format = torch.channels_last if half_on_cpu and not self.temporal else torch.contiguous_format
        self.vae.to(memory_format=self.memory_format)

    def _prepare(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(device=self.device, dtype=self.dtype)
        return t.contiguous(memory_format=self.memory_format) if t.dim() == 4 else t.contiguous()

    def _check_video(self, t: torch.Tensor, what: str) -> None:
        if not self.temporal:
            return
        if t.dim() != 5:
            raise ValueError(
                f"{type(self.vae).__name__} is a temporal (3-D) autoencoder: it encodes whole videos, so {what} must "
                f"have shape (B, F, ...) with a frame axis, got {tuple(t.shape)}. A single image is a one-frame video: "
                "x[:, None].")
        if what == "images":
            check_frames(t.shape[1], self.temporal_compression, type(self.vae).__name__)

    def sync(self) -> "LatentModel":
        """Make ``dtype``/``device`` those of the VAE's weights again if they were cast or moved directly
        (``model.vae.half()``), so that inputs are cast to what really runs and results record it; check that no
        tiling is switched on (`TILING_FLAGS`). Every ``encode``/``decode`` call does this first."""
        param = next(self.vae.parameters(), None)
        if param is not None:
            same_device = param.device.type == self.device.type and self.device.index in (None, param.device.index)
            if param.dtype != self.dtype or not same_device:
                self.device = self.device if same_device else param.device
                self.dtype, self.upcast_from = param.dtype, None
                self._apply_layout()
        on = [flag for flag in TILING_FLAGS if getattr(self.vae, flag, False)]
        if on:
            raise UnsupportedConfigError(
                f"{type(self.vae).__name__} has {', '.join(f'{flag}=True' for flag in on)}: tiled encoding/decoding "
                "blends overlapping tiles (and LTX's frame-wise mode splits videos differently on the two sides), so "
                "E and D would not be the model's functions and the inversion would solve another problem. Switch it "
                "off (vae.disable_tiling(); for LTX also vae.use_framewise_encoding = vae.use_framewise_decoding = "
                "False) and bound memory with chunk_size instead, which does not change the result.")
        return self

    def _guard(self, what: str):
        return ambient.guarded(self.device, self.dtype, self.vae, what=what,
                               fix="load the model in it: decinv.load_model(..., dtype=torch.{dtype}) or "
                                   "model.to(dtype=torch.{dtype})")

    def encode(self, x: torch.Tensor, chunk_size: int | None = None, *, check: bool = True,
               finite: bool = True) -> torch.Tensor:
        """E(x) in the pipeline's latent convention. ``chunk_size`` images/frames (temporal: videos) per call.
        Raises `NonFiniteLatentError` if a finite x gives a non-finite latent (16-bit overflow), unless ``finite``
        is False: the solvers' E(D(z)) inside an iteration passes False, so that an overflow mid-run is reported by
        the run's status ("failed ...", with the last finite iterate) instead of discarding the run."""
        if check:
            check_images(x, self.downsample)
        self._check_video(x, "images")
        self.sync()
        with torch.no_grad(), self._guard("LatentModel.encode"):
            z = self._batched(x, chunk_size, self._encode_items)
        if finite and not bool(torch.isfinite(z).all()) and bool(torch.isfinite(x).all()):
            hint = ("Its config sets force_upcast=True: diffusers pipelines run it in float32 "
                    "(load_model(..., upcast=True) does the same), or load it with dtype=torch.float32."
                    if self.force_upcast else "Load it with dtype=torch.float32.")
            raise NonFiniteLatentError(f"E(x) is not finite for a finite x: {type(self.vae).__name__} overflows in "
                                       f"{self.dtype}. {hint}")
        return z

    def decode(self, z: torch.Tensor, chunk_size: int | None = None, *, grad: bool = False,
               check: bool = True) -> torch.Tensor:
        """D(z) in [-1, 1] (unclamped unless the class clamps). ``grad=True`` keeps the graph for backprop to z."""
        if check:
            check_latents(z, self.latent_channels)
        self._check_video(z, "latents")
        self.sync()
        with (ambient.autograd() if grad else torch.no_grad()), self._guard("LatentModel.decode"):
            return self._batched(z, chunk_size, self._decode_items)

    def _encode_items(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x.transpose(1, 2) if self.temporal else x)  # diffusers' video layout (N, 3, F, H, W)
        out = self.vae.encode(x)
        raw = out.latent_dist.mode() if self.spec.raw_latent == "mode" else getattr(out, self.spec.raw_latent)
        z = self.convention.normalize(raw)
        return z.transpose(1, 2) if self.temporal else z

    def _decode_items(self, z: torch.Tensor) -> torch.Tensor:
        raw = self.convention.denormalize(self._prepare(z.transpose(1, 2) if self.temporal else z))
        kwargs = {}
        if getattr(self.vae.config, "timestep_conditioning", False):  # LTX: decode at timestep 0, no added noise
            kwargs["temb"] = torch.zeros(len(raw), device=raw.device, dtype=raw.dtype)
        if any(getattr(self.vae.config, "decoder_inject_noise", ()) or ()):  # LTX: same decoder noise every call
            devices = [raw.device] if raw.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(0)
                x = self.vae.decode(raw, **kwargs).sample
        else:
            x = self.vae.decode(raw, **kwargs).sample
        return x.transpose(1, 2) if self.temporal else x

    def _batched(self, t: torch.Tensor, chunk_size: int | None, fn) -> torch.Tensor:
        lead = t.shape[:1] if self.temporal else t.shape[:-3]
        flat = t if self.temporal else t.reshape(-1, *t.shape[-3:])
        chunk_size = chunk_size if chunk_size is not None else self.chunk_size
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size (or model.chunk_size) must be a positive integer or None (everything in "
                             f"one call), got {chunk_size!r}.")
        chunks = flat.split(chunk_size) if chunk_size else (flat,)
        out = torch.cat([fn(c) for c in chunks]) if len(chunks) > 1 else fn(flat)
        return out if self.temporal else out.reshape(*lead, *out.shape[1:])


def load_model(source, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               upcast: bool = False, variant: str | None = None) -> LatentModel:
    """A `LatentModel` from a bundled miniature (``"tiny"`` = ``"tiny-v2"``, ``"tiny-v1"``), a preset
    (``"sd21"``, ``"sd15"``, ``"sd14"``), a hub id, a local ``save_pretrained`` folder, a diffusers autoencoder
    instance, or original TAESD-family checkpoints (`decinv.core.taesd`): a folder holding ``<variant>_encoder.pth`` and
    ``<variant>_decoder.pth`` (e.g. ComfyUI's ``models/vae_approx``), one of the two files, or an (encoder, decoder)
    pair of paths. ``variant`` (``"taesd"``, ``"taesdxl"``, ``"taesd3"``, ``"taef1"``, ``"taef2"``, ``"taesana"``)
    is inferred from the file names when not given; it applies to TAESD checkpoints only.

    Folders and hub repos are loaded by the class their ``config.json`` names in ``_class_name`` (the way
    ``diffusers.AutoModel`` resolves it); the supported classes are `decinv.core.autoencoders.SPECS`, anything else is an
    `UnsupportedAutoencoderError` naming the class. ``device`` None/"auto" picks CUDA when present. ``dtype`` None:
    float32 for weights read from files (whatever ``torch.set_default_dtype`` says), the module's own dtype for an
    instance. ``upcast=True``:
    honour ``force_upcast`` as diffusers pipelines do (``dtype=torch.float16`` leaves such a VAE in float32); by default
    the requested dtype is used and an overflowing E(x) raises `NonFiniteLatentError`.
    """
    import torch.nn as nn

    target_device = resolve_device(device)
    if isinstance(source, LatentModel):
        source.upcast = upcast or source.upcast
        return source.to(target_device, dtype)
    if variant is not None and not (isinstance(source, (str, os.PathLike, tuple, list))
                                    and str(source) not in BUNDLED and is_taesd_source(source, variant)):
        raise TypeError(f"variant={variant!r} applies to original TAESD checkpoints only (a folder of "
                        "<variant>_encoder.pth/<variant>_decoder.pth, one of them, or a pair); leave it out for "
                        f"{source!r}.")
    if isinstance(source, nn.Module):
        vae, name = source, "custom"
    elif isinstance(source, (tuple, list)) and len(source) == 2:
        vae, name = load_taesd(source, variant), f"{Path(source[0]).parent}"
    elif not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_model expects a name, path, (encoder, decoder) pair of TAESD checkpoints or "
                        f"diffusers autoencoder ({', '.join(SPECS)}), got {type(source).__name__}.")
    elif str(source) not in BUNDLED and is_taesd_source(source, variant):
        vae, name = load_taesd(source, variant), str(source)
    else:
        vae, name = _load_vae(str(source)), str(source)
    if dtype is None and not isinstance(source, nn.Module):  # files: float32, not torch's default dtype of the moment
        dtype = torch.float32
    return LatentModel(vae, name=name, upcast=upcast).to(target_device, dtype)


def _autoencoder_class(config: dict, where):
    """The diffusers class named by a config's ``_class_name``, if decinv supports it."""
    import diffusers

    name = config.get("_class_name")
    if not name:
        raise UnsupportedAutoencoderError(f"{where}: config.json has no _class_name, so the autoencoder's class is "
                                          f"unknown; re-save it with save_pretrained (supported: {', '.join(SPECS)}).")
    spec_for(name)
    if not hasattr(diffusers, name):  # "TAESD": decinv's own class, loaded from the original .pth files
        raise UnsupportedAutoencoderError(f"{where}: config.json names {name}, which is not a diffusers class; "
                                          "pass the folder holding the original <variant>_encoder.pth and "
                                          "<variant>_decoder.pth instead.")
    return getattr(diffusers, name)


def _load_folder(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    return _autoencoder_class(config, folder).from_pretrained(folder, local_files_only=True)


def _load_vae(source: str):
    if source in BUNDLED:
        folder = tiny_dir(source)
        if not (folder / "vae" / "config.json").exists():
            raise ModelNotAvailableError(
                f"The bundled model {source!r} is not installed (expected {folder / 'vae'}). Train it with "
                f"`python -m decinv.tiny.train all --recipe {BUNDLED[source]}`, or reinstall decinv from a full checkout."
            )
        return _load_folder(folder / "vae")
    path = Path(source).expanduser()
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").exists() else path
        if not (folder / "config.json").exists():
            raise ModelNotAvailableError(
                f"{path} is a folder but holds no autoencoder (no config.json there or in {path / 'vae'}, and no "
                "TAESD checkpoint <variant>_encoder.pth). Point to a folder written by the autoencoder's "
                "save_pretrained or a pipeline's save_pretrained, or to TAESD's original .pth files."
            )
        return _load_folder(folder)
    repo, subfolder = PRESETS.get(source, (source, None))
    return _from_hub(repo, subfolder, preset=source if source in PRESETS else None)


def _from_hub(repo: str, subfolder: str | None, preset: str | None):
    """Try the repo's ``vae`` subfolder (pipelines), then its root (bare VAE repos); one clear error if neither.
    The class is the one the repo's config names (``ConfigMixin.load_config`` reads it without loading weights)."""
    from diffusers import AutoencoderKL

    label = f"{preset!r} ({repo})" if preset else repo
    attempts = [subfolder] if subfolder else ["vae", None]
    errors = []
    for sub in attempts:
        try:
            config = AutoencoderKL.load_config(repo, subfolder=sub, local_files_only=hub_offline())
            return _autoencoder_class(config, repo).from_pretrained(repo, subfolder=sub, local_files_only=hub_offline())
        except (OSError, ValueError) as error:  # hub misses surface as OSError subclasses in diffusers
            if isinstance(error, UnsupportedAutoencoderError):
                raise
            errors.append(f"{repo}{'/' + sub if sub else ''}: {str(error).splitlines()[0]}")
    how = (
        "The hub is set offline (HF_HUB_OFFLINE=1) and the weights are not in the local cache. "
        if hub_offline() else "It could not be downloaded (no network, a typo, or a gated repo needing `hf auth login`). "
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
    """VAE + unconditional ``UNet2DModel`` + ``DDIMScheduler`` of a bundled miniature (``"tiny"`` = ``"tiny-v2"``,
    the default; ``"tiny-v1"``), or of a candidate written by the training script to a folder, offline."""
    from diffusers import DDIMScheduler, UNet2DModel

    if str(source) in BUNDLED:
        folder = tiny_dir(str(source))
        vae = load_model(str(source), device=device, dtype=dtype)
    elif Path(source).is_dir() and (Path(source) / "vae" / "config.json").exists():
        folder = Path(source)  # a candidate miniature written by decinv.tiny.train (--out)
        vae = load_model(str(folder / "vae"), device=device, dtype=dtype)
    else:
        raise ValueError(f"load_pipeline knows the bundled models ({', '.join(BUNDLED)}) and folders written by "
                         f"`python -m decinv.tiny.train ... --out DIR` (DIR/vae, DIR/unet, DIR/scheduler), not "
                         f"{source!r}; for other models load the autoencoder with load_model.")
    if not (folder / "unet" / "config.json").exists():
        raise ModelNotAvailableError(f"The bundled model's UNet is not installed (expected {folder / 'unet'}); "
                                     f"train it with `python -m decinv.tiny.train all --recipe {BUNDLED[source]}`.")
    unet = UNet2DModel.from_pretrained(folder / "unet", local_files_only=True, torch_dtype=vae.dtype)
    unet = unet.to(vae.device).eval().requires_grad_(False)
    scheduler = DDIMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    return TinyPipeline(vae=vae, unet=unet, scheduler=scheduler)
