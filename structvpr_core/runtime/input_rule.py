"""The one place that decides the network's input size for an image (no torch import).

The eval, benchmark, build-map and replay commands and the node all size images through their
encoder's ``InputRule``; a checkpoint records its rule (``ModelConfig.input_pixels``) and a map
its model's (``ModelIdentity``), so a map and the node that queries it size images alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from structvpr_core.config import ConfigError

# Every trunk here halves the resolution 5 times: sides that are multiples of 32 keep every
# feature map whole (no rounding of odd maps, no padding difference between runtimes).
NETWORK_STRIDE = 32
# The largest pixel budget accepted: 4x a 1920x1080 frame, beyond any camera this runs on.
MAX_INPUT_PIXELS = 4 * 1920 * 1080


@dataclass(frozen=True)
class InputRule:
    """How an image of any size becomes the network's input size (W, H).

    ``size``: a fixed W x H, every image squeezed to it (checkpoints without a pixel budget, and
    an operator's forced ``input_width/height`` / ``--resize``). ``pixels``: a pixel budget, the
    image resized to W x H ~ ``pixels`` at its own aspect ratio, each side the nearest multiple of
    ``NETWORK_STRIDE`` (at least one stride; see ``size_for``). At 76800 px: 4:3 (640x480) ->
    320x256, 16:9 -> 352x224, 2:1 -> 384x192. Exactly one of the two is set.

    ``second_pixels`` (with ``pixels``): multi-scale, the descriptor is the L2-normalised sum of the
    network's descriptors at both budgets (``scales``); the network runs twice per image.
    """

    size: tuple[int, int] | None = None
    pixels: int = 0
    second_pixels: int = 0

    def __post_init__(self):
        if (self.size is None) == (not self.pixels):
            raise ConfigError(f"an input rule is either a fixed size or a pixel budget, got size {self.size}, "
                              f"pixels {self.pixels}")
        if self.size is not None:
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
            if min(self.size) < NETWORK_STRIDE or max(self.size) * min(self.size) > MAX_INPUT_PIXELS:
                raise ConfigError(f"input size {self.size[0]}x{self.size[1]}: each side must be >= {NETWORK_STRIDE} "
                                  f"(the network downsamples by {NETWORK_STRIDE}) and W x H <= {MAX_INPUT_PIXELS}")
        for budget in (self.pixels, self.second_pixels) if self.size is None else ():
            if budget and not NETWORK_STRIDE ** 2 <= budget <= MAX_INPUT_PIXELS:
                raise ConfigError(f"input pixel budget must be in {NETWORK_STRIDE ** 2}..{MAX_INPUT_PIXELS}, "
                                  f"got {budget}")
        if self.second_pixels and (self.size is not None or self.second_pixels == self.pixels):
            raise ConfigError(f"a second (multi-scale) pixel budget needs a first, different one: got pixels "
                              f"{self.pixels}, second_pixels {self.second_pixels}")

    @property
    def scales(self) -> tuple["InputRule", ...]:
        """The single-scale rules whose descriptors make this rule's descriptor (one, or two)."""
        if not self.second_pixels:
            return (self,)
        return InputRule(pixels=self.pixels), InputRule(pixels=self.second_pixels)

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """(W, H) the network is fed for an image ``width`` x ``height`` (multi-scale: at ``pixels``).

        A budget: of the stride grids around the ideal sqrt(pixels * aspect) x sqrt(pixels / aspect)
        (each side rounded down or up), the one closest in aspect and pixel count together
        (|log aspect error| + |log pixel error|), so neither drifts by more than about a cell.
        """
        if self.size is not None:
            return self.size
        if self.second_pixels:
            return InputRule(pixels=self.pixels).size_for(width, height)
        aspect, cells = width / height, self.pixels / NETWORK_STRIDE ** 2
        ideal_w, ideal_h = math.sqrt(cells * aspect), math.sqrt(cells / aspect)
        candidates = [(w, h) for w in {max(1, math.floor(ideal_w)), math.ceil(ideal_w)}
                      for h in {max(1, math.floor(ideal_h)), math.ceil(ideal_h)}]
        w, h = min(sorted(candidates), key=lambda c: abs(math.log(c[0] / c[1] / aspect)) + abs(math.log(c[0] * c[1] / cells)))
        return w * NETWORK_STRIDE, h * NETWORK_STRIDE

    def shrink_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest size at the image's own aspect that still covers ``size_for``: what a decoder
        may shrink an image to before the encoder sizes it (a fixed size: that size, as before)."""
        if self.size is not None:
            return self.size
        target = max((r.size_for(width, height) for r in self.scales), key=lambda wh: wh[0] * wh[1])
        scale = min(1.0, max(target[0] / width, target[1] / height))
        return min(width, math.ceil(width * scale)), min(height, math.ceil(height * scale))

    def describe(self) -> str:
        if self.size is not None:
            return f"{self.size[0]}x{self.size[1]}"
        if self.second_pixels:
            return f"~{self.pixels} + ~{self.second_pixels} px multi-scale at the image's aspect (sides x{NETWORK_STRIDE})"
        return f"~{self.pixels} px at the image's aspect (sides x{NETWORK_STRIDE})"
