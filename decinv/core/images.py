"""Image files in, tensors out: what `decinv invert` and the dataset job (`decinv.applications.jobs`) read, and what they refuse.

Every refusal is a `BadImageError` whose message names the file and the fix, so that a dataset job can record it
in its manifest and go on with the other files (the one-file command line turns it into an exit message instead).

Two steps, so that a job can plan its batches without decoding any pixels:

* `probe` opens only the file's header: its size and mode, and the (H, W) it will be inverted at.
* `load_image` decodes the pixels and returns them as a (1, 3, H, W) float32 tensor in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# PIL modes that hold more than 8 bits per pixel, with the value that maps to white. ``convert("RGB")`` would clip
# them to 255 (a 16-bit ramp 0..65535 would load as almost all white), so they are rescaled instead.
HIGH_BIT_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


class BadImageError(ValueError):
    """A file that cannot be inverted as an image: unreadable, too small, or with values outside its range."""


@dataclass(frozen=True)
class ImageInfo:
    """What `probe` read from a file's header: ``width``/``height`` in pixels and PIL's ``mode`` of the file, and
    ``shape`` = (H, W), the size the image is inverted at (after ``size`` and the crop to the downsampling factor)."""

    width: int
    height: int
    mode: str
    shape: tuple[int, int]


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (FileNotFoundError, IsADirectoryError):
        raise BadImageError(f"{path}: no such image file") from None
    except UnidentifiedImageError:
        raise BadImageError(f"{path}: not an image format PIL can read (try PNG or JPEG)") from None
    except Image.DecompressionBombError as error:
        raise BadImageError(f"{path}: {error} Raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted.") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL raises these for damaged headers
        raise BadImageError(f"{path}: damaged image header ({type(error).__name__}: {error})") from None


def _target_shape(width: int, height: int, size: int | None, multiple: int) -> tuple[int, int]:
    """(H, W) after the optional square resize to ``size`` and the centre crop to a multiple of ``multiple``."""
    if size:
        width = height = size
    return height - height % multiple, width - width % multiple


def probe(path: str | Path, size: int | None, multiple: int) -> ImageInfo:
    """Read only the header of ``path``; raise `BadImageError` if it is not an image or is too small to invert.

    ``size``: the square side the image will be resized to (None: its own size); ``multiple``: the autoencoder's
    downsampling factor, to which both sides are cropped. A damaged pixel stream passes here and fails in
    `load_image`."""
    path = Path(path)
    with _open(path) as image:
        info = ImageInfo(image.width, image.height, image.mode,
                         _target_shape(image.width, image.height, size, multiple))
    if 0 in info.shape:
        raise BadImageError(f"{path} is {info.width}x{info.height}, smaller than the autoencoder's downsampling "
                            f"factor {multiple}; use --size to enlarge it")
    return info


def load_image(path: str | Path, size: int | None, multiple: int) -> torch.Tensor:
    """Any image file PIL reads -> (1, 3, H, W) float32 in [-1, 1]; optionally resized so that its shorter side is
    ``size`` and centre-cropped square, then centre-cropped to a multiple of ``multiple`` (the autoencoder's
    downsampling factor).

    8-bit modes (palette, grey, RGB, RGBA, CMYK) are converted to RGB and mapped by x / 127.5 - 1. High-bit grey modes
    are rescaled by their full range: 16-bit (PIL's ``I;16*``, and ``I``, which PIL uses for 16-bit PNGs and must
    then hold values in 0..65535) by x / 65535, float ``F`` images must already lie in [0, 1]; the grey channel is
    repeated three times. (PIL opens 16-bit-per-channel RGB PNGs as 8-bit RGB itself.)

    Raises `BadImageError` for a missing, unreadable or truncated file, a high-bit image with values outside its
    range or not finite, and an image smaller than ``multiple``.
    """
    path = Path(path)
    with _open(path) as opened:
        try:
            opened.load()
        except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt pixel data
            raise BadImageError(f"{path}: damaged image data ({type(error).__name__}: {error}); re-export the "
                                "file") from None
        return _to_tensor(path, opened, size, multiple)


def _to_tensor(path: Path, image, size: int | None, multiple: int) -> torch.Tensor:
    """The decoded PIL ``image`` as `load_image` returns it (see there)."""
    from PIL import Image

    if image.mode in HIGH_BIT_MODES:
        white = HIGH_BIT_MODES[image.mode]
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise BadImageError(f"{path}: a mode-{image.mode} image with NaN or infinite values; clean it first")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > white:
            raise BadImageError(f"{path}: a mode-{image.mode} image with values in [{low:.6g}, {high:.6g}], outside "
                                f"0..{white:g}; save it as 8- or 16-bit PNG (or scale float images to [0, 1])")
        image = Image.fromarray((values / white).astype(np.float32), mode="F")  # grey in [0, 1]; PIL resizes F
    else:
        image = image.convert("RGB")  # palette, grey, RGBA and CMYK all become 8-bit RGB
    if size:
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
        left, top = (image.width - size) // 2, (image.height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    h, w = _target_shape(image.width, image.height, None, multiple)
    if w == 0 or h == 0:
        raise BadImageError(f"{path} is {image.width}x{image.height}, smaller than the autoencoder's downsampling "
                            f"factor {multiple}; use --size to enlarge it")
    left, top = (image.width - w) // 2, (image.height - h) // 2
    image = image.crop((left, top, left + w, top + h))
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 2 - 1  # LANCZOS may overshoot [0, 1] slightly
        return torch.from_numpy(grey)[None, None].repeat(1, 3, 1, 1).contiguous()
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()
