"""The TAESD family of tiny autoencoders, loaded from their original checkpoints.

TAESD (Ollin Boer Bohan, MIT licence, github.com/madebyollin/taesd) distils a latent diffusion model's autoencoder
into two small convolutional networks with the same latent space: ``<name>_encoder.pth`` and ``<name>_decoder.pth``,
each a ``torch.save``d state dict of an ``nn.Sequential`` (keys like ``3.conv.0.weight``; float16 tensors). ComfyUI
(``models/vae_approx``) and A1111 read exactly these files. Diffusers-format copies of four variants exist as well;
those are ``AutoencoderTiny`` folders and load through diffusers (`decinv.core.models.load_model` does both).

This module is decinv's own description of the published architecture (written from the repository's README and the
checkpoints' key layout, verified on the real TAEF2 pair by ``tests/test_taesd.py``):

* **Residual block** (64 channels unless stated): three 3×3 convolutions with ReLU between them, added to the block's
  input, then a ReLU: ``relu(conv(relu(conv(relu(conv(h))))) + h)``. In TAEF2 (FLUX.2) some blocks first add a
  *normalisation branch* with statistics over the whole image: ``h ← h + conv1×1(relu(GroupNorm₄(conv1×1(h))))``
  (64 → 256 → 64 channels, 4 groups, no biases on the 1×1 convolutions).
* **Encoder, ×8** (taesd, taesdxl, taesd3, taef1, taef2): conv 3→64, one block; then three stages of
  [stride-2 conv (no bias), three blocks]; conv 64→C. TAEF2's normalisation branch sits in the last stage's blocks.
* **Decoder, ×8**: the soft clamp ``3·tanh(z/3)``, conv C→64, ReLU; three stages of [three blocks, nearest 2×
  upsampling, conv (no bias)]; one block; conv 64→3. TAEF2's normalisation branch sits in the first stage's blocks.
* **Sana's ×32 variant** (taesana): the encoder starts with two stride-2 convolutions (3→32→64, each followed by a
  ReLU), then one block and three stages as above; the decoder runs stages of widths 256, 128, 64, 64, 64, each
  [three blocks, 2× upsampling, conv to the next width], then one block and conv 64→3.

Images are in [0, 1] for TAESD; `TAESD.encode`/`TAESD.decode` take and give decinv's [-1, 1] like diffusers'
``AutoencoderTiny``. **Latents are the full autoencoder's raw latents** (TAESD's "scale factor" is 1), not the
normalised latents the diffusion model works with; `PIPELINE_LATENTS` says, per variant, what the model's own pipeline
applies, and `pipeline_convention` returns that map where the numbers are public config values.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from decinv.core.autoencoders import LatentConvention


class TAESDCheckpointError(ValueError):
    """A TAESD checkpoint is missing, ambiguous, or does not match the variant's published layout."""


@dataclass(frozen=True)
class Variant:
    """One published TAESD variant: ``latent_channels`` C, spatial ``downsample`` f, whether some blocks carry the
    FLUX.2 normalisation branch, the model whose latent space it shares, and that pipeline's latent map."""

    name: str
    latent_channels: int
    downsample: int
    norm_branch: bool
    model: str
    pipeline_latents: str


VARIANTS = {v.name: v for v in (
    Variant("taesd", 4, 8, False, "Stable Diffusion 1.x / 2.x", "raw * 0.18215"),
    Variant("taesdxl", 4, 8, False, "Stable Diffusion XL", "raw * 0.13025"),
    Variant("taesd3", 16, 8, False, "Stable Diffusion 3", "(raw - 0.0609) * 1.5305"),
    Variant("taef1", 16, 8, False, "FLUX.1", "(raw - 0.1159) * 0.3611"),
    Variant("taef2", 32, 8, True, "FLUX.2",
            "patchify 2x2, then (. - bn.running_mean) / sqrt(bn.running_var + eps) with the statistics of FLUX.2's "
            "own AutoencoderKLFlux2 (not part of TAEF2's checkpoint)"),
    Variant("taesana", 32, 32, False, "Sana (DC-AE f32c32)", "raw * 0.41407"),
)}
# The pipeline's normalisation per variant as (shift, scale): z = (raw - shift) * scale. Sources: the autoencoders'
# diffusers configs (scaling_factor / shift_factor) of runwayml SD 1.5 and stabilityai SD 2.1 (0.18215), SDXL
# (0.13025), SD3 (1.5305, 0.0609), FLUX.1 (0.3611, 0.1159) and mit-han-lab's dc-ae-f32c32-sana-1.0 (0.41407).
# FLUX.2's map needs batch-norm statistics stored in its full autoencoder, so it has no entry here.
PIPELINE_LATENTS = {"taesd": (0.0, 0.18215), "taesdxl": (0.0, 0.13025), "taesd3": (0.0609, 1.5305),
                    "taef1": (0.1159, 0.3611), "taesana": (0.0, 0.41407)}


class SoftClamp(nn.Module):
    """3·tanh(z/3): the decoder's input clamp. Near-identity for |z| << 3, flat (zero gradient) for |z| >> 3."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 3 * torch.tanh(z / 3)


class ResidualBlock(nn.Module):
    """relu(conv(relu(conv(relu(conv(h))))) + h), optionally after h ← h + (the FLUX.2 normalisation branch)(h).

    Attribute names (``conv``, ``pool``) and the indices inside them are the checkpoint's keys."""

    def __init__(self, channels: int, norm_branch: bool = False):
        super().__init__()
        c = channels
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1))
        self.pool = (nn.Sequential(nn.Conv2d(c, 4 * c, 1, bias=False), nn.GroupNorm(4, 4 * c), nn.ReLU(),
                                   nn.Conv2d(4 * c, c, 1, bias=False)) if norm_branch else None)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            h = h + self.pool(h)
        return F.relu(self.conv(h) + h)


def _conv(c_in: int, c_out: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


def build_encoder(variant: Variant) -> nn.Sequential:
    """The encoder as an ``nn.Sequential`` whose indices are the published checkpoint's keys."""
    c, norm = variant.latent_channels, variant.norm_branch
    if variant.downsample == 32:
        layers = [_conv(3, 32, stride=2), nn.ReLU(), _conv(32, 64, stride=2), nn.ReLU(), ResidualBlock(64)]
    else:
        layers = [_conv(3, 64), ResidualBlock(64)]
    for stage in range(3):
        last = stage == 2
        layers += [_conv(64, 64, stride=2, bias=False)] + [ResidualBlock(64, norm and last) for _ in range(3)]
    return nn.Sequential(*layers, _conv(64, c))


def build_decoder(variant: Variant) -> nn.Sequential:
    """The decoder as an ``nn.Sequential`` whose indices are the published checkpoint's keys."""
    c, norm = variant.latent_channels, variant.norm_branch
    widths = [256, 128, 64, 64, 64, 64] if variant.downsample == 32 else [64, 64, 64, 64]
    layers = [SoftClamp(), _conv(c, widths[0]), nn.ReLU()]
    for stage, (w, w_next) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [ResidualBlock(w, norm and stage == 0) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(w, w_next, bias=False)]
    return nn.Sequential(*layers, ResidualBlock(widths[-1]), _conv(widths[-1], 3))


@dataclass(frozen=True)
class TAESDConfig:
    """What `decinv.LatentModel` reads from an autoencoder's config, plus the checkpoints' provenance.

    ``scaling_factor`` 1 and ``shift_factor`` 0: decinv's latents for TAESD are its raw latents."""

    variant: str
    latent_channels: int
    downsample: int
    model: str = ""
    pipeline_latents: str = ""
    encoder_file: str = ""
    decoder_file: str = ""
    encoder_sha256: str = ""
    decoder_sha256: str = ""
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    force_upcast: bool = False


@dataclass
class EncoderOutput:
    latents: torch.Tensor


@dataclass
class DecoderOutput:
    sample: torch.Tensor


class TAESD(nn.Module):
    """A TAESD-family autoencoder with diffusers' ``AutoencoderTiny`` calling convention.

    ``encode(x)``: x (N, 3, H, W) in [-1, 1], H and W multiples of f (8, or 32 for taesana) ->
    ``.latents`` (N, C, H/f, W/f), the raw latent. ``decode(z)`` -> ``.sample`` (N, 3, H, W) in about [-1, 1],
    unclamped (TAESD's decoder is trained towards [0, 1]; only its input is soft-clamped)."""

    def __init__(self, variant: str | Variant, *, encoder_file: str = "", decoder_file: str = "",
                 encoder_sha256: str = "", decoder_sha256: str = ""):
        super().__init__()
        variant = VARIANTS[variant] if isinstance(variant, str) else variant
        self.variant = variant
        self.encoder, self.decoder = build_encoder(variant), build_decoder(variant)
        self.config = TAESDConfig(variant.name, variant.latent_channels, variant.downsample, variant.model,
                                  variant.pipeline_latents, encoder_file,
                                  decoder_file, encoder_sha256, decoder_sha256)

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(self.encoder((x + 1) / 2))

    def decode(self, z: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(self.decoder(z) * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x).latents).sample


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


SUFFIXES = (".pth", ".safetensors")


def _read_state_dict(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, and what was expected
        raise TAESDCheckpointError(f"{path} could not be read as a TAESD checkpoint ({type(error).__name__}: "
                                   f"{str(error).splitlines()[0] if str(error) else ''}). Expected a state dict saved "
                                   "with torch.save (.pth) or safetensors, as published in madebyollin/taesd.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TAESDCheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors; TAESD's "
                                   "published checkpoints are the state dict of an nn.Sequential.")
    return state


def _layout(module: nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _mismatch(expected: dict, found: dict) -> str:
    missing = sorted(set(expected) - set(found), key=_natural)
    extra = sorted(set(found) - set(expected), key=_natural)
    shapes = [f"{k} is {found[k]}, expected {expected[k]}" for k in sorted(set(expected) & set(found), key=_natural)
              if found[k] != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (first: {', '.join(missing[:3])})")
    if extra:
        parts.append(f"{len(extra)} unexpected key(s) (first: {', '.join(extra[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) (first: {'; '.join(shapes[:2])})")
    return ", ".join(parts)


def _natural(key: str):
    return [int(p) if p.isdigit() else p for p in key.split(".")]


def _matching_variants(part: str, found: dict) -> list[str]:
    build = build_encoder if part == "encoder" else build_decoder
    return [name for name, v in VARIANTS.items() if _layout(build(v)) == found]


def _load_part(module: nn.Module, path: Path, part: str, variant: Variant) -> None:
    state = _read_state_dict(path)
    found = {k: tuple(v.shape) for k, v in state.items()}
    expected = _layout(module)
    if found != expected:
        fits = _matching_variants(part, found)
        other_part = "decoder" if part == "encoder" else "encoder"
        swapped = _matching_variants(other_part, found)
        if fits:
            other = ("It has the layout of " + " / ".join(repr(f) for f in fits) + ": pass variant="
                     f"{fits[0]!r} if that is what it is.")
        elif swapped:
            other = (f"It is a {other_part} (the layout of {' / '.join(map(repr, swapped))}'s {other_part}): the "
                     "encoder and decoder files look swapped.")
        else:
            other = "It matches no published variant's encoder or decoder: is it another model's file?"
        raise TAESDCheckpointError(
            f"{path.name} does not match the {part} of TAESD variant {variant.name!r} ({variant.model}: "
            f"{variant.latent_channels} latent channels, x{variant.downsample}"
            f"{', FLUX.2 normalisation branch' if variant.norm_branch else ''}): {_mismatch(expected, found)}. {other}")
    module.load_state_dict({k: v.float() for k, v in state.items()})


def variant_of(path: str | os.PathLike) -> str | None:
    """The variant a checkpoint's file name names (``taef2_encoder.pth`` -> ``"taef2"``), or None."""
    stem = Path(path).name
    for suffix in SUFFIXES:
        stem = stem.removesuffix(suffix)
    for part in ("_encoder", "_decoder"):
        if stem.endswith(part) and stem.removesuffix(part) in VARIANTS:
            return stem.removesuffix(part)
    return None


def find_pair(folder: str | os.PathLike, variant: str | None = None) -> tuple[Path, Path]:
    """(encoder, decoder) checkpoint paths of ``variant`` in ``folder`` (e.g. ComfyUI's ``models/vae_approx``).

    Without ``variant`` the folder must hold exactly one variant's pair; several pairs are ambiguous (the error lists
    them)."""
    folder = Path(folder).expanduser()
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and variant_of(p)) if folder.is_dir() else []
    pairs = {}
    for p in files:
        pairs.setdefault(variant_of(p), {}).setdefault("encoder" if p.stem.endswith("_encoder") else "decoder", p)
    if variant is not None:
        _check_variant(variant)
        found = pairs.get(variant, {})
        if not found:
            here = sorted(p.name for p in folder.iterdir() if p.suffix in SUFFIXES) if folder.is_dir() else []
            hint = (f"It holds the pair(s) of {', '.join(map(repr, pairs))}: pass that variant or leave variant out."
                    if pairs else "Files named otherwise load as a pair: load_model((encoder_path, decoder_path), "
                    f"variant={variant!r}).")
            raise TAESDCheckpointError(
                f"{folder} has no {variant}_encoder.pth or {variant}_decoder.pth (checkpoint files there: "
                f"{', '.join(here) or 'none'}). {hint}")
    elif len(pairs) == 1:
        variant, found = next(iter(pairs.items()))
    elif not pairs:
        raise TAESDCheckpointError(
            f"{folder} holds no TAESD checkpoint (files named <variant>_encoder.pth / <variant>_decoder.pth with "
            f"variant one of {', '.join(VARIANTS)}). Get them from github.com/madebyollin/taesd (the .pth files at "
            "the repository's root) or pass the two files' paths.")
    else:
        raise TAESDCheckpointError(f"{folder} holds checkpoints of several TAESD variants ({', '.join(pairs)}); "
                                   "choose one with variant=...")
    if set(found) != {"encoder", "decoder"}:
        (present, path), = found.items()
        missing = "decoder" if present == "encoder" else "encoder"
        raise TAESDCheckpointError(f"{folder} has {path.name} but no {variant}_{missing}{path.suffix} (TAESD needs "
                                   "both halves, from github.com/madebyollin/taesd).")
    return found["encoder"], found["decoder"]


def _check_variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        close = [v for v in VARIANTS if v == str(variant).lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TAESDCheckpointError(f"unknown TAESD variant {variant!r}{hint}; the published ones are "
                                   f"{', '.join(VARIANTS)}.")
    return VARIANTS[variant]


def load_taesd(source, variant: str | None = None) -> TAESD:
    """A `TAESD` from a folder holding a checkpoint pair, one of the two files (its partner is looked up beside it),
    or an (encoder, decoder) pair of paths. ``variant`` (one of `VARIANTS`) is inferred from the file names when not
    given; a file that does not match it raises `TAESDCheckpointError` naming the keys and shapes that differ."""
    if isinstance(source, (tuple, list)):
        if len(source) != 2:
            raise TAESDCheckpointError(f"pass (encoder_path, decoder_path), got {len(source)} paths.")
        encoder_path, decoder_path = (Path(p).expanduser() for p in source)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            encoder_path, decoder_path = find_pair(path, variant)
        else:
            name = variant or variant_of(path)
            if name is None or not path.stem.endswith(("_encoder", "_decoder")):
                raise TAESDCheckpointError(f"{path.name}: cannot tell which TAESD half or variant this is; pass the "
                                           "folder with variant=..., or (encoder_path, decoder_path).")
            prefix = path.stem.rsplit("_", 1)[0]
            encoder_path, decoder_path = (path.with_name(f"{prefix}_{part}{path.suffix}")
                                          for part in ("encoder", "decoder"))
    for p in (encoder_path, decoder_path):
        if not p.is_file():
            raise TAESDCheckpointError(f"{p} does not exist; TAESD needs both halves (<variant>_encoder.pth and "
                                       "<variant>_decoder.pth, from github.com/madebyollin/taesd).")
    if variant is None:
        names = {variant_of(encoder_path), variant_of(decoder_path)} - {None}
        if len(names) != 1:
            raise TAESDCheckpointError(
                f"cannot infer the TAESD variant from {encoder_path.name} and {decoder_path.name}"
                f"{' (they name different variants)' if len(names) > 1 else ''}; pass variant= one of "
                f"{', '.join(VARIANTS)}.")
        variant = names.pop()
    spec = _check_variant(variant)
    model = TAESD(spec, encoder_file=str(encoder_path), decoder_file=str(decoder_path),
                  encoder_sha256=sha256(encoder_path), decoder_sha256=sha256(decoder_path))
    _load_part(model.encoder, encoder_path, "encoder", spec)
    _load_part(model.decoder, decoder_path, "decoder", spec)
    return model.eval()


def is_taesd_source(source, variant: str | None = None) -> bool:
    """True for a path ending in .pth/.safetensors (present or not: a missing file is then a clear error, not a hub
    lookup), an (encoder, decoder) pair, or a folder without a diffusers ``config.json`` that holds
    ``<variant>_*.pth`` files, or any such folder when ``variant`` is given."""
    if isinstance(source, (tuple, list)):
        return True
    path = Path(source).expanduser()
    if path.suffix in SUFFIXES:
        return True
    if path.is_dir() and not (path / "config.json").exists() and not (path / "vae" / "config.json").exists():
        return variant is not None or any(variant_of(p) for p in path.iterdir() if p.suffix in SUFFIXES)
    return False


def pipeline_convention(variant: str):
    """The map from TAESD's raw latents to the pipeline's normalised latents, as a
    `decinv.core.autoencoders.LatentConvention` (``normalize(raw)``, ``denormalize(z)``). FLUX.2's needs its full
    autoencoder's batch-norm statistics: ``NotImplementedError`` (load that VAE and use
    ``decinv.core.autoencoders.latent_convention(vae)``)."""
    spec = _check_variant(variant)
    if variant not in PIPELINE_LATENTS:
        raise NotImplementedError(
            f"{variant}'s pipeline normalises with statistics that only {spec.model}'s full autoencoder holds "
            f"({spec.pipeline_latents}); load it (AutoencoderKLFlux2) and use decinv.core.autoencoders.latent_convention.")
    shift, scale = PIPELINE_LATENTS[variant]
    ones = torch.ones(spec.latent_channels)
    return LatentConvention("shift-scale", ones * shift, ones * scale, formula=spec.pipeline_latents)


def checkpoint_dir(env: str = "DECINV_TAESD_DIR") -> Path | None:
    """The folder named by ``$DECINV_TAESD_DIR`` (None when unset). Set but missing is an error, never a silent
    fallback to something else."""
    value = os.environ.get(env)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise TAESDCheckpointError(f"${env} is set to {value!r}, which is not a folder. Point it to the folder holding "
                                   "taef2_encoder.pth and taef2_decoder.pth, or unset it.")
    return path
