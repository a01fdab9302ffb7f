"""Training and held-out images for the bundled tiny model: only pictures that ship inside scikit-image.

Every image here loads offline from the scikit-image wheel. Crops are 64x64 RGB in [-1, 1], taken from the image
downscaled by a random factor (so a crop sees anything from fine texture to a whole object) and randomly flipped.
Two images are held out entirely and never seen in training; `heldout_crops` draws a fixed, seeded set from them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TRAIN_IMAGES = (
    "astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
    "colorwheel", "stereo_motorcycle", "logo", "brick", "cell", "clock", "coins", "grass", "gravel",
    "moon", "page", "text", "microaneurysms", "shepp_logan_phantom",
)
HELDOUT_IMAGES = ("chelsea", "camera")
SCALES = (1.0, 0.7, 0.5, 0.35, 0.25)
CROP = 64


def load_image(name: str) -> torch.Tensor:
    """One scikit-image picture as a float tensor (3, H, W) in [-1, 1]; grey becomes RGB, alpha is dropped."""
    from skimage import data

    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    return torch.from_numpy(image).permute(2, 0, 1).contiguous() * 2 - 1


def pyramid(names: tuple[str, ...]) -> list[torch.Tensor]:
    """Every image at every scale in SCALES that is still at least one 64-pixel crop wide (`random_crops` skips
    the levels too small for a larger crop)."""
    levels = []
    for name in names:
        image = load_image(name)
        for scale in SCALES:
            h, w = (round(s * scale) for s in image.shape[1:])
            if min(h, w) < CROP:
                continue
            levels.append(F.interpolate(image[None], size=(h, w), mode="area")[0] if scale < 1 else image)
    return levels


def random_crops(levels: list[torch.Tensor], n: int, generator: torch.Generator, height: int = CROP,
                 width: int = CROP, distinct: bool = False) -> torch.Tensor:
    """n random height x width crops (default 64x64) with random horizontal flips, shape (n, 3, height, width).
    Levels smaller than the crop are skipped.

    ``distinct``: never return the same window twice (same level and position, flipped or not); a repeat is
    skipped and another crop drawn. A level exactly the crop's size has one window (v2's 128x128 camera), so
    without this a fixed measurement set can count one picture several times: ``heldout_crops(8, seed=77,
    size=128)`` held 6 distinct crops, one of them three times. Draws that repeat nothing are unchanged, so v1's
    held-out sets are the same crops either way. Raises ValueError when the levels have fewer than n windows."""
    levels = [level for level in levels if level.shape[1] >= height and level.shape[2] >= width]
    if distinct:
        windows = sum((level.shape[1] - height + 1) * (level.shape[2] - width + 1) for level in levels)
        if windows < n:
            raise ValueError(f"only {windows} distinct {height}x{width} crops exist in these levels, {n} asked; "
                             "ask for fewer or pass distinct=False.")
    crops, seen = [], set()
    while len(crops) < n:
        for k in torch.randint(len(levels), (n - len(crops),), generator=generator).tolist():
            level = levels[k]
            top = torch.randint(level.shape[1] - height + 1, (1,), generator=generator).item()
            left = torch.randint(level.shape[2] - width + 1, (1,), generator=generator).item()
            crop = level[:, top : top + height, left : left + width]
            if torch.rand((), generator=generator) < 0.5:
                crop = crop.flip(-1)
            if distinct:
                if (k, top, left) in seen:
                    continue
                seen.add((k, top, left))
            crops.append(crop)
    return torch.stack(crops)


def train_crops(n: int, seed: int = 0, size: int = CROP) -> torch.Tensor:
    """n size x size crops from the training images (seeded); v1 trains on 64x64, v2 on 128x128."""
    return random_crops(pyramid(TRAIN_IMAGES), n, torch.Generator().manual_seed(seed), size, size)


def heldout_crops(n: int = 64, seed: int = 1234, size: int = CROP) -> torch.Tensor:
    """A fixed set of n distinct size x size crops from the two held-out images (never used in training)."""
    return random_crops(pyramid(HELDOUT_IMAGES), n, torch.Generator().manual_seed(seed), size, size, distinct=True)
