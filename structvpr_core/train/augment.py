"""Training-time image augmentation for condition change: lighting, season tint, small viewpoint shift.

Operates on float RGB batches in 0..1, (B, 3, H, W), with an explicit torch Generator so
cached augmented views are reproducible. Each image draws its own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from structvpr_core.config import ConfigError

_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


@dataclass
class AugmentConfig:
    views: int = 2  # augmented copies per image (frozen-prefix cache); 0 = none
    brightness: float = 0.5  # gain drawn from [1 - b, 1 + b]: dusk, overexposure
    contrast: float = 0.4  # contrast about the image mean, [1 - c, 1 + c]
    saturation: float = 0.5  # blend towards grey, [1 - s, 1 + s]: snow, overcast, night sensors
    gamma: float = 0.5  # exponent exp(U(-g, g)): tone-curve differences between cameras
    tint: float = 0.08  # per-channel gain [1 - t, 1 + t]: white balance, season colour
    crop: float = 0.1  # random crop of up to this fraction of each side, resized back: viewpoint shift
    grey_p: float = 0.1  # probability of a greyscale image

    def __post_init__(self):
        if self.views < 0:
            raise ConfigError(f"augment.views must be >= 0, got {self.views}")
        for name in ("brightness", "contrast", "saturation", "tint", "crop", "grey_p"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 2.0:
            raise ConfigError(f"augment.gamma must be in [0, 2], got {self.gamma}")


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand((n, *shape), generator=gen)


def random_crop(x: torch.Tensor, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """Crop up to ``fraction`` of each side (independently per image) and resize back."""
    if fraction == 0:
        return x
    b, _, h, w = x.shape
    cut = _uniform(gen, b, 0.0, fraction, 4)  # left, right, top, bottom fractions
    out = torch.empty_like(x)
    for i in range(b):
        l, r, t, btm = cut[i].tolist()
        x0, x1 = int(l * w), w - int(r * w)
        y0, y1 = int(t * h), h - int(btm * h)
        out[i] = F.interpolate(x[i:i + 1, :, y0:y1, x0:x1], size=(h, w), mode="bilinear", align_corners=False)[0]
    return out


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Photometric + small geometric change of a (B, 3, H, W) float batch in 0..1."""
    b = x.shape[0]
    x = random_crop(x, cfg.crop, gen)
    x = x * _uniform(gen, b, 1 - cfg.brightness, 1 + cfg.brightness, 1, 1, 1)
    x = x * _uniform(gen, b, 1 - cfg.tint, 1 + cfg.tint, 3, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * _uniform(gen, b, 1 - cfg.contrast, 1 + cfg.contrast, 1, 1, 1) + mean
    grey = (x * _GREY).sum(dim=1, keepdim=True)
    x = grey + (x - grey) * _uniform(gen, b, 1 - cfg.saturation, 1 + cfg.saturation, 1, 1, 1)
    x = x.clamp(0.0, 1.0) ** torch.exp(_uniform(gen, b, -cfg.gamma, cfg.gamma, 1, 1, 1))
    to_grey = torch.rand(b, generator=gen) < cfg.grey_p
    if to_grey.any():
        x[to_grey] = (x[to_grey] * _GREY).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return x.clamp(0.0, 1.0)
