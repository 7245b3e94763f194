"""Featureless frames (lens cap, darkness, a uniform wall, sensor noise): refused before encoding.

Every network maps such a frame to *some* unit descriptor, and two of them are nearly
identical: the audit of issue 20 saw a black frame published as a loop closure to an earlier
black frame with score 1.000 (dark noise: 0.999). So the node, build-map and the offline
runners ask ``featureless_reason`` first, whatever the model.

The statistic, ``image_structure``: the grey image is averaged over a 16x8 grid of blocks
and the standard deviation of the block means is taken (grey levels, 0..255), after
removing what pixel noise contributes to it. Noise is independent pixel to pixel, so its
share of a block mean's variance is sigma^2 / (pixels per block), with sigma estimated
from the median absolute difference of horizontal neighbours (robust to edges). Black,
uniform and pure-noise frames then score ~0 at any resolution (640x480 or 64x32), a scene
scores the contrast of its layout.

Threshold, measured on every frame of ../shared/data (7594: nordland64 summer + winter
64x32, Gardens Point day/night, GRIEF, CamVid, Cityscapes; command in
benchmarks/fault_injection.py): the lowest real frame scores 1.70 (Nordland tunnel
frames: black with the broadcaster's logo), the next lowest scene ~15 (CamVid), Gardens
Point night >= 48. Synthetic bad frames score 0.0 (black, grey, white; dark noise
0..15 at 640x480 and 64x32; full-range noise) to 0.62 (noise 0..39 at 64x32).
``MIN_STRUCTURE`` = 1.0 sits between: 1.7x below the darkest real frame, 1.6x above the
noisiest bad one.
"""

from __future__ import annotations

import cv2
import numpy as np

GRID = (16, 8)  # blocks (width, height): the layout scale a place descriptor relies on
MIN_STRUCTURE = 1.0  # grey levels; see the module docstring for the measurements
_MAD_TO_SIGMA = 1.4826 / np.sqrt(2.0)  # median |a - b| of two N(0, s^2) pixels -> s


def image_structure(rgb: np.ndarray) -> float:
    """Contrast of the image's layout in grey levels, with the pixel-noise share removed (see module doc)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    grey = grey.astype(np.float32)
    h, w = grey.shape
    blocks = cv2.resize(grey, GRID, interpolation=cv2.INTER_AREA)
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(np.diff(grey, axis=1)))) if w > 1 else 0.0
    pixels_per_block = (h / GRID[1]) * (w / GRID[0])
    return float(np.sqrt(max(float(blocks.var()) - sigma * sigma / pixels_per_block, 0.0)))


def featureless_reason(rgb: np.ndarray, min_structure: float = MIN_STRUCTURE) -> str | None:
    """Why ``rgb`` (HxWx3 uint8) cannot be described as a place, or None when it can."""
    structure = image_structure(rgb)
    if structure >= min_structure:
        return None
    mean = float(rgb.mean())
    kind = "dark" if mean < 40 else "bright" if mean > 215 else "uniform"
    return (f"the {rgb.shape[1]}x{rgb.shape[0]} image is featureless ({kind}, mean grey {mean:.0f}, "
            f"structure {structure:.2f} < {min_structure:g} grey levels: lens cap, darkness, blank wall or noise)")
