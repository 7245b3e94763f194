"""ESPNet semantic segmentation network (Mehta et al., ECCV 2018), decoder variant.

Written from the paper and the original train/Model.py, checked against the published weights
(github.com/sacmehta/ESPNet, ``pretrained/decoder``). Attribute names follow the
published state_dicts exactly so they load with ``strict=True``; that is why some
modules wrap a single conv (``...c1.conv.weight``) or a single BN+PReLU pair.

The two published p=2, q=8 weight files differ in one place, the input of the
last decoder conv: the Cityscapes file fuses the level-1 conv output (16 channels,
as in the repository's ``test/Model.py``), the CamVid file fuses the level-1 output
concatenated with the downsampled image after BN+PReLU (19 channels, as in
``train/Model.py``). ``load_espnet`` reads which one from the weight shapes.

Input: BGR image as float, ``(pixel - mean) / std / 255`` per channel with the
training set's statistics (see ``structvpr_core.segmentation.segment.LABEL_SETS``), sides multiples
of 8. Output: per-pixel class scores at input resolution; argmax over channels gives
the label map.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# Channels of the level-1 features: 16 conv outputs + the 3-channel downsampled image.
_LEVEL1_CONV = 16
_LEVEL1_CAT = 16 + 3


class Conv(nn.Module):
    """Bias-free conv with 'same' padding (a module of its own for the ``.conv`` name)."""

    def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        pad = (k - 1) // 2 * dilation
        self.conv = nn.Conv2d(n_in, n_out, k, stride=stride, padding=pad, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class BNPReLU(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(n, eps=1e-3)
        self.act = nn.PReLU(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class ConvBNPReLU(nn.Module):
    def __init__(self, n_in: int, n_out: int, k: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(n_in, n_out, k, stride=stride, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(n_out, eps=1e-3)
        self.act = nn.PReLU(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _SpatialPyramid(nn.Module):
    """Reduce with ``c1``, then five parallel dilated 3x3 convs (rates 1, 2, 4, 8, 16).

    The outputs of rates 2..16 are summed hierarchically before concatenation
    (the paper's fix for gridding artefacts). ``n_out`` is split as
    ``n_out - 4 * (n_out // 5)`` channels for rate 1 and ``n_out // 5`` for each other rate.
    """

    def __init__(self, n_in: int, n_out: int, reduce_k: int, reduce_stride: int):
        super().__init__()
        n = n_out // 5
        self.c1 = Conv(n_in, n, reduce_k, stride=reduce_stride)
        self.d1 = Conv(n, n_out - 4 * n, 3, dilation=1)
        self.d2 = Conv(n, n, 3, dilation=2)
        self.d4 = Conv(n, n, 3, dilation=4)
        self.d8 = Conv(n, n, 3, dilation=8)
        self.d16 = Conv(n, n, 3, dilation=16)

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.c1(x)
        sum2 = self.d2(reduced)
        sum4 = sum2 + self.d4(reduced)
        sum8 = sum4 + self.d8(reduced)
        sum16 = sum8 + self.d16(reduced)
        return torch.cat([self.d1(reduced), sum2, sum4, sum8, sum16], 1)


class ESPBlock(_SpatialPyramid):
    """ESP module: 1x1 reduce, dilated pyramid, optional identity residual, BN+PReLU."""

    def __init__(self, n_in: int, n_out: int, residual: bool = True):
        super().__init__(n_in, n_out, reduce_k=1, reduce_stride=1)
        self.bn = BNPReLU(n_out)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pyramid(x)
        return self.bn(x + y if self.residual else y)


class ESPDownsampler(_SpatialPyramid):
    """Strided ESP module (3x3 stride-2 reduce), halves the resolution."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__(n_in, n_out, reduce_k=3, reduce_stride=2)
        self.bn = nn.BatchNorm2d(n_out, eps=1e-3)
        self.act = nn.PReLU(n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pyramid(x)))


def _downsample_image(image: torch.Tensor, times: int) -> torch.Tensor:
    # Image pyramid fed to deeper levels ("input reinforcement" in the paper).
    for _ in range(times):
        image = F.avg_pool2d(image, 3, stride=2, padding=1)
    return image


class ESPNetEncoder(nn.Module):
    """ESPNet-C: three levels at 1/2, 1/4, 1/8 resolution and a 1x1 classifier."""

    def __init__(self, num_classes: int, p: int = 2, q: int = 8):
        super().__init__()
        self.level1 = ConvBNPReLU(3, 16, 3, stride=2)
        self.b1 = BNPReLU(_LEVEL1_CAT)
        self.level2_0 = ESPDownsampler(_LEVEL1_CAT, 64)
        self.level2 = nn.ModuleList([ESPBlock(64, 64) for _ in range(p)])
        self.b2 = BNPReLU(128 + 3)
        self.level3_0 = ESPDownsampler(128 + 3, 128)
        self.level3 = nn.ModuleList([ESPBlock(128, 128) for _ in range(q)])
        self.b3 = BNPReLU(256)
        self.classifier = Conv(256, num_classes, 1)


class ESPNet(nn.Module):
    """ESPNet-C encoder plus the light reduce-upsample-merge decoder.

    ``decoder_skip`` selects the level-1 features fused by the last decoder conv:
    ``"conv"`` (16 channels, Cityscapes weights) or ``"cat"`` (19 channels, CamVid weights).
    """

    def __init__(self, num_classes: int, p: int = 2, q: int = 8, decoder_skip: str = "cat"):
        super().__init__()
        if decoder_skip not in ("conv", "cat"):
            raise ValueError(f"decoder_skip must be 'conv' or 'cat', got {decoder_skip!r}")
        c = num_classes
        self.decoder_skip = decoder_skip
        self.encoder = ESPNetEncoder(c, p, q)
        self.level3_C = Conv(128 + 3, c, 1)
        self.br = nn.BatchNorm2d(c, eps=1e-3)
        skip = _LEVEL1_CONV if decoder_skip == "conv" else _LEVEL1_CAT
        self.conv = ConvBNPReLU(skip + c, c, 3)
        self.up_l3 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False))
        self.combine_l2_l3 = nn.Sequential(BNPReLU(2 * c), ESPBlock(2 * c, c, residual=False))
        self.up_l2 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False), BNPReLU(c))
        self.classifier = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"ESPNet input height and width must be multiples of 8, got {h}x{w}")
        enc = self.encoder
        # Level 1 (1/2 resolution).
        level1 = enc.level1(image)
        level1_cat = enc.b1(torch.cat([level1, _downsample_image(image, 1)], 1))
        # Level 2 (1/4).
        level2_0 = enc.level2_0(level1_cat)
        level2 = level2_0
        for block in enc.level2:
            level2 = block(level2)
        level2_cat = enc.b2(torch.cat([level2, level2_0, _downsample_image(image, 2)], 1))
        # Level 3 (1/8).
        level3_0 = enc.level3_0(level2_cat)
        level3 = level3_0
        for block in enc.level3:
            level3 = block(level3)
        level3_cat = enc.b3(torch.cat([level3_0, level3], 1))
        # Decoder: class scores at 1/8, upsample and merge with level 2, then level 1.
        scores3_up = self.up_l3(self.br(enc.classifier(level3_cat)))
        scores2 = self.level3_C(level2_cat)
        merged2_up = self.up_l2(self.combine_l2_l3(torch.cat([scores2, scores3_up], 1)))
        skip = level1 if self.decoder_skip == "conv" else level1_cat
        merged1 = self.conv(torch.cat([merged2_up, skip], 1))
        return self.classifier(merged1)


def load_espnet(path: str | Path) -> tuple[ESPNet, int]:
    """Build an ESPNet (p=2, q=8) matching the state_dict at ``path``; returns (eval model, num classes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ESPNet weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a non-checkpoint file
        raise ValueError(f"{path}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a plain state_dict (name -> tensor), got {type(state).__name__}")
    for key in ("classifier.weight", "conv.conv.weight"):
        if key not in state:
            raise ValueError(f"{path}: not an ESPNet decoder state_dict (missing '{key}')")
    num_classes = int(state["classifier.weight"].shape[0])
    skip_channels = int(state["conv.conv.weight"].shape[1]) - num_classes
    skips = {_LEVEL1_CONV: "conv", _LEVEL1_CAT: "cat"}
    if skip_channels not in skips:
        raise ValueError(
            f"{path}: 'conv.conv.weight' has {skip_channels + num_classes} input channels; "
            f"expected {num_classes} + {_LEVEL1_CONV} or {num_classes} + {_LEVEL1_CAT}"
        )
    model = ESPNet(num_classes, p=2, q=8, decoder_skip=skips[skip_channels])
    _check_shapes(model, state, path)
    model.load_state_dict(_flush_subnormals(state), strict=True)
    return model.eval(), num_classes


def _flush_subnormals(state: dict) -> dict:
    # The published weights hold ~1e4 subnormal floats (filters decayed to ~1e-40);
    # x86 CPUs compute with those 3-13x slower. Zeroed, no prediction changes (camvid_sample).
    tiny = torch.finfo(torch.float32).tiny
    return {k: v.masked_fill(v.abs() < tiny, 0.0) if v.is_floating_point() else v for k, v in state.items()}


def _check_shapes(model: nn.Module, state: dict, path: Path) -> None:
    # load_state_dict reports every problem in one long message; name the first one plainly.
    expected = model.state_dict()
    for key, tensor in state.items():
        if key not in expected:
            raise ValueError(f"{path}: unexpected key '{key}' (not ESPNet p=2, q=8)")
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{path}: shape mismatch for '{key}': file has {tuple(tensor.shape)}, "
                f"ESPNet p=2, q=8 expects {tuple(expected[key].shape)}"
            )
    # Legacy files have no BatchNorm 'num_batches_tracked'; BatchNorm fills it in itself.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{path}: missing key '{missing[0]}' ({len(missing)} missing in total)")
