"""Input checks that run before any work, each naming the fix."""

from __future__ import annotations

import numbers
import warnings

import torch


class UnsupportedConfigError(ValueError):
    """A scheduler, pipeline or autoencoder setting that would make an inversion or a round trip silently wrong
    (clipping, thresholding, added noise, a timestep grid the inverse cannot follow, tiled encoding or decoding).
    The message names the setting and the value to use instead."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or "auto" -> CUDA if available else CPU; asking for CUDA without it is an error, not a fallback."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a device torch knows; use 'cpu', 'cuda', 'cuda:1', 'mps' or "
                         "'auto'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device={str(device)!r} was requested but this PyTorch build sees no CUDA GPU "
            f"(torch {torch.__version__}). Use device='cpu' or 'auto', or install a CUDA build of torch."
        )
    return device


def _check_tensor(t, what: str, channels: int, channel_name: str) -> None:
    if not isinstance(t, torch.Tensor):
        hint = " (torch.from_numpy(a) for a numpy array)" if type(t).__module__ == "numpy" else ""
        raise TypeError(f"{what} must be a torch.Tensor{hint}, got {type(t).__name__}.")
    if t.layout != torch.strided:
        raise ValueError(f"{what} must be a dense tensor, got layout {t.layout}; convert it with .to_dense().")
    if t.device.type == "meta":
        raise ValueError(f"{what} is on the meta device and holds no values; pass a tensor with data.")
    if t.dim() not in (4, 5):
        raise ValueError(f"{what} must have shape (B, {channel_name}, H, W) or (B, F, {channel_name}, H, W) "
                         f"for video; got {tuple(t.shape)}. Add a batch axis with x[None] for a single one.")
    if t.shape[-3] != channels:
        raise ValueError(f"{what} must have {channels} channels in dimension -3, got shape {tuple(t.shape)}.")
    if t.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(t.shape)}); pass at least one item.")
    if not t.is_floating_point():
        raise ValueError(f"{what} has dtype {t.dtype}; convert to float (images: x.float() / 127.5 - 1).")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or infinite values; clean the input first.")


class ImageRangeWarning(UserWarning):
    """Images that all lie in [0, 1]: probably not yet mapped to the autoencoder's [-1, 1] (see `check_images`)."""


def check_images(x, downsample: int = 1) -> None:
    """Images (B, 3, H, W) or video (B, F, 3, H, W), float, finite, in [-1, 1], sides divisible by the VAE's factor.

    Out-of-range values raise ValueError. Images in [0, 1] are in range but are almost always a missed conversion
    (torchvision's ``ToTensor`` and PIL/255 give [0, 1]; the autoencoders expect ``2 x - 1``): when every image of
    the batch has no value below 0 (no pixel darker than mid-grey in [-1, 1], rare for photographs), an
    `ImageRangeWarning` says so. Silence it for deliberately bright images with
    ``warnings.simplefilter("ignore", decinv.core.validation.ImageRangeWarning)``."""
    _check_tensor(x, "images", 3, "3")
    low, high = float(x.detach().min()), float(x.detach().max())
    if low < -1.001 or high > 1.001:
        hint = " They look like 0-255 pixel values: use x / 127.5 - 1." if high > 2 else ""
        raise ValueError(f"images must lie in [-1, 1], got values in [{low:.3g}, {high:.3g}].{hint}")
    if low >= 0 and high > 0:
        warnings.warn(f"every image lies in [0, 1] (values in [{low:.3g}, {high:.3g}]); decinv expects [-1, 1]. If "
                      "these are [0, 1] images, pass 2 * x - 1.", ImageRangeWarning, stacklevel=3)
    h, w = x.shape[-2:]
    if h % downsample or w % downsample:
        raise ValueError(f"image size {h}x{w} is not divisible by the autoencoder's downsampling factor "
                         f"{downsample}; crop or resize to a multiple of {downsample}.")


def check_latents(z, channels: int) -> None:
    """Latents (B, C, h, w) or (B, F, C, h, w), float and finite, with the model's channel count."""
    _check_tensor(z, "latents", channels, "C")


def check_frames(frames: int, temporal_compression: int, cls: str) -> None:
    """A temporal autoencoder with compression t encodes F = t·k + 1 frames into k + 1 latent frames (the first frame
    alone, then groups of t: e.g. Wan 2.1's ``AutoencoderKLWan._encode`` chunks 1, 4, 4, ...); other F would be cut."""
    t = temporal_compression
    if (frames - 1) % t:
        below, above = (frames - 1) // t * t + 1, ((frames - 1) // t + 1) * t + 1
        raise ValueError(f"{cls} compresses time by {t}: a video needs F = {t}k + 1 frames (1, {t + 1}, "
                         f"{2 * t + 1}, ...), got F = {frames}. Use {below} or {above} frames.")


MODEL_ATTRIBUTES = ("encode", "decode", "downsample", "device", "dtype")
"""What `invert` uses of a model: a `decinv.LatentModel` has them all (tests also pass small stand-ins)."""


def check_integer(value, name: str, low: int, *, none: bool = False):
    """``value`` as an int >= ``low`` (None allowed with ``none``), else a `ValueError` naming ``name``."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        what = "a positive" if low == 1 else "a non-negative"
        raise ValueError(f"{name} must be {what} integer{' or None' if none else ''}, got {value!r}.")
    return int(value)


def check_model(model) -> None:
    """A `TypeError` unless ``model`` has what decinv's solvers use (`MODEL_ATTRIBUTES`)."""
    missing = [a for a in MODEL_ATTRIBUTES if not hasattr(model, a)]
    if missing:
        hint = (" It looks like a diffusers autoencoder: wrap it with decinv.load_model(vae)."
                if hasattr(model, "config") and hasattr(model, "encode") else "")
        raise TypeError(f"model must be a decinv.LatentModel (decinv.load_model(...)), got {type(model).__name__} "
                        f"without {', '.join(missing)}.{hint}")
