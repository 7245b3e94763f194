"""RGB uint8 images -> the network's input tensor, in torch.

Resizing happens on uint8 pixels (OpenCV, 1/4 the bytes of float) before anything
else; normalisation is one fused multiply-subtract in torch on the small tensor, not
numpy float64 temporaries at full size (issue 9: ~10 ms at 640x480 before).
The tensor comes out channels_last (NHWC memory), the layout the CPU kernels want.

The input size itself comes from the encoder's ``runtime.input_rule.InputRule``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
@lru_cache(maxsize=8)
def _scale_shift(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / 255 - mean) / std == x * scale - shift, per channel."""
    scale = torch.tensor([1 / (255 * s) for s in std]).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(1, 3, 1, 1)
    return scale, shift


def resize_rgb(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` at ``size`` = (W, H): INTER_AREA to shrink (anti-aliased), linear to enlarge."""
    if (img.shape[1], img.shape[0]) == tuple(size):
        return img
    interp = cv2.INTER_AREA if img.shape[1] > size[0] else cv2.INTER_LINEAR
    return cv2.resize(img, tuple(size), interpolation=interp)


def to_input_tensor(images: Sequence[np.ndarray], size: tuple[int, int],
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """RGB uint8 images -> float32 (B, 3, H, W) tensor at ``size`` = (W, H), (x / 255 - mean) / std.

    ``mean`` / ``std`` are the trunk's (``RGBBranch.input_mean`` / ``input_std``; 0..1 units).
    """
    batch = np.empty((len(images), size[1], size[0], 3), np.uint8)
    for i, img in enumerate(images):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
        batch[i] = resize_rgb(img, size)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()  # NHWC memory = channels_last
    scale, shift = _scale_shift(tuple(mean), tuple(std))
    return x.mul_(scale).sub_(shift)
